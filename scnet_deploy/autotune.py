"""``--optimize latency``: build every candidate deploy form for one backend and precision, verify each (the
backend's own build does, before it returns), time each at the target size on this machine, keep the fastest.

Then, on the winner, exact tiling (halo >= the receptive radius) is timed at a few tile sizes: where running the
engine tile by tile is faster than the whole image (the HR tail is memory-bound on some CPUs), the tile is recorded
and every verb that opens the artifact runs it that way (``runtime.open_model``).

Candidate forms are named as in ``DeployOptions.name``: ``shift[+rewrite...]``.
"""

import shutil
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import ExportError, ScnetDeployError
from .options import CANDIDATE_FORMS
from .rewrites import DeployOptions

OPTIMIZE = ("none", "latency")


def parse_form(name: str) -> DeployOptions:
    return DeployOptions.from_name(name)


@dataclass(frozen=True)
class TuneOptions:
    optimize: str = "none"  # "latency": build and time the candidates
    candidates: tuple[str, ...] = CANDIDATE_FORMS
    size: tuple[int, int] | None = None  # LR (height, width) to time at; None: the export's --opt-size
    runs: int = 5  # timed runs per candidate, after 2 warm-up runs; the median decides
    tiles: tuple[int, ...] = (128, 256)  # LR tile sides tried on the winner; () tries none

    def check(self) -> None:
        if self.optimize not in OPTIMIZE:
            raise ExportError(f"--optimize {self.optimize!r} is unknown; choose one of {list(OPTIMIZE)}.")
        if not self.candidates:
            raise ExportError("--candidates is empty; name at least one form, e.g. dwconv.")
        for name in self.candidates:
            parse_form(name)
        if self.runs < 1 or any(t < 8 for t in self.tiles):
            raise ExportError("--tune-runs must be >= 1 and every tile >= 8 LR pixels.")


