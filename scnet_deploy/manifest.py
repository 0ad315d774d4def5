"""manifest.json: what went into an artifact, what came out, and what was verified."""

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# The model's tensor names in every engine (ONNX, OpenVINO, TensorRT, Core ML): NCHW float32 in [0, 1].
INPUT_NAME, OUTPUT_NAME = "lr", "sr"


def io_record(scale: int) -> dict:
    """The manifest's ``io`` section: what an engine takes and gives."""
    return {"input": INPUT_NAME, "output": OUTPUT_NAME, "layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0],
            "dynamic_axes": {"0": "batch", "2": "height", "3": "width"}, "scale": scale}


def tool_versions(*packages: str) -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _json_ready(value, where: str = "", reasons: dict | None = None):
    """``value`` as strict JSON can hold it: every float that is not finite becomes null, its original ("NaN",
    "Infinity", "-Infinity") recorded in ``reasons`` by path. Returns (value, reasons)."""
    import math

    reasons = {} if reasons is None else reasons
    if isinstance(value, float) and not math.isfinite(value):
        reasons[where or "."] = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return None, reasons
    if isinstance(value, dict):
        return {k: _json_ready(v, f"{where}.{k}" if where else str(k), reasons)[0] for k, v in value.items()}, reasons
    if isinstance(value, (list, tuple)):
        return [_json_ready(v, f"{where}[{i}]", reasons)[0] for i, v in enumerate(value)], reasons
    return value, reasons


def write_results_json(data: dict, path: Path) -> None:
    """Results for others to read (``--json``, ``results.json``, ``summary.json``) as strict JSON: a value that is
    not finite (an identical output's PSNR, a device's NaN) is null, its original in ``null_reasons`` by path."""
    ready, reasons = _json_ready(data)
    write_json_atomic({**ready, "null_reasons": reasons} if reasons else ready, path, strict=True)


def write_json_atomic(data: dict, path: Path, strict: bool = False) -> None:
    """Write ``path`` through a new temporary file beside it (created exclusively: never written through a link
    someone left under a predictable name), then renamed over it."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # as a plain write would leave it (mkstemp makes 0600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=2, sort_keys=False, allow_nan=not strict) + "\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_manifest(directory: Path, data: dict) -> dict:
    """Write ``directory/manifest.json``; returns the manifest as written."""
    manifest = {"manifest_version": MANIFEST_VERSION, **data}
    write_json_atomic(manifest, Path(directory) / MANIFEST_NAME)
    return manifest


def read_manifest(directory: Path) -> dict:
    """The artifact's manifest through the door (size-capped, strict, schema-checked); ``door.check_artifact``
    also checks its files."""
    from .door import read_manifest as checked

    return checked(directory)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each file (as sha256sum prints it), by its name relative to ``directory``; a folder (e.g.
    model.mlpackage) is listed file by file, so that every file an artifact holds is named and hashed."""
    hashes = {}
    for name in names:
        path = directory / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            hashes[f.relative_to(directory).as_posix()] = sha256_of(f)
    return hashes
