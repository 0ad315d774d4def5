"""scnet_deploy/door.py: one trust boundary. A hostile device behind a real loopback sshd (tests/hostile_device.py,
one per test session), crafted artifacts and manifests; each answer refused in one line, nothing written here."""

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

from conftest import cli, one_line_error, save_basicsr, smooth_hr_folder, tiny_model
from scnet_deploy.devices.fleet import bench_on, export_on, validate_on
from scnet_deploy.devices.ssh import parse_device
from scnet_deploy.door import ArtifactError, check_artifact, clean_text, read_npz, UntrustedInput
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.runtime import open_model


BENCH = r"^/hostile/python -m scnet_deploy bench "


def refused_within(limit_mb: int, call, match: str) -> str:
    """``call()`` raises a one-line ScnetDeployError matching ``match`` while Python's allocations (numpy's
    included) peak under ``limit_mb`` above where they started."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ScnetDeployError, match=match) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_mb * 2**20 and "\n" not in str(info.value), (peak, str(info.value))
    return str(info.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    ckpt = save_basicsr(tiny_model(2, "mlp", num_block=2), d / "tiny_x2.pth")
    result = export(ckpt, ExportOptions(output=d / "eng", format="onnx,openvino"))
    return ckpt, result.artifacts["onnx"], result.artifacts["openvino"]


def nothing_new_outside(before: set, root: Path) -> None:
    assert {p for p in root.rglob("*")} == before


def _npz(path: Path, entries: dict, compress: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(f"{name}.npy", data)
    return path


def _npy_header(shape, dtype="<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": dtype, "fortran_order": False, "shape": shape})
    return out.getvalue()


class Opens:
    """Paths this process opens (an audit hook, installed once: hooks cannot be removed)."""
    seen: list = []
    installed = False

    @classmethod
    def watch(cls) -> list:
        if not cls.installed:
            sys.addaudithook(lambda event, args: cls.seen.append(str(args[0])) if event == "open" and args
                             and isinstance(args[0], (str, bytes, os.PathLike)) else None)
            cls.installed = True
        cls.seen.clear()
        return cls.seen


def _with_manifest(artifact: Path, copy: Path, **changes) -> Path:
    import shutil

    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(changes)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


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
    line = one_line_error(cli("bench", onnx_dir, "--size", "8x8", "--runs", "1", *args))
    assert "device" in line and "bench result" in line
    assert list(canary_dir.iterdir()) == [] and target.read_text() == "untouched"
    nothing_new_outside(before, tmp_path)


@pytest.mark.parametrize("reply, says", [(b"not json", "not the expected JSON"),
                                         (b'{"models": [{"name": "x"}], "machine": {}}', "missing"),
                                         (b"[" * 200_000 + b"]" * 200_000, "nested")])
def test_malformed_device_results_are_one_line_errors(hostile, tiny, tmp_path, reply, says):
    """Rows 4 and 8 (device side): not JSON, missing keys, deep nesting (the other shapes: below, without ssh)."""
    from scnet_deploy.bench import BenchOptions

    (tmp_path / "reply").write_bytes(reply)
    hostile.answer([BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "reply", tmp_path / "reply"])
    with pytest.raises(ScnetDeployError) as info:
        bench_on([tiny[1]], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), ("ssh://device",),
                 hostile.remote(tmp_path))
    message = str(info.value)
    assert "device" in message and says in message and "\n" not in message


@pytest.mark.parametrize("reply, says", [(b"[]", "should be an object"), (b'{"models": "\xff\xfe"}', "not UTF-8"),
                                         (b'{"models": [], "machine": {"cpu": 3}}', "should be an object"),
                                         (b'{"models": [{"name": "x", "precision": "fp32", "shapes": [{"shape": '
                                          b'[1, 2, 3], "median_ms": 1}]}], "machine": {}}', "list of 2 items")])
def test_device_results_are_schema_checked(reply, says):
    from scnet_deploy.door import parse_json
    from scnet_deploy.devices.remote import BENCH_RESULT

    with pytest.raises(UntrustedInput, match=says):
        parse_json(reply, "device: its bench result", BENCH_RESULT)


def test_oversized_answers_are_cut_at_their_cap_with_memory_bounded(hostile, tiny, tmp_path):
    """Row 3: 4 GB for a bench result (capped at 4 MB), and for doctor (capped at 1 MB): refused, memory bounded."""
    from scnet_deploy.bench import BenchOptions

    options, remote = BenchOptions(shapes=((8, 8),), runs=1, baselines=False), hostile.remote(tmp_path)
    hostile.answer([BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "zeros", 4 * 2**30])
    assert "device" in refused_within(64, lambda: bench_on([tiny[1]], options, ("ssh://device",), remote),
                                      "more than 4194304 bytes")
    hostile.answer([r"doctor --json$", "zeros", 4 * 2**30])
    assert "device" in refused_within(64, lambda: bench_on([tiny[1]], options, ("ssh://device",), remote),
                                      "more than 1048576 bytes")


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
    from scnet_deploy.validate import ValidateOptions

    ckpt, onnx_dir, _ = tiny
    data = smooth_hr_folder(tmp_path / "ds", 1, (24, 20))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("k.npy", "w", force_zip64=True) as member:
        for _ in range(256):
            member.write(b"\0" * 2**20)  # 256 MB that compress to 250 KB
    hostile.answer([r"^/hostile/python -m scnet_deploy infer ", "ok", ""],
                   [r"^cat -- .*/m0\.npz'?$", "reply", bomb])
    options, remote = ValidateOptions(datasets=(str(data),), scale=2, reference=ckpt), hostile.remote(tmp_path)
    assert "device" in refused_within(100, lambda: validate_on([onnx_dir], options, ("ssh://device",), remote),
                                      "refused|over the")


def test_a_built_engine_comes_back_as_its_files_alone_and_verified(hostile, tiny, tmp_path):
    """Row 2: the device's build leaves `.manifest.json.tmp -> ../X` and `peek -> ../` in the artifact: neither
    comes back, the file beside --output is untouched; an engine without its verification record is refused."""
    ckpt = tiny[0]
    canary = tmp_path / "X"
    canary.write_text("untouched")
    hostile.answer([r"^/hostile/python -m scnet_deploy build-engine ", "build", "links"])
    out = tmp_path / "trt"
    export_on(ckpt, ExportOptions(output=out, format="tensorrt"), ("ssh://device",), hostile.remote(tmp_path))
    assert canary.read_text() == "untouched"
    assert sorted(p.name for p in out.iterdir()) == ["build_engine.sh", "manifest.json", "model.onnx", "model.plan",
                                                     "timing.cache"]
    manifest = check_artifact(out)
    assert manifest["verification"]["passed"] and manifest["tensorrt"]["built_on"]["device"] == "device"
    hostile.answer([r"^/hostile/python -m scnet_deploy build-engine ", "build", "unverified"])
    with pytest.raises(ScnetDeployError, match="verification") as info:
        export_on(ckpt, ExportOptions(output=tmp_path / "trt2", format="tensorrt"), ("ssh://device",),
                  hostile.remote(tmp_path))
    assert "\n" not in str(info.value) and not (tmp_path / "trt2").exists()


def test_escapes_from_a_device_never_reach_the_terminal(hostile, tiny, tmp_path):
    """Row 5: ANSI/OSC sequences in the device's stderr and in what it says it is."""
    hostile.answer([BENCH, "fail", "\x1b]0;owned\x07\x1b[2J\x1b[31merror: boom\x1b[0m\n"])
    proc = cli("bench", tiny[1], "--size", "8x8", "--runs", "1", *hostile.args(tmp_path))
    assert "boom" in one_line_error(proc) and "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    from scnet_deploy.bench import BenchOptions

    hostile.answer([BENCH, "bench", ""])
    result = bench_on([tiny[1]], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), ("ssh://device",),
                      hostile.remote(tmp_path))
    assert result["devices"]["device"]["machine"]["cpu"]["model"] == "Hostile CPU"  # as it reaches the table


