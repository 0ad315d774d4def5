"""Installed import names: scnet_deploy, scnet_deploy.exporters, scnet_deploy.calibration; no generic top-level
names, both from a built wheel and from the editable install."""

import subprocess
import sys
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


PROBE = ("import importlib.util, sys, scnet_deploy, scnet_deploy.exporters.registry, scnet_deploy.calibration; "
         "print(scnet_deploy.__file__); print(scnet_deploy.exporters.__file__); "
         "print(importlib.util.find_spec('exporters') is None and importlib.util.find_spec('calibration') is None); "
         "print(scnet_deploy.exporters.registry.format_names())")


def probe(cwd: Path, extra_path: Path | None = None) -> list[str]:
    code = PROBE if extra_path is None else f"import sys; sys.path.insert(0, {str(extra_path)!r}); " + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_installed_import_names(tmp_path):
    lines = probe(tmp_path)  # outside the checkout: only what is installed can be imported
    assert Path(lines[1]).parent.name in ("exporters",)  # editable: maps to the repository's exporters/
    assert lines[2] == "True", "generic top-level names 'exporters'/'calibration' must not be importable"
    assert "onnx" in lines[3]


def test_built_wheel_layout_and_imports(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("scnet_deploy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "scnet_deploy/exporters/registry.py" in names and "scnet_deploy/calibration/__init__.py" in names
    assert "scnet_deploy/weights/scnet_t_x4_reference.safetensors" in names  # the pipeline's default checkpoint
    assert "scnet_deploy/weights/scnet_t_x4_reference_qat.safetensors" in names  # its INT8 engines' checkpoint
    assert not any(n.startswith(("exporters/", "calibration/", "tests/", "benchmarks/")) for n in names)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    lines = probe(tmp_path, unpacked)
    assert lines[0].startswith(str(unpacked)) and lines[1].startswith(str(unpacked / "scnet_deploy" / "exporters"))
    assert lines[2] == "True"
