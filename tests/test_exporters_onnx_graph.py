"""exporters/onnx_graph.py: checkpoint -> verified ONNX: dynamic shapes, no ScatterND, node budgets, opsets,
exporters, verification failure, byte-identical output across runs and processes."""

import json

import numpy as np
import onnx
import pytest
import torch

from conftest import cli, FIXTURES, need, save_basicsr, tiny_model
from scnet_deploy.errors import ExportError, VerificationError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters import onnx_graph
from scnet_deploy.exporters.onnx_graph import build_onnx, histogram, OnnxOptions, ort_session


def run(path, x: np.ndarray) -> np.ndarray:
    return ort_session(path).run(["sr"], {"lr": x})[0]


def test_same_inputs_give_same_bytes(tiny, tmp_path):
    ckpt, _ = tiny
    a = export(ckpt, ExportOptions(output=tmp_path / "a")).manifest
    b = export(ckpt, ExportOptions(output=tmp_path / "b")).manifest
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    for m in (a, b):
        m["onnx"].pop("seconds")  # timings are the only thing allowed to differ
    assert a == b


@pytest.mark.slow  # 18 s: two exports in fresh processes; same-process determinism is in the default run
def test_onnx_is_byte_identical_across_processes(tmp_path):
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    for name in ("a", "b"):
        r = cli("export", ckpt, "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


@pytest.mark.parametrize("shift", ["slice", "dwconv"])
def test_export_runs_at_any_size_and_matches_pytorch(tmp_path, shift):
    model = tiny_model(4, "mlp")
    result = build_onnx(model, OnnxOptions(shift=shift), tmp_path / "m.onnx")
    assert result.verification["passed"] and result.verification["max_abs_diff"] <= 1e-4
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in graph.graph.input] == ["lr"] and [o.name for o in graph.graph.output] == ["sr"]
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert "ScatterND" not in histogram(graph)
    for b, h, w in [(1, 1, 1), (3, 5, 2), (1, 31, 7)]:
        x = np.random.default_rng(h).random((b, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = run(tmp_path / "m.onnx", x)
        assert got.shape == (b, 3, 4 * h, 4 * w)
        assert np.abs(got - expected).max() <= 1e-4


def test_a_slice_form_reuses_its_dwconv_forms_export_and_writes_the_same_bytes(tmp_path, monkeypatch):
    model = tiny_model(4, "mlp", num_block=2)
    build_onnx(model, OnnxOptions(shift="slice"), tmp_path / "alone.onnx")  # its own export
    exports, calls = {}, []
    real = onnx_graph.torch_to_onnx
    monkeypatch.setattr(onnx_graph, "torch_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    for shift in ("dwconv", "slice", "dwconv"):
        build_onnx(model, OnnxOptions(shift=shift), tmp_path / f"{shift}.onnx", exports=exports)
    assert len(calls) == 1 and len(exports) == 1  # one export served the dwconv form, the slice form, dwconv again
    assert (tmp_path / "slice.onnx").read_bytes() == (tmp_path / "alone.onnx").read_bytes()
    assert "Slice" in histogram(onnx.load(str(tmp_path / "slice.onnx")))


@pytest.mark.parametrize("shift,budget", [("slice", 14), ("dwconv", 5)])
def test_nodes_per_residual_block_after_simplification(tmp_path, shift, budget):
    counts = []
    for blocks in (2, 3):
        result = build_onnx(tiny_model(2, "pixelshuffle", num_block=blocks), OnnxOptions(shift=shift),
                            tmp_path / f"{blocks}.onnx")
        counts.append(sum(result.nodes_after.values()))
    assert counts[1] - counts[0] <= budget


def test_rewrite_removes_the_scatternd_of_the_official_shift(tmp_path):
    from scnet_deploy.exporters.onnx_graph import torch_to_onnx

    model = tiny_model(2, "pixelshuffle", num_block=1)
    naive = histogram(torch_to_onnx(model, OnnxOptions(exporter="torchscript")))  # the official form, as-is
    assert naive.get("ScatterND", 0) > 0
    result = build_onnx(model, OnnxOptions(exporter="torchscript"), tmp_path / "m.onnx")
    assert "ScatterND" not in result.nodes_after and "ScatterND" not in result.nodes_before


@pytest.mark.parametrize("exporter,opset", [("dynamo", 18), ("dynamo", 17), ("torchscript", 17), ("torchscript", 18)])
def test_exporters_and_opsets(tmp_path, exporter, opset):
    result = build_onnx(tiny_model(3, "mlp", num_block=1), OnnxOptions(exporter=exporter, opset=opset),
                        tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert graph.opset_import[0].version == opset
    onnx.checker.check_model(graph, full_check=True)
    assert result.verification["passed"]


def test_default_opset_is_18_with_dynamo():
    assert OnnxOptions().resolved_opset() == 18 and OnnxOptions().exporter == "dynamo"
    assert OnnxOptions().shift == "dwconv"


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(ExportError, match="17, 18"):
        build_onnx(tiny_model(), OnnxOptions(opset=11), tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="dynamo"):
        build_onnx(tiny_model(), OnnxOptions(exporter="tf"), tmp_path / "m.onnx")


def test_verification_failure_is_loud_and_leaves_nothing(tmp_path, monkeypatch):
    ckpt = save_basicsr(tiny_model(4), tmp_path / "m.pth")
    real = onnx_graph.torch_to_onnx

    def broken_export(module, options, in_ch=3):
        with torch.no_grad():
            module.conv_last.bias.add_(0.01)  # the exported graph no longer matches the checkpoint
        return real(module, options, in_ch)

    monkeypatch.setattr(onnx_graph, "torch_to_onnx", broken_export)
    out = tmp_path / "artifact"
    with pytest.raises(VerificationError, match="does not match PyTorch"):
        export(ckpt, ExportOptions(output=out))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]


def test_export_writes_model_and_manifest(tmp_path):
    ckpt = save_basicsr(tiny_model(4, "pixelshuffle"), tmp_path / "m.pth")
    out = tmp_path / "artifact"
    result = export(ckpt, ExportOptions(output=out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert manifest["checkpoint"]["sha256"] and manifest["arch"]["upsampler"] == "pixelshuffle"
    assert manifest["io"]["input"] == "lr" and manifest["io"]["dynamic_axes"] == {"0": "batch", "2": "height",
                                                                                  "3": "width"}
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxsim"}
    assert manifest["onnx"]["nodes_before_simplify"] and manifest["onnx"]["nodes_after_simplify"]
    assert manifest["onnx"]["simplifier"] == "onnxsim"
    assert manifest["verification"]["passed"] and len(manifest["verification"]["cases"]) >= 2
    import hashlib

    assert manifest["files"]["model.onnx"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    # Re-exporting over an existing artifact replaces it atomically.
    export(ckpt, ExportOptions(output=out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "m.pth"]


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    ckpt = save_basicsr(tiny_model(4), tmp_path / "m.pth")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not an scnet-deploy artifact"):
        export(ckpt, ExportOptions(output=tmp_path / "mine"))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_onnxslim_fallback_when_onnxsim_fails(tmp_path, monkeypatch):
    import onnxsim

    def fail(model, *a, **k):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", fail)
    result = build_onnx(tiny_model(2), OnnxOptions(), tmp_path / "m.onnx")
    assert result.simplifier.startswith("onnxslim") and "simulated onnxsim crash" in result.simplifier
    assert result.verification["passed"]


@pytest.mark.parametrize("name", ["scnet_t_x4_mlp", "scnet_t_x3_ps"])
def test_official_checkpoint_exports_within_1e5_of_official_output(tmp_path, name):
    export(need(FIXTURES / f"{name}.pth"), ExportOptions(output=tmp_path / "a"))
    x = np.load(FIXTURES / f"{name}.input.npy")
    assert np.abs(run(tmp_path / "a" / "model.onnx", x) - np.load(FIXTURES / f"{name}.output.npy")).max() <= 1e-5


@pytest.mark.slow  # 27 s of torch.onnx dynamo export; the slice form's outputs are checked in the default run
def test_slice_form_from_the_dwconv_graph_is_the_graph_dynamo_makes_of_shiftslice(tmp_path):
    """``--shift slice`` with the dynamo exporter rewrites the dwconv graph's shift convolutions (six times faster
    than tracing ShiftSlice): after simplification it has exactly the ops of ShiftSlice's own export, no grouped
    convolution, and a depthwise convolution that is not the shift is left alone."""
    from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form

    model = tiny_model(4, "mlp", num_block=3)
    for cbu in (False, True):
        options = OnnxOptions(shift="slice", conv_before_upsample=cbu)
        result = build_onnx(model, options, tmp_path / f"{cbu}.onnx")
        direct, _ = onnx_graph.simplify(onnx_graph.torch_to_onnx(to_deploy_form(model, DeployOptions("slice", cbu)),
                                                                 options))
        assert result.nodes_after == histogram(direct) and result.verification["passed"]
        graph = onnx.load(str(tmp_path / f"{cbu}.onnx"))
        groups = [a.i for n in graph.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert set(groups) <= {1}
    raw = onnx_graph.torch_to_onnx(to_deploy_form(model, DeployOptions("dwconv")), OnnxOptions())
    shifts = [n for n in raw.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1
                                                                       for a in n.attribute)]
    weight = next(t for t in raw.graph.initializer if t.name == shifts[0].input[1])
    kernel = onnx.numpy_helper.to_array(weight).copy()
    kernel[0, 0, 1, 1] = 0.5  # no longer a one-hot shift
    weight.CopyFrom(onnx.numpy_helper.from_array(kernel, weight.name))
    assert onnx_graph.shift_convs_as_slices(raw) == len(shifts) - 1
    assert sum(n.op_type == "Conv" and n.input[1] == weight.name for n in raw.graph.node) == 1
