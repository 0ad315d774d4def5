"""The ``export`` verb: checkpoint -> artifact directory with its manifest, written atomically."""

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import load_checkpoint
from .errors import ExportError
from .manifest import write_manifest


def _onnx_options():
    from scnet_deploy.exporters.onnx_export import OnnxOptions

    return OnnxOptions()


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    format: str = "onnx"
    scale: int | None = None  # only for one-stage shift-MLP checkpoints, whose weights cannot tell x2 from x3
    param_key: str | None = None  # "params" or "params_ema" when a BasicSR file has both
    onnx: "object" = field(default_factory=_onnx_options)


@dataclass
class ExportResult:
    directory: Path
    manifest: dict


def _file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in names}


def _move_into_place(tmp: Path, final: Path) -> None:
    # Swap the finished directory in with renames so a reader never sees a half-written artifact.
    old = None
    if final.exists():
        if not (final / "manifest.json").exists() and any(final.iterdir()):
            raise ExportError(f"--output '{final}' exists and is not an scnet-deploy artifact; choose an empty or new "
                              "directory.")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export(checkpoint: str | Path, options: ExportOptions) -> ExportResult:
    """Export ``checkpoint`` to ``options.format`` in ``options.output`` (model file(s) + manifest.json)."""
    from scnet_deploy.exporters.registry import get_format

    fmt = get_format(options.format)
    ckpt = load_checkpoint(checkpoint, scale=options.scale, param_key=options.param_key)
    final = Path(options.output)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        fields = fmt.build(ckpt, options, tmp)
        manifest = {
            "format": fmt.name,
            "options": {"format": fmt.name, "scale": options.scale, "param_key": options.param_key},
            **{k: v for k, v in fields.items() if k != "files"},
            "checkpoint": ckpt.manifest_entry(),
            "arch": ckpt.spec.to_dict(),
            "io": {"input": "lr", "output": "sr", "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
                   "dynamic_axes": {"0": "batch", "2": "height", "3": "width"}, "scale": ckpt.spec.scale},
            "files": _file_hashes(tmp, fields["files"]),
        }
        manifest = write_manifest(tmp, manifest)
        _move_into_place(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(final, manifest)
