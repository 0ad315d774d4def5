"""scnet_deploy/graph_guard.py and the private copy (issue 38, point 2; rows 2, 9, 17): an artifact must be SCNet
before it runs. A graph re-hashed into its manifest with a Loop of 10^12 trips, or an Expand to 2 GB, is refused
in one line before any runtime loads it (ONNX, OpenVINO IR, ncnn param); a file swapped after the check is never
what runs."""

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import save_basicsr, tiny_model
from scnet_deploy.door import ArtifactError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.runtime import open_model


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    d = tmp_path_factory.mktemp("guard")
    export(save_basicsr(tiny_model(2), d / "m_x2.pth"), ExportOptions(output=d / "e", format="onnx,openvino,ncnn"))
    np.savez(d / "x.npz", x=np.random.default_rng(0).random((3, 16, 16), dtype=np.float32))
    return d


def rehashed(artifact: Path, to: Path, change) -> Path:
    """A copy of ``artifact`` altered by ``change(folder)``, its manifest's hashes made to match (as anyone who
    edits an artifact can)."""
    shutil.copytree(artifact, to)
    change(to)
    manifest = json.loads((to / "manifest.json").read_text())
    manifest["files"] = {n: hashlib.sha256((to / n).read_bytes()).hexdigest() for n in manifest["files"]}
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


