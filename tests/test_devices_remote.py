"""scnet_deploy/devices/remote.py and ssh.py: a torch-free runtime, and bench/validate/export on a device over SSH,
against a real OpenSSH server on a loopback port whose device Python is an environment without PyTorch."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save_basicsr, smooth_hr_folder, tiny_model
from devices import device_venv, start_sshd
from scnet_deploy import __version__
from scnet_deploy.bench import BenchOptions
from scnet_deploy.devices.fleet import bench_on, export_on, validate_on
from scnet_deploy.devices.ssh import parse_device, RemoteError
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.options import RemoteOptions
from scnet_deploy.validate import ValidateOptions


pytestmark = pytest.mark.openvino


@pytest.fixture(scope="module")
def device():
    return device_venv()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from start_sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    d = tmp_path_factory.mktemp("engines")
    ckpt = save_basicsr(tiny_model(4, seed=3), d / "ref.pth")
    result = export(ckpt, ExportOptions(output=d / "eng", format="onnx,openvino"))
    return ckpt, result.artifacts["onnx"], result.artifacts["openvino"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return smooth_hr_folder(tmp_path_factory.mktemp("ds"), 2, (48, 36))


def remote_options(sshd, device, tmp_path, **changes) -> RemoteOptions:
    run_dirs = tmp_path / "device runs"  # a space in it: quoted on the device
    run_dirs.mkdir(exist_ok=True)
    return replace(RemoteOptions(str(device / "bin" / "python"), ssh_config=sshd.config, remote_dir=str(run_dirs)),
                   **changes)


def left_on_device(options: RemoteOptions) -> list[str]:
    return os.listdir(options.remote_dir)


def cli(*args, cwd=None, python=sys.executable):
    return subprocess.run([python, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("error:"), proc.stderr
    return lines[-1]


def _bench_cli(sshd, device, engines, tmp_path, *extra, url=None):
    _, onnx_dir, _ = engines
    remote = remote_options(sshd, device, tmp_path)
    args = ["bench", onnx_dir, "--size", "8x8", "--runs", "1", "--on", url or sshd.url(), "--ssh-config",
            sshd.config, "--remote-dir", remote.remote_dir, "--json", tmp_path / "out.json"]
    if "--remote-python" not in extra:
        args += ["--remote-python", remote.remote_python]
    return cli(*args, *extra), remote


def _stand_in_python(tmp_path: Path, device: Path, body: str) -> Path:
    """A device 'Python' that is the device environment's, except for what ``body`` (sh) does first."""
    script = tmp_path / "device-python"
    script.write_text(f"#!/bin/sh\n{body}\nexec {device / 'bin' / 'python'} \"$@\"\n")
    script.chmod(0o755)
    return script


def test_the_device_environment_has_no_torch_and_runs_artifacts(device, engines, dataset, tmp_path):
    ckpt, onnx_dir, ov_dir = engines
    python = device / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    doctor = json.loads(cli("doctor", "--json", python=python).stdout)
    assert doctor["versions"]["scnet_deploy"] == __version__ and doctor["versions"]["torch"] is None
    assert {b["backend"]: b["available"] for b in doctor["backends"]}["openvino"]

    run = cli("bench", onnx_dir, ov_dir, "--size", "12x16", "--runs", "2", "--baselines", "--json",
              tmp_path / "b.json", python=python)
    assert run.returncode == 0, run.stderr
    b = json.loads((tmp_path / "b.json").read_text())
    assert len(b["models"]) == 2 and "pip install -e '.[export]'" in b["baselines_skipped"]  # its checkpoint exists here
    run = cli("validate", onnx_dir, "--dataset", dataset, "--scale", "4", "--json", tmp_path / "v.json",
              python=python)
    assert run.returncode == 0, run.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["models"][0]["psnr_y"] > 0 and "pip install -e '.[export]'" in v["reference_skipped"]
    run = cli("upscale", ov_dir, dataset / "HR" / "img0.png", "-o", tmp_path / "up.png", python=python)
    assert run.returncode == 0 and Image.open(tmp_path / "up.png").size == (192, 144), run.stderr
    np.savez(tmp_path / "in.npz", a=np.zeros((3, 8, 10), np.float32))
    run = cli("infer", onnx_dir, tmp_path / "in.npz", "-o", tmp_path / "out.npz", python=python)
    assert run.returncode == 0 and np.load(tmp_path / "out.npz")["a"].shape == (3, 32, 40), run.stderr

    for verb in (["export", ckpt, "-o", tmp_path / "x"], ["info", ckpt], ["bench", ckpt]):
        assert "pip install -e '.[export]'" in one_line_error(cli(*verb, python=python))
    assert not (tmp_path / "x").exists()