def test_a_linked_artifact_ships_the_folder_it_points_to(hostile, tiny, tmp_path):
    """Row 18: `latest -> eng/onnx` given with --on ships the artifact itself (the device checks it has one)."""
    latest = tmp_path / "latest"
    latest.symlink_to(tiny[1], target_is_directory=True)
    from scnet_deploy.bench import BenchOptions

    hostile.answer([BENCH, "bench", ""])  # refuses (as a device would) unless m0/manifest.json is a regular file
    result = bench_on([latest], BenchOptions(shapes=((8, 8),), runs=1, baselines=False), ("ssh://device",),
                      hostile.remote(tmp_path))
    assert result["table"][0]["median_ms"] == {"device": 1.5}


def test_a_crafted_run_directory_and_an_option_for_a_directory_are_refused(hostile, tiny, tmp_path):
    """Row 17 (arguments): mktemp answering something that is not a new directory of ours; --remote-dir -p."""
    (tmp_path / "answer").write_text("/tmp/x; rm -rf ~\n")
    hostile.answer([r"mktemp", "reply", tmp_path / "answer"])
    assert "not a new directory" in one_line_error(
        cli("bench", tiny[1], "--size", "8x8", "--runs", "1", *hostile.args(tmp_path)))
    hostile.answer()
    args = hostile.args(tmp_path)
    args[args.index("--remote-dir") + 1] = "-p"
    assert "making a run directory" in one_line_error(cli("bench", tiny[1], "--size", "8x8", "--runs", "1", *args,
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


def test_manifest_files_outside_the_artifact_are_never_read(tiny, tmp_path):
    """Row 6: `files` naming ../../x (with its right hash: a hash oracle), an absolute path, a folder, /dev/zero,
    and a FIFO in the folder: refused before anything is opened or hashed."""
    import hashlib

    _, onnx_dir, _ = tiny
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    files = json.loads((onnx_dir / "manifest.json").read_text())["files"]
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    for i, name in enumerate(["../secret.txt", str(secret), "/dev/zero", "sub", "./model.onnx", "a//b"]):
        copy = _with_manifest(onnx_dir, tmp_path / f"c{i}", files={**files, name: digest})
        (copy / "sub").mkdir()
        opened = Opens.watch()
        with pytest.raises(ArtifactError) as info:
            open_model(copy)
        assert "\n" not in str(info.value)
        assert not any(p.endswith("secret.txt") or p == "/dev/zero" for p in opened), opened
    fifo = tmp_path / "fifo"
    _with_manifest(onnx_dir, fifo)
    os.mkfifo(fifo / "model.bin")
    with pytest.raises(ArtifactError, match="not a regular file"):
        open_model(fifo)


def test_every_file_an_engine_reads_is_listed_and_hashed(tiny, tmp_path):
    """Row 7: model.onnx tampered and dropped from `files` while another file stays listed; OpenVINO's .bin
    unlisted; an extra file; a link inside: refused before a parser sees a byte."""
    _, onnx_dir, ov_dir = tiny
    files = json.loads((onnx_dir / "manifest.json").read_text())["files"]
    (tmp_path / "other").write_bytes(b"x")
    import hashlib

    tampered = _with_manifest(onnx_dir, tmp_path / "t", files={"other": hashlib.sha256(b"x").hexdigest()})
    (tampered / "other").write_bytes(b"x")
    (tampered / "model.onnx").write_bytes(b"\x08garbage")
    with pytest.raises(ArtifactError, match="does not list|not list"):
        open_model(tampered)
    ov_files = json.loads((ov_dir / "manifest.json").read_text())["files"]
    unlisted = _with_manifest(ov_dir, tmp_path / "ov", files={"model.xml": ov_files["model.xml"]})
    with pytest.raises(ArtifactError, match="does not list"):
        open_model(unlisted)
    extra = _with_manifest(onnx_dir, tmp_path / "extra", files=files)
    (extra / "model.onnx.data").write_bytes(b"\0" * 16)
    with pytest.raises(ArtifactError, match="does not list"):
        open_model(extra)
    linked = _with_manifest(onnx_dir, tmp_path / "linked", files=files)
    (linked / "peek").symlink_to("../")
    with pytest.raises(ArtifactError, match="is a link"):
        open_model(linked)
    assert check_artifact(onnx_dir)["backend"] == "onnxruntime"


def test_onnx_external_data_outside_the_artifact_is_refused_by_the_runtime(tiny, tmp_path):
    """Row 7 (external data): a graph whose weight lives in ../secret.bin, listed and hashed: ONNX Runtime >= 1.24.1
    refuses the path; the user gets one line."""
    import hashlib

    import onnx
    from onnx import TensorProto

    _, onnx_dir, _ = tiny
    copy = _with_manifest(onnx_dir, tmp_path / "ext")
    model = onnx.load(str(copy / "model.onnx"))
    weight = model.graph.initializer[0]
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    for key, value in (("location", "../secret.bin"), ("offset", "0"),
                       ("length", str(4 * int(np.prod(weight.dims))))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4 * int(np.prod(weight.dims)))
    onnx.save(model, str(copy / "model.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = hashlib.sha256((copy / "model.onnx").read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    line = one_line_error(cli("bench", copy, "--size", "8x8", "--runs", "1", "--no-baselines"))
    assert "cannot load" in line


@pytest.mark.parametrize("text", [b'{"backend": "onnxrunt', b"[1, 2]", b"[" * 200_000 + b"]" * 200_000,
                                  b'{"backend": "\xff\xfe"}', b'{"backend": 3}', b'{"files": [1]}',
                                  b'{"size_range": "x"}', b'{"autotune": {"tile": "big"}}', b'{"arch": []}',
                                  b'{"files": {"model.onnx": "00"}}'])
def test_malformed_manifests_are_one_line_errors(tiny, tmp_path, text):
    """Row 8: truncated, a list, 200k-deep nesting, not UTF-8, fields of the wrong type."""
    _, onnx_dir, _ = tiny
    copy = _with_manifest(onnx_dir, tmp_path / "m")
    good = json.loads((copy / "manifest.json").read_text())
    if text.startswith(b'{"') and text.endswith(b"}") and b"\xff" not in text:
        text = json.dumps({**good, **json.loads(text)}).encode()
    (copy / "manifest.json").write_bytes(text)
    with pytest.raises(ArtifactError) as info:
        open_model(copy)
    assert "\n" not in str(info.value)


def test_a_malformed_manifest_on_the_command_line_is_one_line(tiny, tmp_path):
    _, onnx_dir, _ = tiny
    copy = _with_manifest(onnx_dir, tmp_path / "m")
    (copy / "manifest.json").write_bytes(b"[" * 200_000)
    assert "manifest.json" in one_line_error(cli("bench", copy, "--size", "8x8", "--runs", "1", "--no-baselines"))
    (copy / "manifest.json").write_bytes(b"{}" + b" " * (5 * 2**20))
    assert "limit" in one_line_error(cli("bench", copy, "--size", "8x8", "--runs", "1", "--no-baselines"))


def test_loading_and_running_each_backend_opens_no_socket(tiny, tmp_path):
    """Row 19: an audit hook on socket.connect/getaddrinfo around importing the package and loading and running each
    backend here; OpenVINO's telemetry package is never imported, and its files never written in the user's home."""
    _, onnx_dir, ov_dir = tiny
    code = f"""
import sys
events = []
sys.addaudithook(lambda e, a: events.append(e) if e.split('.')[0] == 'socket' and e not in ('socket.__new__',
                 'socket.bind') else None)
import numpy as np
import scnet_deploy
from scnet_deploy.runtime import open_model
for path in {[str(onnx_dir), str(ov_dir)]!r}:
    with open_model(path) as runner:
        runner.infer(np.zeros((1, 3, 8, 8), np.float32))
import openvino
import time
time.sleep(1)
print(events, sys.modules.get("openvino_telemetry"))
"""
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(home)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]", "None"] and not (home / "intel").exists()  # OpenVINO telemetry's files


def test_dependency_floors_carry_their_reasons():
    """Row 20: torch >= 2.6 (CVE-2025-32434), onnxruntime at the first release that refuses external data outside
    the model folder; each with its reason beside it."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    torch_line = next(line for line in text.splitlines() if line.strip().startswith('"torch>='))
    ort_line = next(line for line in text.splitlines() if line.strip().startswith('"onnxruntime>='))
    assert '"torch>=2.6"' in torch_line and "CVE-2025-32434" in torch_line
    assert '"onnxruntime>=1.24.1"' in ort_line and "external data" in ort_line


# --- every byte shown is clean (issue 38, point 4) --------------------------------------------------------------

def _device_bench_reply(tmp_path: Path, median, precision="fp32", cpu="AMD", cores=2, arch='"x86_64"') -> list:
    """Rules for a device whose bench result (fetched by `cat`) carries ``median``, ``precision`` and its CPU as
    given (the JSON written raw: a 401-digit integer or NaN as they stand)."""
    crafted = tmp_path / "bench.json"
    crafted.write_text('{"models": [{"name": "m0: onnxruntime", "path": "m0", "backend": "onnxruntime", '
                       f'"precision": {json.dumps(precision)}, "baseline": false, '
                       f'"shapes": [{{"shape": [8, 8], "median_ms": {median}}}]}}], '
                       f'"machine": {{"cpu": {{"model": {json.dumps(cpu)}, "cores": {cores}, "arch": {arch}}}, '
                       '"gpus": [], "os": "Linux", "versions": {}}}')
    return [[BENCH, "bench", ""], [r"^cat -- .*/bench\.json'?$", "reply", crafted]]


@pytest.mark.parametrize("median", ["1" * 401, "NaN", "Infinity", "-5", "1e308"])
def test_a_devices_timing_is_bounded_by_its_schema(hostile, tiny, tmp_path, median):
    """Issue 38, rows 5 and 14: a 401-digit integer, NaN, Infinity, a negative or an absurd median from a device is
    a schema error, one line, exit 2, never a traceback (an OverflowError before)."""
    hostile.answer(*_device_bench_reply(tmp_path, median))
    proc = cli("bench", tiny[1], "--size", "8x8", "--runs", "1", *hostile.args(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "median_ms should be a finite number" in one_line_error(proc)


def test_markup_and_escapes_from_a_device_are_shown_as_text(hostile, tiny, tmp_path):
    """Issue 38, rows 6 and 15: a precision of `[/oops]` (a rich MarkupError before) or `[link=...]` (an OSC 8
    hyperlink before), and ESC sequences in its CPU name, reach the table as plain text."""
    hostile.answer(*_device_bench_reply(tmp_path, "1.5", precision="[link=https://example.invalid]fp32[/link][/oops]",
                                        cpu="Evil \x1b]52;c;b3duZWQ=\x07CPU"))
    proc = cli("bench", tiny[1], "--size", "8x8", "--runs", "1", *hostile.args(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "\x1b]8" not in out and "\x1b]52" not in out and "\x07" not in out and "Traceback" not in out
    assert "[link=https://example.invalid]fp32" in " ".join(out.split())  # the text as it was, not a link


def test_a_devices_doctor_with_an_absurd_core_count_or_a_nan_arch_is_refused(hostile, tiny, tmp_path):
    """Issue 38, row 15: the device's own description is checked against its schema before it is recorded."""
    import shutil

    for bad in ('"cores": ' + "9" * 400, '"arch": NaN'):
        doctor = json.loads(hostile.doctor.read_text())
        text = json.dumps(doctor)
        key = bad.split(":")[0]
        text = text.replace(f'{key}: {json.dumps(doctor["cpu"][key.strip(chr(34))])}', bad, 1)
        crafted = tmp_path / "doctor.json"
        crafted.write_text(text)
        saved = tmp_path / "saved_doctor.json"
        shutil.copy(hostile.doctor, saved)
        shutil.copy(crafted, hostile.doctor)
        try:
            hostile.answer([BENCH, "bench", ""])
            proc = cli("bench", tiny[1], "--size", "8x8", "--runs", "1", *hostile.args(tmp_path))
        finally:
            shutil.copy(saved, hostile.doctor)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "doctor" in one_line_error(proc) and "refused" in one_line_error(proc)


def test_file_names_with_escapes_are_printed_clean(tmp_path, tiny):
    """Issue 38, row 7: upscale's per-file lines name files whose names hold ESC sequences (an OSC 52 clipboard
    write among them), a newline and undecodable bytes: none of it reaches the terminal raw."""
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    names = ["clip\x1b]52;c;b3duZWQ=\x07.png", "clear\x1b[2J.png", "two\nlines.png"]
    for name in names:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / name)
    raw = os.fsencode(src) + b"/bad\xff\xfe.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(raw.decode("utf-8", "surrogateescape"))
    proc = cli("upscale", tiny[1], src, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "\x1b" not in out and "\x07" not in out and "4 upscaled" in out


def test_json_written_is_json_and_csv_cells_are_never_formulas(tmp_path):
    """Issue 38, row 14: results written hold no NaN or Infinity (null, with the reason by path), and a CSV cell a
    spreadsheet would run as a formula is text."""
    from scnet_deploy.cli.groups import Outputs
    from scnet_deploy.cli.output import write_outputs

    result = {"models": [{"name": "=HYPERLINK(\"http://x\")", "psnr": float("inf"), "drift": float("nan"),
                          "ms": 1.5}]}
    write_outputs(result, Outputs(tmp_path / "r.json", tmp_path / "r.csv"),
                  [("model", "ms"), ("=HYPERLINK(\"http://x\")", -1.5), ("@SUM(A1)", 2.0), ("+cmd", 3.0)])
    text = (tmp_path / "r.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON written"))
    assert data["models"][0]["psnr"] is None and data["null_reasons"] == {"models[0].psnr": "Infinity",
                                                                          "models[0].drift": "NaN"}
    import csv

    rows = list(csv.reader((tmp_path / "r.csv").read_text().splitlines()))
    assert rows[1] == ["'=HYPERLINK(\"http://x\")", "-1.5"] and rows[2][0] == "'@SUM(A1)" and rows[3][0] == "'+cmd"
