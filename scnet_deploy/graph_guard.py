"""An artifact must be SCNet before it runs: the graph each runtime would load, read from the exact bytes that were
hashed, checked against the architecture its manifest records.

A manifest can be re-hashed by whoever edits an artifact, so its word is not enough: a graph could add a ``Loop``
of 10^12 trips (it runs forever) or an ``Expand`` to a few GB (the memory model, which trusts the manifest's
``arch``, would not see it). Each backend that can read its graph (``graph_facts`` in its runtime module: ONNX,
OpenVINO IR, ncnn param) gives the operators it holds and its tensors' sizes at a probe size; here they are held
to that backend's list of operators (``ALLOWED_OPS``: what SCNet's exports are made of, no control flow) and to
what the architecture needs at that size (``largest_tensor_bound``). A graph past either is refused in one line
before a runtime loads it.
"""

import math
from dataclasses import dataclass, field

from .door import ArtifactError, clean_text

PROBE = (64, 64)  # the LR size the graph's shapes are worked out at (within the engine's size range)
# SCNet's largest tensor is its x``scale`` tail (``num_feat`` maps at the output resolution); the slice/pad shift
# forms pad each map by one pixel a side: a margin for that, and a floor for tiny probes and constants
MARGIN = 1.5
SLACK_ELEMENTS = 2**20


@dataclass
class GraphFacts:
    """What a backend read from its graph: the operators (type -> count) and, at ``probe`` (an LR height, width),
    the element count of its largest tensor; ``unknown``: tensors whose shape could not be worked out."""

    ops: dict[str, int]
    probe: tuple[int, int]
    largest_elements: int
    unknown: list[str] = field(default_factory=list)


def largest_tensor_bound(arch: dict, height: int, width: int, batch: int = 1) -> int:
    """The most elements one tensor of the architecture ``arch`` takes at LR ``height`` x ``width``."""
    channels = max(arch.get("num_feat", 64), arch.get("num_in_ch", 3), arch.get("num_out_ch", 3))
    return int(MARGIN * batch * channels * arch["scale"] ** 2 * height * width) + SLACK_ELEMENTS


def probe_size(manifest: dict) -> tuple[int, int]:
    """``PROBE``, within the artifact's size range where it has one."""
    from .options import SizeRange

    if not manifest.get("size_range"):
        return PROBE
    r = SizeRange.from_dict(manifest["size_range"])
    return tuple(max(lo if r.min else 1, min(p, r.max[i] if r.max else p))
                 for i, (p, lo) in enumerate(zip(PROBE, r.min or (1, 1))))


def check_graph(facts: GraphFacts, allowed: frozenset[str], manifest: dict, what: str) -> None:
    """Refuse (``ArtifactError``, one line) a graph with an operator its backend's SCNet exports never hold, a
    tensor whose shape cannot be worked out, or one larger than the recorded architecture needs."""
    foreign = sorted(set(facts.ops) - allowed)
    if foreign:
        raise ArtifactError(f"{what}: its graph holds {[clean_text(op) for op in foreign][:5]}, operators no SCNet "
                            f"export has (control flow or shape-making ops); refusing to run it. Re-export it.")
    if facts.unknown:
        raise ArtifactError(f"{what}: the shapes of {len(facts.unknown)} tensor(s) of its graph (e.g. "
                            f"{clean_text(facts.unknown[0])[:60]!r}) cannot be worked out from its input, as an SCNet "
                            "graph's all can; refusing to run it. Re-export it.")
    h, w = facts.probe
    bound = largest_tensor_bound(manifest["arch"], h, w)
    if facts.largest_elements > bound:
        raise ArtifactError(f"{what}: at {h}x{w} its graph makes a tensor of {facts.largest_elements} elements "
                            f"({facts.largest_elements * 4 / 2**20:.0f} MB as float32), where the architecture its "
                            f"manifest records needs at most {bound}; the memory model would not hold for it, so it "
                            "is refused. Re-export it.")


GUARD_VERSION = 1  # part of every remembered verdict: a stricter check forgets the older ones


def guard(module, directory, manifest: dict, what: str) -> bool:
    """Check the graph in ``directory`` (the private copy a runtime will load) with the backend runtime ``module``'s
    own reader; False where the backend cannot read its graph (a compiled engine: TensorRT's plan, Core ML's
    package), which then runs on its hashes alone.

    A graph that passed is remembered in the user's cache by the sha256 of its files (verified against the copy
    before this runs), its architecture and the probe: the next run of the same bytes skips the reading (ONNX's
    import alone takes 0.7 s here, ml_dtypes' share of it)."""
    reader = getattr(module, "graph_facts", None)
    if reader is None:
        return False
    probe = probe_size(manifest)
    verdict = _verdict_path(manifest, probe)
    if verdict is not None and verdict.is_file():
        return True
    check_graph(reader(directory, manifest, probe), module.ALLOWED_OPS, manifest, what)
    if verdict is not None:
        try:
            verdict.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            verdict.write_text("passed\n")
        except OSError:  # a read-only home: checked again next time
            pass
    return True


def _verdict_path(manifest: dict, probe: tuple[int, int]):
    import hashlib
    import json
    import os
    from pathlib import Path

    root = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    try:
        key = json.dumps([GUARD_VERSION, manifest["backend"], manifest["files"], manifest["arch"], list(probe)],
                         sort_keys=True)
    except (KeyError, TypeError):
        return None
    return Path(root) / "scnet-deploy" / "graph-checks" / hashlib.sha256(key.encode()).hexdigest()


def elements(shape) -> int:
    return math.prod(int(d) for d in shape)
