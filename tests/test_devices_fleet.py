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


@pytest.mark.slow  # 15 s: three devices twice; several devices at once are exercised by the deadline test
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


def test_a_hung_device_fails_at_its_deadline_while_the_healthy_ones_are_shown(hostile, fleet, artifact, tmp_path):
    """Issue 38, row 3: a device whose bench never answers held every result back, with no deadline anywhere. Now
    the run on each device has one (--device-timeout): the hung one is reported with the time it took, the two
    healthy ones are printed."""
    from dataclasses import replace

    hostile.answer([BENCH, "hang_once", tmp_path / "first"])
    t0 = time.monotonic()
    result = bench_on([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False),
                      ("ssh://device", "ssh://device2", "ssh://device3"), replace(fleet, device_timeout_s=6))
    took = time.monotonic() - t0
    assert len(result["devices"]) == 2 and len(result["failed"]) == 1, result["failed"]
    (why,) = result["failed"].values()
    assert "no answer within its deadline" in why and "of 6 s" in why and "--device-timeout" in why, why
    assert took < 6 + 5, took
    assert all(r["models"][0]["shapes"][0]["median_ms"] == 1.5 for r in result["devices"].values())
    assert list((tmp_path / "device runs").iterdir()) == []  # the hung run's directory removed too
    args = ["bench", artifact, "--size", "8x8", "--runs", "1", "--on", "ssh://device", "--on", "ssh://device2",
            "--ssh-config", fleet.ssh_config, "--remote-python", fleet.remote_python, "--remote-dir", fleet.remote_dir,
            "--device-timeout", "4"]
    (tmp_path / "first").unlink()
    proc = subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "no answer within its deadline" in proc.stderr, proc.stderr
    assert "1.5" in proc.stdout  # the healthy device's row


def test_a_device_that_drips_its_answer_fails_at_the_deadline(hostile, fleet, artifact, tmp_path):
    """Row 3: a device whose `cat` sends one byte every 0.5 s never ends a fetch; the deadline covers the whole run,
    not each read."""
    from dataclasses import replace

    hostile.answer([BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "drip", ""])
    t0 = time.monotonic()
    with pytest.raises(ScnetDeployError) as info:
        bench_on([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), ("ssh://device",),
                 replace(fleet, device_timeout_s=5))
    assert "no answer within its deadline" in str(info.value) and "fetching the results" in str(info.value)
    assert time.monotonic() - t0 < 5 + 5


def test_the_deadline_is_derived_from_what_was_asked(fleet):
    from dataclasses import replace

    from scnet_deploy.devices.remote import BASE_DEADLINE_S, PER_RUN_S, bench_work_s, deadline_s

    small = BenchOptions(shapes=((8, 8),), runs=1, warmup=0)
    large = BenchOptions(shapes=((8, 8), (16, 16)), runs=100, warmup=2)
    assert deadline_s(fleet, bench_work_s(small, 1)) == BASE_DEADLINE_S + 2 * PER_RUN_S
    assert deadline_s(fleet, bench_work_s(large, 3)) == BASE_DEADLINE_S + 3 * 2 * 103 * PER_RUN_S
    assert deadline_s(replace(fleet, device_timeout_s=7.5), bench_work_s(large, 3)) == 7.5
    with pytest.raises(ScnetDeployError, match="--device-timeout must be"):
        bench_on([], small, ("ssh://device",), replace(fleet, device_timeout_s=-1))


def test_what_a_killed_run_left_is_removed_by_the_next_run(hostile, fleet, artifact, tmp_path):
    """Row 4: a run killed outright (SIGKILL, a lost link) cannot clean up; its directory's lease runs out and the
    next run to the device removes it. A directory whose lease still runs (another run at work) is kept."""
    runs = tmp_path / "device runs"
    runs.mkdir(exist_ok=True)
    for name, lease in (("scnet-deploy.Old123", int(time.time()) - 10), ("scnet-deploy.Busy12", 2**40)):
        (runs / name).mkdir()
        (runs / name / "lease").write_text(f"{lease}\n")
        (runs / name / "m0").write_text("model")
    hostile.answer([BENCH, "bench", ""])
    bench_on([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), ("ssh://device",), fleet)
    assert sorted(p.name for p in runs.iterdir()) == ["scnet-deploy.Busy12"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_two_ctrl_c_to_the_terminal_leave_nothing_on_the_devices(hostile, fleet, artifact, tmp_path, jobs):
    """Row 4: two Ctrl-C 0.2 s apart (the terminal signals the whole foreground process group, ssh included) left
    the run directory on the device 7 times of 7. ssh now runs in its own session, and the removal is not cut
    short by the second signal."""
    import os
    import signal

    hostile.answer([BENCH, "bench", "30"])
    runs = tmp_path / "device runs"
    on = ["--on", "ssh://device"] + (["--on", "ssh://device2"] if jobs == 2 else [])
    args = ["bench", artifact, "--size", "8x8", "--runs", "1", *on, "--jobs", str(jobs), "--ssh-config",
            fleet.ssh_config, "--remote-python", fleet.remote_python, "--remote-dir", fleet.remote_dir]
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([d for d in runs.glob("*/m0")]) < jobs:
        time.sleep(0.1)
    assert len(list(runs.glob("*/m0"))) == jobs, "the runs never reached the device"
    time.sleep(1)  # the device's bench is running
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert list(runs.iterdir()) == []