def test_bench_on_a_device_and_here_in_one_table(sshd, device, engines, tmp_path):
    _, onnx_dir, ov_dir = engines
    remote = remote_options(sshd, device, tmp_path)
    result = bench_on([onnx_dir, ov_dir], BenchOptions(shapes=((12, 16),), runs=2, warmup=0, baselines=True),
                      ("local", sshd.url()), remote)
    assert list(result["devices"]) == ["local", "device"]
    here, there = result["devices"]["local"], result["devices"]["device"]
    assert there["device"]["executable"] == str(device / "bin" / "python")  # the device's own description
    assert there["device"]["versions"]["torch"] is None and there["device"]["backends"]["openvino"]
    assert [m["path"] for m in there["models"]] == [str(onnx_dir), str(ov_dir)]
    assert [m["name"].split(":")[0] for m in there["models"]] == ["onnx", "openvino"]  # local names, not m0/m1
    assert any(m["baseline"] for m in here["models"]) and not any(m["baseline"] for m in there["models"])
    assert len(result["table"]) == 2 and all(set(r["median_ms"]) == {"local", "device"} for r in result["table"])
    assert left_on_device(remote) == []  # the run directory was removed


def test_validate_on_a_device_scores_its_outputs_here_against_the_fp32_reference(sshd, device, engines, dataset,
                                                                                   tmp_path):
    ckpt, onnx_dir, ov_dir = engines
    remote = remote_options(sshd, device, tmp_path)
    on = validate_on([ckpt, onnx_dir, ov_dir], ValidateOptions(dataset, 4), ("local", sshd.url()), remote)
    names = [m["name"] for m in on["models"]]
    assert names[0].startswith("ref.pth") and sum(" @ device" in n for n in names) == 2 and len(names) == 5
    by_name = {m["name"].split(":")[0]: m for m in on["models"]}
    for local, remote_row in (("onnx", "onnx @ device"), ("openvino", "openvino @ device")):
        # the same engine on the same inputs: the device's output scores as the local one does
        assert by_name[remote_row]["psnr_y"] == pytest.approx(by_name[local]["psnr_y"], abs=1e-6)
        assert abs(by_name[remote_row]["drift_db"]) < 1e-3 and by_name[remote_row]["max_abs_diff"] < 1e-4
    assert list(on["devices"]) == ["local", "device"] and left_on_device(remote) == []
    assert on["devices"]["device"]["executable"] == str(device / "bin" / "python")
    with pytest.raises(ScnetDeployError, match="FP32 PyTorch reference"):
        shutil.copytree(onnx_dir, tmp_path / "orphan")
        manifest = json.loads((tmp_path / "orphan" / "manifest.json").read_text())
        manifest["checkpoint"]["path"] = str(tmp_path / "gone.pth")
        (tmp_path / "orphan" / "manifest.json").write_text(json.dumps(manifest))
        validate_on([tmp_path / "orphan"], ValidateOptions(dataset, 4), (sshd.url(),), remote)


