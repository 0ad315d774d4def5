"""The ``export`` verb: checkpoint -> one artifact directory per format, each with its manifest, written atomically.

The formats are targets of one build session (scnet_deploy/session.py): the verified ONNX graph of each deploy
form and the INT8 calibration data are made once and shared; every engine that can run on this machine is verified
against PyTorch FP32 there. ``write_artifact`` is what ``pipeline`` calls per engine on its own session.
"""

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scnet_deploy.exporters.registry import backend_for_format, format_names

from . import callable_verb
from .build_options import ExportOptions  # noqa: F401 (the verb's options, with the data they hold)
from .errors import ExportError, require_export_stack
from .locks import exclusive
from .manifest import MANIFEST_NAME, file_hashes, io_record, write_manifest
from .options import PRECISIONS, QUANTIZED, canonical_precision
from .progress import Progress
from .session import BuildSession, Target

if TYPE_CHECKING:
    from .model.checkpoint import Checkpoint


@dataclass
class ExportResult:
    directory: Path
    manifest: dict  # the first (or only) artifact's
    artifacts: dict[str, Path] = field(default_factory=dict)  # format -> artifact directory
    manifests: dict[str, dict] = field(default_factory=dict)


def _move_into_place(tmp: Path, final: Path) -> None:
    # Swap the finished directory in with renames so a reader never sees a half-written artifact.
    old = None
    if final.exists():
        ours = (final / MANIFEST_NAME).exists() or any((d / MANIFEST_NAME).exists() for d in final.iterdir()
                                                       if d.is_dir())
        if any(final.iterdir()) and not ours:
            raise ExportError(f"--output '{final}' exists and is not an scnet-deploy artifact; choose an empty or new "
                              "directory.")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_temporaries(final: Path) -> None:
    """A killed export (SIGKILL cannot be caught) leaves its hidden temporary directory; the next run removes it.
    One killed between its two renames leaves the previous artifact as ``.old-PID`` and nothing at ``final``: that
    swap is rolled back (the previous artifact restored), never deleted."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime_ns)
    if olds and not final.exists() and not final.is_symlink():
        os.replace(olds.pop(), final)
    for stale in olds:
        shutil.rmtree(stale, ignore_errors=True)


def _check(options: ExportOptions) -> None:
    formats = options.formats()
    if not formats:
        raise ExportError(f"--format is empty; choose one or more of {', '.join(format_names())}.")
    if len(set(formats)) != len(formats):
        raise ExportError(f"--format {options.format!r} names a format twice.")
    if options.precision not in PRECISIONS:
        raise ExportError(f"--precision {options.precision!r} is unknown; choose one of {list(PRECISIONS)}.")
    options.sizes.check()
    for b in map(backend_for_format, formats):
        if options.precision not in b.precisions:
            raise ExportError(f"--precision {options.precision} is not offered by --format {b.format}; it offers "
                              f"{list(b.precisions)}.")
        if options.compute is not None and options.compute not in b.compute_units:
            raise ExportError(f"--compute {options.compute} is not offered by --format {b.format}; it offers "
                              f"{list(b.compute_units)}.")
        if not b.builds_without_dependency:
            b.require(options.precision)
    options.onnx.check()
    options.tune.check()
    options.gate().check()


def export(checkpoint: str | Path, options: ExportOptions, progress=None, finish=None) -> ExportResult:
    """Export ``checkpoint`` to each format of ``options.format``; returns where and what was written.
    ``finish(session, workdir, manifest) -> manifest``, if given, completes each artifact before it is published
    (the device layer builds TensorRT's engine where it runs with it: ``devices.fleet.export_on``)."""
    require_export_stack("export")
    from .model.checkpoint import load_checkpoint

    options = replace(options, precision=canonical_precision(options.precision))
    _check(options)
    if options.sign is not None:
        from .signing import require_key

        require_key(options.sign)  # a missing key or library: one line, before any work
    ckpt = load_checkpoint(checkpoint, scale=options.scale, param_key=options.param_key)
    final = Path(options.output)
    if final.exists() and not final.is_dir():
        raise ExportError(f"--output '{final}' is a file; an artifact is a directory: choose a new or empty one.")
    final.parent.mkdir(parents=True, exist_ok=True)
    targets = [Target(fmt, options.precision) for fmt in options.formats()]
    with build_session(ckpt, options, final, progress) as session:
        return write_artifact(session, targets, final,
                              None if finish is None else lambda workdir, manifest: finish(session, workdir, manifest))


def verification_set(session: BuildSession, manifest: dict):
    """The inputs an engine is verified on (as the session verifies one here) with the PyTorch FP32 outputs made
    here, to ship to the device that builds it (``runner.ShippedReference``)."""
    import torch

    from scnet_deploy.exporters.runner import ShippedReference

    inputs = session.verification_inputs(manifest)
    with torch.no_grad():
        outputs = [session.reference(torch.from_numpy(x)).numpy() for x in inputs]
    return ShippedReference(inputs, outputs)


@contextlib.contextmanager
def build_session(ckpt: "Checkpoint", options: ExportOptions, output: Path, progress=None):
    """A BuildSession whose scratch (shared ONNX graphs, autotune candidates) is a hidden directory beside
    ``output``, removed when the session ends, however it ends; a killed session's scratch (SIGKILL cannot be
    caught) is removed by the next one for the same output. Holds ``output``'s lock (``locks.exclusive``): a second
    export to the same output at the same time stops at once with a message."""
    with exclusive(output, "export"):  # one writer per output: another would clear this one's temporaries
        for stale in output.parent.glob(f".{output.name}.build-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.build-", dir=output.parent))
        try:
            yield BuildSession(ckpt, options, scratch, progress)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def write_artifact(session: BuildSession, targets: list[Target], final: Path, finish=None) -> ExportResult:
    """Build ``targets`` in ``session`` into ``final`` (one sub-directory per format when several), each with its
    manifest; the directory appears whole or not at all. ``finish(workdir, manifest) -> manifest`` completes each
    artifact before it is moved into place."""
    from scnet_deploy.exporters.onnx_graph import graph_tool_versions

    _remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    result = ExportResult(final, {})
    ckpt = session.checkpoint
    try:
        for target in targets:
            session.progress(Progress(f"building {target.format} ({target.precision})"))
            workdir = tmp if len(targets) == 1 else tmp / target.format
            workdir.mkdir(exist_ok=True)
            fields = session.build(target, workdir)
            backend = backend_for_format(target.format)
            manifest = {
                "format": target.format,
                "backend": backend.name,
                "precision": target.precision,
                "options": _options_record(session.options_for(target), target.format),
                **{k: v for k, v in fields.items() if k != "files"},
                "checkpoint": ckpt.manifest_entry(),
                "arch": ckpt.spec.to_dict(),
                "io": io_record(ckpt.spec.scale),
                "files": file_hashes(workdir, fields["files"]),
                "versions": {**graph_tool_versions(), backend.distribution: backend.version()},
            }
            manifest = write_manifest(workdir, manifest)
            if finish is not None:
                manifest = finish(workdir, manifest)
            if session.options.sign is not None:
                from .signing import sign

                sign(workdir, session.options.sign)
            result.artifacts[target.format] = final if len(targets) == 1 else final / target.format
            result.manifests[target.format] = manifest
        _move_into_place(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result.manifest = next(iter(result.manifests.values()))
    return result


def _plain(options) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}


def _options_record(options: ExportOptions, fmt: str) -> dict:
    record = {"format": fmt, "precision": options.precision, "scale": options.scale, "param_key": options.param_key,
              "tune": asdict(options.tune)}
    backend = backend_for_format(fmt)
    if options.compute is not None:
        record["compute"] = options.compute
    if backend.sizes_at_export:
        record["sizes"] = asdict(options.sizes)
    build_options = backend.build_options()
    if build_options is not None:
        record[backend.name] = _plain(options.backend(backend.name, build_options))
    if options.precision in QUANTIZED:
        record["calib"] = _plain(options.calib)
        record["budget_db"] = options.budget_db
        record["gate"] = options.gate().record()
    return record


callable_verb(__name__)  # scnet_deploy.export(...) calls the verb, imported or not
