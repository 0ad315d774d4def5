"""scnet_deploy/devices/fleet.py: the device layer above the verbs: several devices at once (--jobs), a device that
fails is reported and the others go on (exit 1), every device failing is one line (exit 2)."""

import json
import subprocess
import sys
import time

import pytest

from conftest import save_basicsr, tiny_model
from scnet_deploy.bench import BenchOptions
from scnet_deploy.devices.fleet import bench_on
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import export, ExportOptions


BENCH = r"^/hostile/python -m scnet_deploy bench "


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    return export(save_basicsr(tiny_model(2, num_block=1), d / "m_x2.pth"), ExportOptions(output=d / "onnx")).directory


@pytest.fixture
def fleet(hostile, tmp_path):
    """An ssh config with the hostile device under three names, and "broken" (a closed port)."""
    text = hostile.server.config.read_text()
    config = tmp_path / "fleet_config"
    config.write_text(text + text.replace("Host device", "Host device2") + text.replace("Host device", "Host device3")
                      + text.replace("Host device", "Host broken").replace(f"Port {hostile.server.port}", "Port 1")
                      + text.replace("Host device", "Host broken2").replace(f"Port {hostile.server.port}", "Port 1"))
    from dataclasses import replace

    return replace(hostile.remote(tmp_path), ssh_config=config)


def test_a_failed_device_is_reported_and_the_others_go_on(hostile, fleet, artifact, tmp_path):
    hostile.answer([BENCH, "bench", ""])
    result = bench_on([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False),
                      ("ssh://device", "ssh://broken", "ssh://device2"), fleet)
    assert list(result["devices"]) == ["device", "device2"] and list(result["failed"]) == ["broken"]
    assert "ssh broken" in result["failed"]["broken"]
    assert result["table"][0]["median_ms"] == {"device": 1.5, "device2": 1.5}
    args = ["bench", artifact, "--size", "8x8", "--runs", "1", "--on", "ssh://device", "--on", "ssh://broken",
            "--ssh-config", fleet.ssh_config, "--remote-python", fleet.remote_python, "--remote-dir", fleet.remote_dir,
            "--json", tmp_path / "out.json"]
    proc = subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "device failed" in proc.stderr and "broken" in proc.stderr
    written = json.loads((tmp_path / "out.json").read_text())
    assert list(written["devices"]) == ["device"] and list(written["failed"]) == ["broken"]


def test_every_device_failing_is_one_line(fleet, artifact):
    with pytest.raises(ScnetDeployError) as info:
        bench_on([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), ("ssh://broken", "ssh://broken2"),
                 fleet)
    message = str(info.value)
    assert message.startswith("every device failed") and "broken:" in message and "broken2:" in message
    assert "\n" not in message


def test_devices_run_at_the_same_time(hostile, fleet, artifact):
    """Three devices that each take 1 s to bench: about 1 s with --jobs 3, about 3 s one at a time."""
    from dataclasses import replace

    hostile.answer([BENCH, "bench", "1"])
    on = ("ssh://device", "ssh://device2", "ssh://device3")
    times = {}
    for jobs in (3, 1):
        t0 = time.perf_counter()
        result = bench_on([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), on,
                          replace(fleet, jobs=jobs))
        times[jobs] = time.perf_counter() - t0
        assert list(result["devices"]) == ["device", "device2", "device3"] and result["failed"] == {}
    assert times[3] < times[1] - 1.2, times