@pytest.mark.slow  # 16 s: a whole pipeline, then bench --on; bench --on alone is tested by default
def test_pipeline_on_a_device_adds_its_rows_to_the_report(sshd, device, dataset, tmp_path):
    ckpt = save_basicsr(tiny_model(4, num_feat=8, num_block=1), tmp_path / "tiny_x4.pth")
    remote = remote_options(sshd, device, tmp_path)
    run = cli("pipeline", ckpt, "-o", tmp_path / "out", "--dataset", dataset, "--size", "8x8", "--runs", "1",
              "--formats", "onnx", "--optimize", "none", "--calib-count", "4", "--on", sshd.url(), "--ssh-config",
              sshd.config, "--remote-python", remote.remote_python, "--remote-dir", remote.remote_dir)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    there = summary["on_devices"]["devices"]["device"]
    assert sorted(Path(m["path"]).name for m in there["models"]) == sorted(summary["built"])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "On devices (median ms" in report and "| engine | precision | LR | device |" in report
    assert f"scnet-deploy {__version__}" in report and left_on_device(remote) == []


def test_ncnn_runs_on_a_torch_free_device_with_only_its_runtime(sshd, device, engines, dataset, tmp_path):
    """The device has ncnn (the ncnn extra) and neither PyTorch nor pnnx; an ncnn artifact is benched and validated
    there, its outputs scored here as the local run's are."""
    ckpt, _, _ = engines
    python = device / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import ncnn, importlib.util as u; print(u.find_spec('pnnx'))"],
                           capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "None", probe.stderr
    artifact = export(ckpt, ExportOptions(output=tmp_path / "ncnn", format="ncnn")).directory
    remote = remote_options(sshd, device, tmp_path)
    b = bench_on([artifact], BenchOptions(shapes=((12, 16),), runs=2, warmup=0), (sshd.url(),), remote)
    row = b["devices"]["device"]["models"][0]
    assert row["backend"] == "ncnn" and row["shapes"][0]["median_ms"] > 0
    v = validate_on([ckpt, artifact], ValidateOptions(dataset, 4), ("local", sshd.url()), remote)
    here, there = (next(m for m in v["models"] if m["name"].startswith("ncnn") and (" @ device" in m["name"]) == d)
                   for d in (False, True))
    assert there["psnr_y"] == pytest.approx(here["psnr_y"], abs=1e-6) and there["max_abs_diff"] < 1e-4
    assert left_on_device(remote) == []


def test_bench_video_on_a_device_judges_its_own_speed_and_codec(sshd, device, engines, tmp_path):
    """A video file stays here: the device is given its output size and frame rate (x4 of 12x16 at 30 fps)."""
    pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]' in the checkout)")
    from scnet_deploy.imaging.video import synthetic_clip

    _, onnx_dir, _ = engines
    remote = remote_options(sshd, device, tmp_path)
    clip = synthetic_clip(tmp_path / "lr.mp4", (12, 16), 30)
    result = bench_on([onnx_dir], BenchOptions(runs=1, warmup=0, video=clip), (sshd.url(),), remote)
    there = result["devices"]["device"]
    assert there["options"]["shapes"] == [[12, 16]] and there["video"]["target"] == [48, 64, 30]
    verdict = there["models"][0]["video"]
    assert verdict["target_fps"] == 30 and verdict["fps_with_codec"] < verdict["fps"]


