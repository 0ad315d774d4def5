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


def write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_manifest(directory: Path, data: dict) -> dict:
    """Write ``directory/manifest.json``; returns the manifest as written."""
    manifest = {"manifest_version": MANIFEST_VERSION, **data}
    write_json_atomic(manifest, Path(directory) / MANIFEST_NAME)
    return manifest


def read_manifest(directory: Path) -> dict:
    return json.loads((Path(directory) / MANIFEST_NAME).read_text())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: Path, names: list[str]) -> dict[str, str]:
    """sha256 of each file (as sha256sum prints it); a directory (e.g. model.mlpackage) hashes its files' relative
    paths and contents in sorted order."""
    hashes = {}
    for name in names:
        path = directory / name
        if not path.is_dir():
            hashes[name] = sha256_of(path)
            continue
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(directory)).encode())
            digest.update(f.read_bytes())
        hashes[name] = digest.hexdigest()
    return hashes