def _onnx_with(extra: str):
    """A change adding to model.onnx's output a term that is zero but costs: a Loop of 10^12 trips, or an Expand
    to [1024, 1024, 512]."""
    def change(folder: Path) -> None:
        import onnx
        from onnx import TensorProto, helper

        model = onnx.load(folder / "model.onnx")
        graph = model.graph
        out = graph.output[0].name
        graph.node[-1].output[0] = "sr_before"
        if extra == "loop":
            body = helper.make_graph(
                [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                 helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
                [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [])],
                [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [])],
                [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
            # the trip count made from the input's height (x 10^10), so that no converter can fold the Loop away
            graph.initializer.extend([helper.make_tensor("two", TensorProto.INT64, [], [2]),
                                      helper.make_tensor("e10", TensorProto.INT64, [], [10**10]),
                                      helper.make_tensor("true", TensorProto.BOOL, [], [True]),
                                      helper.make_tensor("v0", TensorProto.FLOAT, [], [0.0]),
                                      helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
            graph.node.extend([helper.make_node("Shape", [graph.input[0].name], ["shape"]),
                               helper.make_node("Gather", ["shape", "two"], ["height"]),
                               helper.make_node("Mul", ["height", "e10"], ["trips"]),
                               helper.make_node("Loop", ["trips", "true", "v0"], ["v_final"], body=body),
                               helper.make_node("Mul", ["v_final", "zero"], ["nothing"]),
                               helper.make_node("Add", ["sr_before", "nothing"], [out])])
        else:
            graph.initializer.extend([helper.make_tensor("big", TensorProto.INT64, [3], [1024, 1024, 512]),
                                      helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                                      helper.make_tensor("s0", TensorProto.INT64, [3], [0, 0, 0]),
                                      helper.make_tensor("s1", TensorProto.INT64, [3], [1, 1, 1])])
            graph.node.extend([helper.make_node("Expand", ["zero", "big"], ["huge"]),
                               helper.make_node("Slice", ["huge", "s0", "s1"], ["corner"]),
                               helper.make_node("Add", ["sr_before", "corner"], [out])])
        onnx.save(model, folder / "model.onnx")
    return change


def _infer(artifact: Path, engines: Path, tmp_path: Path, *extra):
    return subprocess.run([sys.executable, "-m", "scnet_deploy", "infer", str(artifact), str(engines / "x.npz"),
                           "-o", str(tmp_path / "out.npz"), *extra], capture_output=True, text=True, timeout=60)


def test_a_loop_bomb_is_refused_before_it_runs(engines, tmp_path):
    """Row 2: it ran forever and ignored SIGINT and SIGTERM."""
    bomb = rehashed(engines / "e" / "onnx", tmp_path / "bomb", _onnx_with("loop"))
    t0 = time.monotonic()
    proc = _infer(bomb, engines, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "['Loop'" in proc.stderr and "operators no SCNet export has" in proc.stderr
    assert time.monotonic() - t0 < 30 and not (tmp_path / "out.npz").exists()


def test_an_expand_to_gigabytes_is_refused_whatever_the_memory_limit(engines, tmp_path):
    """Row 9: the memory model trusted the manifest's arch; 4.41 GB peak under --max-memory 100."""
    bomb = rehashed(engines / "e" / "onnx", tmp_path / "expand", _onnx_with("expand"))
    proc = _infer(bomb, engines, tmp_path, "--max-memory", "100")
    assert proc.returncode == 2 and "536870912 elements" in proc.stderr and "Traceback" not in proc.stderr, \
        proc.stderr


def test_the_same_bombs_as_openvino_ir_are_refused(engines, tmp_path):
    import openvino as ov

    def change(folder: Path) -> None:
        onnx_copy = tmp_path / "loop.onnx"
        src = rehashed(engines / "e" / "onnx", tmp_path / "src", _onnx_with("loop"))
        shutil.copy(src / "model.onnx", onnx_copy)
        ov.save_model(ov.convert_model(str(onnx_copy)), str(folder / "model.xml"))

    bomb = rehashed(engines / "e" / "openvino", tmp_path / "ov", change)
    with pytest.raises(ArtifactError, match=r"\['Loop'\]"):
        open_model(bomb)


@pytest.mark.parametrize("edit, says", [
    (lambda text: text.replace("Input ", "Reshape ", 1), "'Reshape'"),
    (lambda text: text + "Padding pad_bomb 1 1 in0 padded 0=100000 1=100000\n", "cannot be worked out"),
])
def test_ncnn_params_that_are_not_scnet_are_refused(engines, tmp_path, edit, says):
    def change(folder: Path) -> None:
        param = folder / "model.ncnn.param"
        param.write_text(edit(param.read_text()))

    bomb = rehashed(engines / "e" / "ncnn", tmp_path / "ncnn", change)
    with pytest.raises(ArtifactError, match=says):
        open_model(bomb)


@pytest.mark.parametrize("engine", ["onnx", "openvino", "ncnn"])
def test_the_exported_engines_pass(engines, engine):
    with open_model(engines / "e" / engine) as runner:
        assert runner.infer(np.zeros((3, 8, 8), np.float32)).shape == (3, 16, 16)


def test_a_file_swapped_after_the_check_never_runs(engines, tmp_path):
    """Row 17: a model file swapped every 2 ms between the hashed bytes and another model: 3 of 25 upscales ran the
    unhashed model (runtimes reopened the path after hashing). Now the runtime loads the private copy that was
    hashed: each run is refused (the hash) or runs the hashed model, never the other."""
    other = tmp_path / "other"
    export(save_basicsr(tiny_model(2, num_block=1), tmp_path / "o_x2.pth"), ExportOptions(output=other))
    art = tmp_path / "swapped"
    shutil.copytree(engines / "e" / "onnx", art)
    good, bad = (art / "model.onnx").read_bytes(), (other / "model.onnx").read_bytes()
    x = np.random.default_rng(1).random((3, 8, 8), dtype=np.float32)
    with open_model(art) as runner:
        expected = runner.infer(x)
    (tmp_path / "good").write_bytes(good)
    (tmp_path / "bad").write_bytes(bad)
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            for name in ("bad", "good"):
                shutil.copy(tmp_path / name, tmp_path / "next")
                (tmp_path / "next").replace(art / "model.onnx")
                time.sleep(0.002)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    ran, refused = 0, 0
    try:
        for _ in range(25):
            try:
                with open_model(art) as runner:
                    time.sleep(0.01)  # the window in which a runtime that reopens the path would read the other file
                    out = runner.infer(x)
                    if runner.parts() is not None:  # the split graph is read from the file again
                        body, tail = runner.parts()
                        out_split = tail(body(x[None]), x[None])[0]
                        np.testing.assert_allclose(out_split, expected, atol=1e-5)
            except ArtifactError:
                refused += 1
                continue
            np.testing.assert_allclose(out, expected, atol=1e-5)
            ran += 1
    finally:
        stop.set()
        swapper.join()
    assert ran + refused == 25 and ran > 0, (ran, refused)


def test_the_private_copy_is_removed_with_the_runner(engines):
    import gc
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("scnet-deploy-artifact-*"))
    runner = open_model(engines / "e" / "onnx")
    made = set(Path(tempfile.gettempdir()).glob("scnet-deploy-artifact-*")) - before
    assert len(made) == 1 and (next(iter(made)).stat().st_mode & 0o777) == 0o700
    del runner
    gc.collect()
    assert not any(p.exists() for p in made)


def test_ncnn_own_messages_come_through_ours(engines, tmp_path):
    """Row 19 of issue 38: ncnn's own stderr lines reached the terminal raw, ahead of ours. A param ncnn cannot read
    is now one line of ours that carries ncnn's reason, cleaned."""
    def change(folder: Path) -> None:
        param = folder / "model.ncnn.param"
        lines = param.read_text().split("\n")
        lines[1] = "\x1b]52;c;b3duZWQ=\x07 9999 9999"  # an escape and a layer count ncnn cannot meet
        param.write_text("\n".join(lines))

    broken = rehashed(engines / "e" / "ncnn", tmp_path / "broken", change)
    proc = _infer(broken, engines, tmp_path)
    assert proc.returncode == 2 and "\x1b" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith(("warning:", "error:")) for line in lines), proc.stderr  # nothing raw from ncnn
    assert "ncnn could not load" in lines[-1] and "layer_count" in lines[-1]


def test_a_checked_graph_is_remembered_by_its_bytes_only(engines, tmp_path, monkeypatch):
    """The verdict is kept per sha256 of the files: the same bytes skip the reading next time; a re-hashed bomb
    has other hashes and is read (and refused) whatever was remembered before."""
    from scnet_deploy import graph_guard
    from scnet_deploy.exporters.onnxruntime import runtime as ort_runtime

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reads = []
    real = ort_runtime.graph_facts
    monkeypatch.setattr(ort_runtime, "graph_facts", lambda *a: reads.append(1) or real(*a))
    for _ in range(2):
        with open_model(engines / "e" / "onnx"):
            pass
    assert len(reads) == 1 and len(list((tmp_path / "cache" / "scnet-deploy" / "graph-checks").iterdir())) == 1
    bomb = rehashed(engines / "e" / "onnx", tmp_path / "bomb", _onnx_with("loop"))
    with pytest.raises(ArtifactError, match="Loop"):
        open_model(bomb)
    assert len(reads) == 2
    assert graph_guard.GUARD_VERSION >= 1
