"""scnet_deploy/interrupts.py: Ctrl-C and SIGTERM anywhere (inside a library, during an import) exit 130 with one
line, leave nothing half-written, and a rerun succeeds."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import cli, save_basicsr, tiny_model


def _export_patched(tmp_path, body: str) -> subprocess.CompletedProcess:
    """``scnet-deploy export`` under ``python -m`` with the library's ``export``
    replaced by a function whose body is ``body`` (indented lines)."""
    (tmp_path / "patched_cli.py").write_text(
        "import sys\n"
        "import scnet_deploy.export\n"
        "from scnet_deploy.cli import main\n"
        "def export(*args, **kwargs):\n" + body +
        "sys.modules['scnet_deploy.export'].export = export\n"
        "main()\n")
    ckpt = tmp_path / "m.pth"
    if not ckpt.exists():
        save_basicsr(tiny_model(4, "mlp"), ckpt)
    return subprocess.run([sys.executable, "-m", "patched_cli", "export", str(ckpt), "-o", str(tmp_path / "a")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
                                 pytest.param(signal.SIGKILL, marks=pytest.mark.slow)])
def test_interrupted_export_leaves_nothing_and_rerun_succeeds(tmp_path, sig):
    ckpt = save_basicsr(tiny_model(4, "mlp", num_block=4), tmp_path / "m.pth")
    out = tmp_path / "artifact"
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", "export", str(ckpt), "-o", str(out), "--shift",
                             "slice"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".artifact.tmp-*")):
        time.sleep(0.05)  # wait until the export is writing
    assert list(tmp_path.glob(".artifact.tmp-*")), "export never started writing"
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not out.exists()
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and "interrupted" in err and not list(tmp_path.glob(".artifact*")), err[-3000:]
    rerun = cli("export", ckpt, "-o", out)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "m.pth"]


def test_interrupt_inside_library_exec_still_exits_130_with_the_message(tmp_path):
    # Ctrl-C that lands while a library runs code from a string (dataclasses, namedtuple and lazy imports do: exec
    # and eval of strings) sets CPython's "unhandled KeyboardInterrupt" flag even though we handle it; under
    # `python -m` the interpreter then kills itself with SIGINT after our exit(130): exit -2, no message. typer also
    # turns a KeyboardInterrupt into a silent Exit(130). Here the export itself is such a library call.
    for _ in range(3):
        r = _export_patched(tmp_path, "    exec('import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\n"
                                      "time.sleep(30)')\n")
        assert r.returncode == 130 and "interrupted" in r.stderr and "Traceback" not in r.stderr, (r.returncode,
                                                                                                 r.stderr[-2000:])


def test_interrupt_during_an_import_is_delivered_after_it(tmp_path):
    """Ctrl-C inside an import is held until the import is done: raised inside a C extension's initialiser (onnx's
    pybind11 module creating enums) it aborted the process (-6, seen in CI). The imported module here interrupts
    itself and then marks that it finished; the CLI must still exit 130 with its message."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time, pathlib\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.3)\n"
        "pathlib.Path('imported').write_text('done')\n")
    r = _export_patched(tmp_path, "    import slow_module\n    import time\n    time.sleep(30)\n")
    assert r.returncode == 130 and "interrupted" in r.stderr and "Traceback" not in r.stderr, (r.returncode,
                                                                                             r.stderr[-2000:])
    assert (tmp_path / "imported").read_text() == "done"


def test_interrupt_deferred_from_an_import_then_handled_at_once_leaves_no_alarm(tmp_path):
    """The interrupt lands in an import (its re-delivery is armed), then another path handles it at once (as the
    progress display does): the armed re-delivery must be cancelled, or it fires while the interpreter shuts down
    and SIGALRM kills the process (exit -14, seen in CI)."""
    (tmp_path / "quick_module.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n")
    for _ in range(3):
        r = _export_patched(tmp_path, "    import quick_module\n    raise KeyboardInterrupt\n")
        assert r.returncode == 130 and "interrupted" in r.stderr, (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("verb", ["upscale", "pipeline"])
def test_interrupted_upscale_and_pipeline_exit_130_without_traceback(tmp_path, verb):
    ckpt = save_basicsr(tiny_model(4, "mlp", num_block=4), tmp_path / "m.pth")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"
    args = (["upscale", str(ckpt), str(src), "-o", str(out), "--tile", "16"] if verb == "upscale" else
            ["pipeline", str(ckpt), "-o", str(out), "--dataset", str(src), "--formats", "onnx", "--size", "8x8"])
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    done = lambda: [p for p in out.glob("*.png") if not p.name.startswith(".")]  # noqa: E731 (not a temporary)
    while time.time() < deadline and not (done() if verb == "upscale" else list(out.glob("*"))):
        time.sleep(0.05)  # wait until it is working: an output written, or the pipeline's folders made
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]
    if verb == "upscale":  # what was written is complete: every PNG decodes at 4x, no temporary left behind
        written = list(out.iterdir())
        assert written and len(written) < 40 and all(p.suffix == ".png" and not p.name.startswith(".") for p in written)
        for p in written:
            with Image.open(p) as im:
                assert im.size == (384, 384) and np.asarray(im).shape == (384, 384, 3)


@pytest.fixture(scope="module")
def stoppable_engines(tmp_path_factory):
    """A tiny x2 model's engines in the three runtimes here, and one LR array large enough that an inference takes
    seconds."""
    from scnet_deploy.export import ExportOptions, export

    d = tmp_path_factory.mktemp("stoppable")
    export(save_basicsr(tiny_model(2), d / "m_x2.pth"), ExportOptions(output=d / "e", format="onnx,openvino,ncnn"))
    np.savez(d / "big.npz", x=np.random.default_rng(0).random((3, 1400, 1400), dtype=np.float32))
    return d


def _rss_mb(pid: int) -> float:
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("engine, sig", [("onnx", signal.SIGINT), ("openvino", signal.SIGINT), ("ncnn", signal.SIGINT),
                                         ("onnx", signal.SIGTERM), ("ncnn", signal.SIGTERM),
                                         pytest.param("openvino", signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_long_inference_stops_within_a_second(stoppable_engines, engine, sig):
    """Row 2 of issue 38: a run inside a runtime's native code ignored Ctrl-C and SIGTERM until it returned (a Loop
    bomb: forever). Now it is stopped (ONNX Runtime's terminate flag, OpenVINO's cancel) or, where the runtime
    cannot stop (ncnn), abandoned: exit 130 within a second of the signal, nothing written."""
    d = stoppable_engines
    out = d / f"out-{engine}-{sig}.npz"
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", "infer", str(d / "e" / engine), str(d / "big.npz"),
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and _rss_mb(proc.pid) < 700:
        time.sleep(0.02)  # the inference's feature maps are being allocated: it is running
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    time.sleep(0.2)
    t0 = time.monotonic()
    proc.send_signal(sig)
    seen = []
    for line in proc.stderr:  # the run stopped and said so; the interpreter's teardown after it is not the stop
        seen.append(line)
        if "interrupted" in line:
            break
    took = time.monotonic() - t0
    _, rest = proc.communicate(timeout=60)
    err = "".join(seen) + rest
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, (proc.returncode, err[-2000:])
    assert took < 1.0, f"{engine}: {took:.2f} s from the signal to the stop"
    assert not out.exists()