def median_ms(infer, x: np.ndarray, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        infer(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        infer(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def fastest(timings: dict, key: str = "median_ms"):
    """The name whose timing is lowest among those that were timed (None if none was)."""
    timed = {name: t[key] for name, t in timings.items() if t.get(key) is not None}
    return min(timed, key=timed.get) if timed else None


def _load(backend, directory: Path, fields: dict, precision: str):
    return backend.impl().load(directory, {"precision": precision, **fields})


def _time_artifact(backend, directory: Path, fields: dict, precision: str, x: np.ndarray, runs: int):
    """(median ms, None) or (None, reason) when this machine cannot run the artifact."""
    try:
        with _load(backend, directory, fields, precision) as runner:
            return median_ms(runner.infer, x, runs), None
    except ScnetDeployError as exc:  # TensorRT without a GPU, Core ML off macOS, ...
        return None, str(exc).splitlines()[0][:300]


def build_fastest(backend, options, spec, make_context, workdir: Path, scratch: Path, progress=None) -> dict:
    """Build ``backend`` once per candidate form (``make_context(form) -> ExportContext``), time each, move the
    fastest into ``workdir``; returns its manifest fields plus ``autotune`` (the record of every candidate).
    ``spec`` is the checkpoint's ArchSpec."""
    tune = options.tune
    size = tuple(tune.size or options.sizes.opt)
    x = np.random.default_rng(0).random((1, spec.num_in_ch, *size), dtype=np.float32)
    candidates, built = {}, {}
    for i, name in enumerate(tune.candidates):
        if progress:
            progress(f"autotune {backend.format} {options.precision}: building {name}")
        form = parse_form(name)
        cand_dir = scratch / f"{backend.format}-{i}"
        cand_dir.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            fields = backend.impl(building=True).build(make_context(form), cand_dir)
        except ScnetDeployError as exc:
            candidates[name] = {"error": str(exc).splitlines()[0][:300]}
            continue
        build_s = time.perf_counter() - t0
        if progress:
            progress(f"autotune {backend.format} {options.precision}: timing {name} at {size[0]}x{size[1]}")
        ms, reason = _time_artifact(backend, cand_dir, fields, options.precision, x, tune.runs)
        candidates[name] = {"median_ms": ms, "build_s": round(build_s, 2)}
        built[name] = (cand_dir, fields)
        if ms is None:  # cannot run here: nothing to compare, keep the first form without building the rest
            candidates[name]["not_timed"] = reason
            break
    if not built:
        raise ExportError(f"no candidate form could be built for {backend.format} {options.precision}: "
                          + "; ".join(f"{n}: {c['error']}" for n, c in candidates.items()))
    best = fastest(candidates) or next(iter(built))
    runner_up = sorted((n for n in built if candidates[n].get("median_ms") is not None),
                       key=lambda n: candidates[n]["median_ms"])[1:2]
    if runner_up:  # the two fastest again, run for run in turn: a slow spell of the machine hits both alike
        if progress:
            progress(f"autotune {backend.format} {options.precision}: {best} vs {runner_up[0]}, interleaved")
        confirmed = _interleaved(backend, [built[n] for n in (best, *runner_up)], options.precision, x, tune.runs)
        for name, ms in zip((best, *runner_up), confirmed):
            candidates[name]["interleaved_ms"] = ms
        best = min((best, *runner_up), key=lambda n: candidates[n]["interleaved_ms"])
    cand_dir, fields = built[best]
    record = {"optimize": tune.optimize, "target_lr_size": list(size), "runs": tune.runs, "candidates": candidates,
              "chosen": best, "tile": None}
    if candidates[best]["median_ms"] is not None and tune.tiles:
        with _load(backend, cand_dir, fields, options.precision) as runner:
            record["tiles"] = _time_tiles(runner, spec, backend.format, x, tune, progress)
        record["tile"] = choose_tile(record["tiles"])
    for entry in cand_dir.iterdir():
        shutil.move(str(entry), workdir / entry.name)
    return {**fields, "form": best, "autotune": record}


def _interleaved(backend, artifacts: list, precision: str, x: np.ndarray, runs: int) -> list[float]:
    """Median ms of each artifact, timed one run each in turn (after 2 warm-ups each)."""
    runners = [_load(backend, d, f, precision) for d, f in artifacts]
    try:
        for r in runners:
            r.infer(x)
            r.infer(x)
        times = [[] for _ in runners]
        for _ in range(runs):
            for r, t in zip(runners, times):
                t0 = time.perf_counter()
                r.infer(x)
                t.append(time.perf_counter() - t0)
        return [statistics.median(t) * 1e3 for t in times]
    finally:
        for r in runners:
            r.close()


TILE_MARGIN = 0.95  # a tile must beat the whole image by 5%: tiling has a cost the timing noise must not hide


def _time_tiles(runner, spec, fmt: str, x: np.ndarray, tune: TuneOptions, progress) -> dict:
    """Median ms of the whole image ("none") and of exact tiling at each tile side smaller than the image, timed run
    for run in turn on the same loaded engine."""
    from scnet_deploy.exporters.runner import TiledRunner

    halo = spec.receptive_radius
    ways = {"none": runner.infer}
    for tile in tune.tiles:
        if tile < max(x.shape[2:]):
            ways[str(tile)] = TiledRunner(runner, tile, halo, spec.scale).infer
    if progress:
        progress(f"autotune {fmt}: whole image vs tiles of {', '.join(list(ways)[1:]) or '-'} px, interleaved")
    times, errors = {name: [] for name in ways}, {}
    for _ in range(tune.runs + 1):  # the first round warms up each way and is not counted
        for name, infer in ways.items():
            if name in errors:
                continue
            try:
                t0 = time.perf_counter()
                infer(x)
                times[name].append(time.perf_counter() - t0)
            except ScnetDeployError as exc:  # a tile smaller than the engine's minimum input, say
                errors[name] = str(exc).splitlines()[0][:300]
    timings = {name: ({"error": errors[name]} if name in errors else
                      {"median_ms": statistics.median(t[1:]) * 1e3}) for name, t in times.items()}
    return timings


def choose_tile(timings: dict) -> int | None:
    """The fastest tile if it beats the whole image by the margin, else None (run whole images)."""
    whole = timings["none"]["median_ms"]
    tiles = {k: v for k, v in timings.items() if k != "none" and v.get("median_ms") is not None}
    if not tiles:
        return None
    best = min(tiles, key=lambda k: tiles[k]["median_ms"])
    return int(best) if tiles[best]["median_ms"] < TILE_MARGIN * whole else None


def context_options(options, form: DeployOptions):
    """ExportOptions whose ONNX is built in ``form``."""
    return replace(options, onnx=replace(options.onnx, shift=form.shift, conv_before_upsample=form.conv_before_upsample,
                                         upsample_as_deconv=form.upsample_as_deconv))