def test_validate_on_cli_shows_a_drift_column_per_device(sshd, device, engines, dataset, tmp_path):
    ckpt, onnx_dir, _ = engines
    remote = remote_options(sshd, device, tmp_path)
    run = cli("validate", ckpt, onnx_dir, "--dataset", dataset, "--scale", "4", "--on", "local", "--on", sshd.url(),
              "--ssh-config", sshd.config, "--remote-python", remote.remote_python, "--remote-dir",
              remote.remote_dir, "--json", tmp_path / "v.json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "drift dB vs the FP32" in run.stdout and re.search(r"┃ local\s+┃ device\s+┃", run.stdout)
    assert re.search(r"│ onnx\s+│ [+-]0\.000\s+│ [+-]0\.000\s+│", run.stdout)
    assert json.loads((tmp_path / "v.json").read_text())["devices"]["device"]["cpu"]["cores"] >= 1


def test_names_with_spaces_quotes_and_semicolons_are_passed_safely(sshd, device, engines, tmp_path):
    _, onnx_dir, _ = engines
    name = f"pwned-{os.getpid()}"  # a shell that ran these names would create it in the login directory
    canary = Path.home() / name
    odd = tmp_path / f"eng 'a' \"b\"; touch {name}; $(touch {name})"
    shutil.copytree(onnx_dir, odd)
    remote = remote_options(sshd, device, tmp_path, remote_dir=str(tmp_path / f"runs; touch {name} `touch {name}`"))
    Path(remote.remote_dir).mkdir()
    result = bench_on([odd], BenchOptions(shapes=((8, 8),), runs=1, warmup=0), (sshd.url(),), remote)
    assert result["devices"]["device"]["models"][0]["path"] == str(odd)
    assert not canary.exists() and left_on_device(remote) == []


def test_device_urls_are_parsed_strictly():
    d = parse_device("ssh://pi@jetson.local:2222")
    assert (d.user, d.host, d.port, d.label) == ("pi", "jetson.local", 2222, "pi@jetson.local:2222")
    for bad in ("jetson", "http://jetson", "ssh://jetson/tmp", "ssh://-oProxyCommand=x", "ssh://h:99999",
                "ssh://u:secret@h"):
        with pytest.raises(ScnetDeployError, match="--on"):
            parse_device(bad)


def test_an_unreachable_device_and_an_unknown_host_key_are_one_line_errors(sshd, device, engines, tmp_path):
    closed = tmp_path / "closed_config"
    closed.write_text(sshd.config.read_text().replace(f"Port {sshd.port}", "Port 1"))
    proc, _ = _bench_cli(sshd, device, engines, tmp_path, "--ssh-config", closed)
    assert "ssh device:" in one_line_error(proc) and not (tmp_path / "out.json").exists()
    stranger = tmp_path / "stranger_config"  # a known_hosts that does not hold this server's key: never skipped
    (tmp_path / "other_hosts").write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 "
                                          "AAAAC3NzaC1lZDI1NTE5AAAAIBtYQRj4bmUKiS3YDqSJcnwJQxWYhJ8uqnfOQvXxG3Aq\n")
    stranger.write_text(sshd.config.read_text().replace(str(sshd.directory / "known_hosts"),
                                                        str(tmp_path / "other_hosts")))
    line = one_line_error(_bench_cli(sshd, device, engines, tmp_path, "--ssh-config", stranger)[0])
    assert "host key" in line.lower() and not (tmp_path / "out.json").exists()


def test_a_missing_remote_scnet_deploy_or_backend_is_a_one_line_error(sshd, device, engines, tmp_path):
    proc, remote = _bench_cli(sshd, device, engines, tmp_path, "--remote-python", "/nonexistent/python3")
    assert "cannot run /nonexistent/python3" in one_line_error(proc) and left_on_device(remote) == []
    # an artifact whose backend the device lacks (Core ML: not in the device environment)
    _, onnx_dir, _ = engines
    coreml = tmp_path / "coreml-like"
    shutil.copytree(onnx_dir, coreml)
    manifest = json.loads((coreml / "manifest.json").read_text())
    (coreml / "manifest.json").write_text(json.dumps({**manifest, "backend": "coreml"}))
    proc = cli("bench", coreml, "--size", "8x8", "--runs", "1", "--on", sshd.url(), "--ssh-config", sshd.config,
               "--remote-python", remote.remote_python, "--remote-dir", remote.remote_dir)
    assert "coremltools" in one_line_error(proc) and left_on_device(remote) == []


def test_a_lost_connection_is_a_one_line_error(sshd, device, engines, tmp_path):
    stub = _stand_in_python(tmp_path, device, 'case " $* " in *" bench "*) kill -9 $PPID; sleep 5;; esac')
    proc, remote = _bench_cli(sshd, device, engines, tmp_path, "--remote-python", stub)
    assert "ssh device:" in one_line_error(proc) and not (tmp_path / "out.json").exists()


