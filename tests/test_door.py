"""Issue 27: one trust boundary. A hostile device behind a real loopback sshd (tests/hostile_device.py, one per test
session), crafted artifacts and crafted folders: nothing outside is written or read, memory stays bounded, every
failure a user or a device can cause is one line (exit 2), and no input is ever destroyed."""

import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import save_basicsr, smooth_hr_folder, tiny_model
from scnet_deploy.door import ArtifactError, UntrustedInput, check_artifact, clean_text, read_npz
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.remote import parse_device
from scnet_deploy.runtime import open_model

BENCH = r"^/hostile/python -m scnet_deploy bench "


def cli(*args, rss: bool = False, **kw):
    """The CLI in a fresh interpreter; with ``rss``, its peak resident memory (MB) is the last stderr line."""
    if not rss:
        return subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                              timeout=300, **kw)
    code = ("import atexit, resource, runpy, sys; atexit.register(lambda: sys.stderr.write("
            "f'\\nmaxrss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}\\n')); "
            f"sys.argv = ['scnet-deploy', *{[str(a) for a in args]!r}]; runpy.run_module('scnet_deploy', "
            "run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, **kw)


def one_line_error(proc, rss: bool = False) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("maxrss_mb=")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-3000:]
    return lines[0]


def maxrss_mb(proc) -> int:
    return int(proc.stderr.rsplit("maxrss_mb=", 1)[1].split()[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    ckpt = save_basicsr(tiny_model(2, "mlp", num_block=2), d / "tiny_x2.pth")
    result = export(ckpt, ExportOptions(output=d / "eng", format="onnx,openvino"))
    return ckpt, result.artifacts["onnx"], result.artifacts["openvino"]


def nothing_new_outside(before: set, root: Path) -> None:
    assert {p for p in root.rglob("*")} == before


# --- a hostile device ---------------------------------------------------------------------------------------------

def test_a_tar_for_an_answer_writes_nothing_here(hostile, tiny, tmp_path):
    """Row 1: the device answers the result fetch with a tar whose links point at absolute paths of this machine
    (the CVE-2025-4517 family) and a hard link onto a file here: results are never unpacked, so nothing is."""
    canary_dir, target = tmp_path / "canary", tmp_path / "target.txt"
    canary_dir.mkdir()
    target.write_text("untouched")
    crafted = tmp_path / "reply.tar"
    with tarfile.open(crafted, "w") as tar:
        for name, kind, link in (("escape", tarfile.SYMTYPE, str(canary_dir)), ("hard", tarfile.LNKTYPE, str(target)),
                                 ("a" * 200 + "/" + "b" * 200, tarfile.SYMTYPE, "/" + "../" * 40 + str(canary_dir))):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info)
        data = b"pwned"
        for name in ("escape/pwned", "hard", "bench.json"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    hostile.answer([BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "reply", crafted])
    _, onnx_dir, _ = tiny
    args = hostile.args(tmp_path)
    before = set(tmp_path.rglob("*"))
    line = one_line_error(cli("bench", onnx_dir, "--shape", "8x8", "--runs", "1", *args))
    assert "device" in line and "bench result" in line
    assert list(canary_dir.iterdir()) == [] and target.read_text() == "untouched"
    nothing_new_outside(before, tmp_path)


@pytest.mark.parametrize("reply, says", [(b"not json", "not the expected JSON"), (b"[]", "should be an object"),
                                         (b'{"models": [{"name": "x"}], "machine": {}}', "missing"),
                                         (b"[" * 200_000 + b"]" * 200_000, "nested"),
                                         (b'{"models": "\xff\xfe"}', "not UTF-8")])
def test_malformed_device_results_are_one_line_errors(hostile, tiny, tmp_path, reply, says):
    """Rows 4 and 8 (device side): not JSON, a list, missing keys, deep nesting, not UTF-8."""
    from scnet_deploy.bench import BenchOptions, bench

    (tmp_path / "reply").write_bytes(reply)
    hostile.answer([BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "reply", tmp_path / "reply"])
    with pytest.raises(ScnetDeployError) as info:
        bench([tiny[1]], BenchOptions(shapes=((8, 8),), runs=1, baselines=False, on=("ssh://device",),
                                      remote=hostile.remote(tmp_path)))
    message = str(info.value)
    assert "device" in message and says in message and "\n" not in message


def test_oversized_answers_are_cut_at_their_cap_with_memory_bounded(hostile, tiny, tmp_path):
    """Row 3: 4 GB for a bench result (capped at 4 MB), and for doctor (capped at 1 MB): refused, resident memory bounded."""
    hostile.answer([BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "zeros", 4 * 2**30])
    proc = cli("bench", tiny[1], "--shape", "8x8", "--runs", "1", *hostile.args(tmp_path), rss=True)
    assert "more than" in one_line_error(proc) and maxrss_mb(proc) < 1000
    hostile.answer([r"doctor --json$", "zeros", 4 * 2**30])
    proc = cli("bench", tiny[1], "--shape", "8x8", "--runs", "1", *hostile.args(tmp_path), rss=True)
    assert "more than" in one_line_error(proc) and maxrss_mb(proc) < 1000


def _npz(path: Path, entries: dict, compress: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(f"{name}.npy", data)
    return path


def _npy_header(shape, dtype="<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


def test_device_outputs_must_be_the_arrays_that_were_sent(tmp_path):
    """Row 3 (arrays): exactly the names sent, float32 of the expected shape, stored: a compressed bomb, a header
    declaring more than it holds, another dtype, an extra entry are refused before their data is read."""
    expected = {"k": (3, 8, 8)}
    good = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, good)
    ok = _npz(tmp_path / "ok.npz", {"k": buf.getvalue()})
    assert np.array_equal(read_npz(ok, expected, "d")["k"], good)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("k.npy", "w", force_zip64=True) as member:
        member.write(_npy_header((3, 8, 8)))
        for _ in range(256):
            member.write(b"\0" * 2**20)  # 256 MB in about 250 KB
    crafted = {"bomb": bomb,
               "huge header": _npz(tmp_path / "h.npz", {"k": _npy_header((100_000, 100_000, 3)) + b"\0" * 64}),
               "float64": _npz(tmp_path / "d.npz", {"k": _npy_header((3, 8, 8), "<f8") + b"\0" * 1536}),
               "extra": _npz(tmp_path / "e.npz", {"k": buf.getvalue(), "x": buf.getvalue()}),
               "not a zip": tmp_path / "n.npz"}
    crafted["not a zip"].write_bytes(b"PK\x03\x04 nothing")
    for name, path in crafted.items():
        with pytest.raises(UntrustedInput, match="refused|over the"):
            read_npz(path, expected, "device")


def test_validate_on_refuses_a_compressed_bomb_with_memory_bounded(hostile, tiny, tmp_path):
    ckpt, onnx_dir, _ = tiny
    data = smooth_hr_folder(tmp_path / "ds", 1, (24, 20))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("k.npy", "w", force_zip64=True) as member:
        for _ in range(1024):
            member.write(b"\0" * 2**20)  # 1 GB that compresses to 1 MB
    hostile.answer([r"^/hostile/python -m scnet_deploy infer ", "ok", ""],
                   [r"^cat -- .*/m0\.npz'?$", "reply", bomb])
    proc = cli("validate", onnx_dir, "--reference", ckpt, "--dataset", data, "--scale", "2", *hostile.args(tmp_path),
               rss=True)
    assert "device" in one_line_error(proc) and maxrss_mb(proc) < 1000


def test_a_built_engine_comes_back_as_its_files_alone_and_verified(hostile, tiny, tmp_path):
    """Row 2: the device's build leaves `.manifest.json.tmp -> ../X` and `peek -> ../` in the artifact: neither
    comes back, the file beside --output is untouched; an engine without its verification record is refused."""
    ckpt = tiny[0]
    canary = tmp_path / "X"
    canary.write_text("untouched")
    hostile.answer([r"^/hostile/python -m scnet_deploy build-engine ", "build", "links"])
    out = tmp_path / "trt"
    proc = cli("export", ckpt, "-f", "tensorrt", "-o", out, *hostile.args(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert canary.read_text() == "untouched"
    assert sorted(p.name for p in out.iterdir()) == ["build_engine.sh", "manifest.json", "model.onnx", "model.plan",
                                                     "timing.cache"]
    manifest = check_artifact(out)
    assert manifest["verification"]["passed"] and manifest["tensorrt"]["built_on"]["device"] == "device"
    hostile.answer([r"^/hostile/python -m scnet_deploy build-engine ", "build", "unverified"])
    line = one_line_error(cli("export", ckpt, "-f", "tensorrt", "-o", tmp_path / "trt2", *hostile.args(tmp_path)))
    assert "verification" in line and not (tmp_path / "trt2").exists()


def test_escapes_from_a_device_never_reach_the_terminal(hostile, tiny, tmp_path):
    """Row 5: ANSI/OSC sequences in the device's stderr and in what it says it is."""
    hostile.answer([BENCH, "fail", "\x1b]0;owned\x07\x1b[2J\x1b[31merror: boom\x1b[0m\n"])
    proc = cli("bench", tiny[1], "--shape", "8x8", "--runs", "1", *hostile.args(tmp_path))
    assert "boom" in one_line_error(proc) and "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    hostile.answer([BENCH, "bench", ""])
    proc = cli("bench", tiny[1], "--shape", "8x8", "--runs", "1", *hostile.args(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Hostile" in proc.stdout and "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout


def test_a_linked_artifact_ships_the_folder_it_points_to(hostile, tiny, tmp_path):
    """Row 18: `latest -> eng/onnx` given with --on ships the artifact itself (the device checks it has one)."""
    latest = tmp_path / "latest"
    latest.symlink_to(tiny[1], target_is_directory=True)
    hostile.answer([BENCH, "bench", ""])
    proc = cli("bench", latest, "--shape", "8x8", "--runs", "1", *hostile.args(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_crafted_run_directory_and_an_option_for_a_directory_are_refused(hostile, tiny, tmp_path):
    """Row 17 (arguments): mktemp answering something that is not a new directory of ours; --remote-dir -p."""
    (tmp_path / "answer").write_text("/tmp/x; rm -rf ~\n")
    hostile.answer([r"mktemp", "reply", tmp_path / "answer"])
    assert "not a new directory" in one_line_error(
        cli("bench", tiny[1], "--shape", "8x8", "--runs", "1", *hostile.args(tmp_path)))
    hostile.answer()
    args = hostile.args(tmp_path)
    args[args.index("--remote-dir") + 1] = "-p"
    assert "making a run directory" in one_line_error(cli("bench", tiny[1], "--shape", "8x8", "--runs", "1", *args,
                                                          cwd=tmp_path))
    assert not any(p.name.startswith("scnet-deploy.") for p in tmp_path.iterdir())


@pytest.mark.parametrize("url", ["ssh://dev\nice", "ssh://host:0", "ssh://host:65536", "ssh://a;b", "ssh://a b",
                                 "ssh://$(touch x)", "ssh://u$(id)@host", "ssh://-oProxyCommand=x", "ssh://h\x1b]0;x",
                                 "ssh://host:", "ssh://us;er@host", "ssh://%68ost"])
def test_device_urls_are_strict(url):
    """Row 17: control characters, port 0, shell metacharacters in host or user."""
    with pytest.raises(ScnetDeployError) as info:
        parse_device(url)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_device_urls_that_ssh_names_use_are_accepted():
    for url, host, user, port in (("ssh://jetson", "jetson", None, None), ("ssh://me@10.0.0.2:2222", "10.0.0.2",
                                                                            "me", 2222),
                                  ("ssh://ci_runner.lab-1.example.com", "ci_runner.lab-1.example.com", None, None),
                                  ("ssh://root@[::1]:22", "::1", "root", 22)):
        d = parse_device(url)
        assert (d.host, d.user, d.port) == (host, user, port)


def test_clean_text_removes_escapes_and_controls():
    assert clean_text("a\x1b]0;title\x07b\x1b[2Jc\x9b31md\x00e\tf\ng") == "abcde f g"
    assert clean_text("a\nb", newlines=True) == "a\nb"
