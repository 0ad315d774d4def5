"""scnet_deploy/doctor.py: what this machine can build and run, as JSON."""

import json
import subprocess
import sys


def test_doctor_json():
    out = subprocess.run([sys.executable, "-m", "scnet_deploy", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {r["backend"]: r for r in report["backends"]}
    assert rows["onnxruntime"]["available"] and rows["onnxruntime"]["version"]
    for row in rows.values():
        assert row["available"] or row["install"].startswith("pip install")
    assert {"avx512f", "avx512_vnni", "amx_int8"} <= set(report["cpu"]["features"])
    assert isinstance(report["gpus"], list) and report["versions"]["torch"]