def test_a_full_device_disk_is_a_one_line_error(sshd, device, engines, tmp_path):
    small = tmp_path / "small disk"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(small)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        _, onnx_dir, _ = engines
        proc = cli("bench", onnx_dir, "--size", "8x8", "--runs", "1", "--on", sshd.url(), "--ssh-config",
                   sshd.config, "--remote-python", device / "bin" / "python", "--remote-dir", small, "--json",
                   tmp_path / "out.json")
        assert "ran out of disk space" in one_line_error(proc) and not (tmp_path / "out.json").exists()
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_another_version_on_the_device_is_refused_unless_provisioned(sshd, device, engines, tmp_path):
    """The device reports 0.0.9 until it installs a wheel; the wheel is built here and copied over for real, and
    its pip (a stand-in) checks it is a wheel there and records the command."""
    flag, asked = tmp_path / "installed", tmp_path / "pip-args"
    stub = _stand_in_python(tmp_path, device, f"""
case " $* " in
  *" doctor "*) [ -e {flag} ] || {{ {device / 'bin' / 'python'} "$@" | sed 's/"scnet_deploy": "[^"]*"/"scnet_deploy": "0.0.9"/'; exit 0; }};;
  *" pip install "*) for a; do last=$a; done
     {device / 'bin' / 'python'} -c "import sys, zipfile; sys.exit(not zipfile.is_zipfile(sys.argv[1]))" "$last" || exit 3
     echo "$*" > {asked}; touch {flag}; exit 0;;
esac""")
    proc, remote = _bench_cli(sshd, device, engines, tmp_path, "--remote-python", stub)
    line = one_line_error(proc)
    assert "0.0.9" in line and __version__ in line and "--provision" in line and left_on_device(remote) == []
    proc, _ = _bench_cli(sshd, device, engines, tmp_path, "--remote-python", stub, "--provision")
    assert proc.returncode == 0, proc.stderr
    assert f"scnet_deploy-{__version__}-py3-none-any.whl" in asked.read_text()
    assert "install -q --force-reinstall --no-deps" in asked.read_text() and left_on_device(remote) == []


def test_ctrl_c_removes_the_run_directory_on_the_device(sshd, device, engines, tmp_path):
    stub = _stand_in_python(tmp_path, device, 'case " $* " in *" bench "*) sleep 20; exit 1;; esac')
    _, onnx_dir, _ = engines
    remote = remote_options(sshd, device, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", "bench", str(onnx_dir), "--size", "8x8", "--on",
                             sshd.url(), "--ssh-config", str(sshd.config), "--remote-python", str(stub),
                             "--remote-dir", remote.remote_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            (Path(remote.remote_dir) / d / "m0").exists() for d in left_on_device(remote)):
        time.sleep(0.2)
    assert left_on_device(remote), "the run never reached the device"
    time.sleep(1)  # the remote bench is running
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert left_on_device(remote) == []


@pytest.mark.slow  # 13 s; the device build flow is tested by default against the hostile device (test_door)
def test_export_tensorrt_on_a_device_builds_there_and_brings_nothing_back_unverified(sshd, device, engines, tmp_path):
    """The device has a stand-in TensorRT 10.x (tests/tensorrt_standins.py, recording what it is asked) and no GPU:
    the export ships the verified graph and its verification set, the device's scnet-deploy builds the plan with
    its TensorRT (strongly typed network, the artifact's profile), and refuses to return an engine it cannot verify:
    one line, exit 2, no artifact here."""
    import hashlib

    from scnet_deploy.manifest import INPUT_NAME
    from scnet_deploy.options import EXPORT_SIZES
    from scnet_deploy.exporters.tensorrt.graph import make_profile

    ckpt, _, _ = engines
    package, record = tmp_path / "standin" / "tensorrt", tmp_path / "trt-calls.json"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"""import atexit, json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import tensorrt_standins
trt = tensorrt_standins.make("10.13.0.35")
sys.modules["tensorrt"] = trt
atexit.register(lambda: open({str(record)!r}, "w").write(json.dumps(
    [[c if isinstance(c, (int, str)) else list(c) if isinstance(c, tuple) else repr(c) for c in call]
     for call in trt.calls])))
""")
    stub = _stand_in_python(tmp_path, device, f"export PYTHONPATH={package.parent}")
    remote = remote_options(sshd, device, tmp_path)
    proc = cli("export", ckpt, "-f", "tensorrt", "-o", tmp_path / "trt", "--on", sshd.url(), "--ssh-config",
               sshd.config, "--remote-python", stub, "--remote-dir", remote.remote_dir)
    line = one_line_error(proc)
    assert "device" in line and "built with TensorRT 10.13.0.35" in line and "cannot be verified" in line
    assert not (tmp_path / "trt").exists() and left_on_device(remote) == []
    calls = json.loads(record.read_text())
    assert ["create_network", 1 << 1] in calls  # 10.x: STRONGLY_TYPED is bit 1, no precision flag
    p = make_profile(EXPORT_SIZES, 3, 1)
    assert ["set_shape", INPUT_NAME, list(p.min), list(p.opt), list(p.max)] in calls
    parsed = [c[1] for c in calls if c[0] == "parse"]
    assert len(parsed) == 1 and len(parsed[0]) == len(hashlib.sha256().hexdigest())


def test_export_on_is_for_tensorrt_on_one_device(engines, tmp_path):
    ckpt, _, _ = engines
    with pytest.raises(ScnetDeployError, match="--format tensorrt --on"):
        export_on(ckpt, ExportOptions(output=tmp_path / "x", format="onnx"), ("ssh://a",))
    with pytest.raises(ScnetDeployError, match="--format tensorrt --on"):
        export_on(ckpt, ExportOptions(output=tmp_path / "x", format="tensorrt"), ("ssh://a", "ssh://b"))


@pytest.mark.slow
def test_validate_on_an_emulated_arm64_device(engines, dataset, tmp_path_factory):
    """tests/arm64_device.sh makes an arm64 Debian userland with a torch-free scnet-deploy (qemu-user through
    binfmt_misc); an sshd whose sessions are chrooted into it is the device. The ARM kernels' output is scored here
    against the FP32 PyTorch reference. Emulated: its latency is not a device figure and is not measured."""
    if os.geteuid() != 0:
        pytest.skip("the emulated arm64 device needs root (binfmt_misc, debootstrap, chroot)")
    root = os.environ.get("SCNET_DEPLOY_ARM64_ROOT", "/srv/scnet-deploy-arm64")
    made = subprocess.run(["bash", str(Path(__file__).parent / "arm64_device.sh"), root], capture_output=True,
                          text=True, timeout=3600, env={**os.environ, "PYTHON": sys.executable})
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    ckpt, onnx_dir, _ = engines
    ncnn_dirs = [export(ckpt, ExportOptions(output=tmp_path_factory.mktemp("arm-ncnn") / f"ncnn-{p}", format="ncnn",
                                            precision=p)).directory for p in ("fp32", "fp16")]
    server = start_sshd(tmp_path_factory.mktemp("sshd-arm64"), chroot=root)
    sshd = next(server)
    try:
        result = validate_on([ckpt, onnx_dir, *ncnn_dirs], ValidateOptions(dataset, 4), (sshd.url(),), RemoteOptions(
            "/opt/device/bin/python", ssh_config=sshd.config))
    finally:
        server.close()
    assert result["devices"]["device"]["cpu"]["arch"] == "aarch64"
    rows = [m for m in result["models"] if " @ device" in m["name"]]
    for arm in rows:
        print(f"\narm64 (emulated) {arm['name']} vs FP32 PyTorch here: drift {arm['drift_db']:+.2e} dB, max abs "
              f"diff {arm['max_abs_diff']:.2e}, PSNR vs reference {arm['psnr_vs_reference_db']:.1f} dB")
    onnx_row, ncnn_fp32, ncnn_fp16 = rows
    for arm in (onnx_row, ncnn_fp32):  # ONNX Runtime's and ncnn's ARM kernels, FP32: exact
        assert abs(arm["drift_db"]) < 1e-3 and arm["max_abs_diff"] < 1e-4
    # ncnn fp16 on ARM: fp16 arithmetic where the emulated CPU has it, its own precision with its own drift
    assert abs(ncnn_fp16["drift_db"]) < 0.05 and ncnn_fp16["psnr_vs_reference_db"] > 40


def test_remote_errors_name_the_device():
    assert issubclass(RemoteError, ScnetDeployError)
