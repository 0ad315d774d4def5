"""exporters/tensorrt/: profile logic, trtexec command and build_engine.sh, the static parser-support and typing
checks, the explicit Q/DQ INT8 graph, and the build code driven through TensorRT 10.x and 11.x stand-ins."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, TensorProto

import tensorrt_standins
from conftest import save_basicsr, tiny_model
from scnet_deploy.build_options import CalibOptions
from scnet_deploy.calibration.onnxruntime_int8 import (conv_nodes, dequantized_readers, input_range,
                                                       quantized_weight_convs)
from scnet_deploy.errors import ExportError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters.onnx_graph import build_onnx, OnnxOptions
from scnet_deploy.exporters.tensorrt.graph import (check_graph, conv_precisions, make_profile, REMOVED_TRTEXEC_FLAGS,
                                                   tensorrt_generation, trtexec_command, unsupported_ops,
                                                   write_trtexec_script)
from scnet_deploy.options import EXPORT_SIZES, SizeRange


FAST = CalibOptions(count=8, crop=32)


def _fake_trtexec(directory, generation: int):
    """A trtexec of each generation as far as build_engine.sh meets it: 10.x lists --stronglyTyped in its help;
    11.x does not and, like the real one, exits with an error on a flag it removed (here also on --stronglyTyped,
    the worst case for the script). Both record their arguments."""
    directory.mkdir()
    listed = "  --stronglyTyped   Create a strongly typed network." if generation == 10 else ""
    rejected = " ".join(REMOVED_TRTEXEC_FLAGS + (() if generation == 10 else ("--stronglyTyped",)))
    if generation == 10:
        rejected = "--calib"  # 10.x still has the weak-typing flags; the script must simply not use them
    script = directory / "trtexec"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "--help" ]; then echo "TensorRT.trtexec [TensorRT v{generation}0000]"; echo "{listed}"; exit 0; fi
for a in "$@"; do for r in {rejected}; do
  case "$a" in "$r"|"$r"=*) echo "Unknown option: $a" >&2; exit 1;; esac
done; done
pwd > "$TRTEXEC_LOG"; for a in "$@"; do echo "$a" >> "$TRTEXEC_LOG"; done
""")
    script.chmod(0o755)
    return script


def _graph(node, extra_inits=(), opset=18):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([node], "g", [x], [y], initializer=list(extra_inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _has_tensorrt_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (it cannot be on this project's CI machines; pip install tensorrt on a GPU box)"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU visible"
    return None


def _trt_export(tmp_path, precision, upsampler="mlp", form="dwconv", **calib):
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.model.rewrites import DeployOptions

    ckpt = save_basicsr(tiny_model(4, upsampler, num_block=1), tmp_path / f"m_{upsampler}.pth")
    f = DeployOptions.from_name(form)
    options = ExportOptions(output=tmp_path / f"trt_{precision}_{upsampler}_{form}".replace("+", "_"),
                            format="tensorrt", precision=precision,
                            onnx=OnnxOptions(shift=f.shift, conv_before_upsample=f.conv_before_upsample,
                                             upsample_as_deconv=f.upsample_as_deconv), **calib)
    return export(ckpt, options)


@pytest.fixture(scope="module")
def trt_graphs(tmp_path_factory):
    """One TensorRT export per precision (no TensorRT here: the graph, build_engine.sh and manifest)."""
    from scnet_deploy.build_options import CalibOptions

    tmp = tmp_path_factory.mktemp("trt")
    return {p: _trt_export(tmp, p, **({"calib": CalibOptions(count=8, crop=32)} if p == "int8" else {}))
            for p in ("fp32", "fp16", "int8")}


def _standin_build(monkeypatch, tmp_path, version, onnx_path, **kw):
    import scnet_deploy.exporters.tensorrt.engine as backend

    trt = tensorrt_standins.make(version, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    profile = make_profile(SizeRange((8, 8), (16, 24), (64, 64)), max_batch=2)
    plan = backend.build_plan(onnx_path, profile, 256, None, tmp_path / "timing.cache")
    return trt, plan


def test_tensorrt_int8_is_explicit_symmetric_qdq(ckpt, tmp_path):
    m = export(ckpt, ExportOptions(output=tmp_path / "trt", format="tensorrt", precision="int8", keep_slower_int8=True, calib=FAST)).manifest
    model = onnx.load(str(tmp_path / "trt" / "model.onnx"))
    assert unsupported_ops(model) == []
    zero_points = [init for init in model.graph.initializer if "zero_point" in init.name]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)
    assert all(z.data_type == onnx.TensorProto.INT8 for z in zero_points)
    assert sorted(quantized_weight_convs(model)) == sorted(conv_nodes(model))
    inits = {t.name: t for t in model.graph.initializer}
    biases = [n.input[2] for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert biases and all(b in inits and inits[b].data_type == onnx.TensorProto.FLOAT16 for b in biases), \
        "TensorRT wants float biases (FP16, as the float layers of this strongly typed graph): every conv bias " \
        "must be a float initializer in the saved graph"
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert scales and {s.data_type for s in scales} == {onnx.TensorProto.FLOAT16}  # FP16 float layers in TensorRT
    assert m["tensorrt"]["conv_precisions"] == {"int8": len(conv_nodes(model))}
    assert dequantized_readers(model) == [] and input_range(model)[1] >= 1.0 - 1e-6
    assert m["verification"]["passed"] and "ONNX Runtime" in m["verification"]["note"]
    assert m["int8"]["budget_db"] == 0.1 and "worst_image" in m["int8"]
    assert m["tensorrt"]["engine"] is None and "not built" in m["tensorrt"]["engine_note"]


def test_profile_from_resolution_range():
    p = make_profile(SizeRange((16, 24), (180, 320), (540, 960)), channels=3, max_batch=4)
    assert p.min == (1, 3, 16, 24) and p.opt == (1, 3, 180, 320) and p.max == (4, 3, 540, 960)
    assert p.to_dict()["input"] == "lr"
    with pytest.raises(ExportError, match="min <= opt <= max"):
        make_profile(SizeRange((200, 16), (180, 320), (540, 960)))
    with pytest.raises(ExportError, match="max-batch"):
        make_profile(EXPORT_SIZES, max_batch=0)


def test_trtexec_command_is_strongly_typed_with_nothing_tensorrt_11_removed():
    p = make_profile(SizeRange((16, 16), (180, 320), (1080, 1920)))
    cmd = trtexec_command("model.onnx", "model.plan", p, 2048, "timing.cache")
    assert cmd == ("trtexec --onnx=model.onnx --saveEngine=model.plan --minShapes=lr:1x3x16x16 "
                   "--optShapes=lr:1x3x180x320 --maxShapes=lr:1x3x1080x1920 --memPoolSize=workspace:2048M "
                   "--stronglyTyped --timingCacheFile=timing.cache")
    assert not set(cmd.split()) & set(REMOVED_TRTEXEC_FLAGS)


@pytest.mark.parametrize("generation", [10, 11])
def test_build_engine_script_runs_with_trtexec_10_and_11(tmp_path, generation):
    profile = make_profile(SizeRange((16, 16), (180, 320), (540, 960)))
    artifact = tmp_path / "my engine"  # a space in the path: the script must quote it
    artifact.mkdir()
    write_trtexec_script(artifact / "build_engine.sh", trtexec_command("model.onnx", "model.plan", profile, 512,
                                                                       "timing.cache"))
    log = tmp_path / "args.txt"
    env = {**os.environ, "TRTEXEC": str(_fake_trtexec(tmp_path / "bin", generation)), "TRTEXEC_LOG": str(log)}
    run = subprocess.run(["sh", str(artifact / "build_engine.sh")], env=env, capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    cwd, *args = log.read_text().splitlines()
    assert cwd == str(artifact)
    assert ("--stronglyTyped" in args) == (generation == 10)
    assert "--onnx=model.onnx" in args and "--maxShapes=lr:1x3x540x960" in args
    assert not set(args) & set(REMOVED_TRTEXEC_FLAGS)


@pytest.mark.parametrize("form", ["slice", "dwconv", "fold+conv_before_upsample",
                                  "dwconv+conv_before_upsample+upsample_as_deconv"])
@pytest.mark.parametrize("upsampler", ["mlp", "pixelshuffle"])
def test_our_graphs_are_parsable_by_tensorrt(tmp_path, form, upsampler):
    from scnet_deploy.model.rewrites import DeployOptions

    f = DeployOptions.from_name(form)
    options = OnnxOptions(shift=f.shift, conv_before_upsample=f.conv_before_upsample,
                          upsample_as_deconv=f.upsample_as_deconv)
    build_onnx(tiny_model(4, upsampler, num_block=1), options, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert unsupported_ops(model) == []
    check_graph(model)
    ops = {n.op_type for n in model.graph.node}
    if f.upsample_as_deconv:
        assert "ConvTranspose" in ops and "Resize" not in ops and "Pad" in ops
    else:
        assert "Resize" in ops
    assert upsampler == "mlp" or "DepthToSpace" in ops


def test_unsupported_constructs_are_reported():
    cubic = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic", name="r")
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    assert any("mode=cubic" in p for p in unsupported_ops(_graph(cubic, [scales])))
    aa = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear", antialias=1, name="r")
    assert any("antialias" in p for p in unsupported_ops(_graph(aa, [scales])))
    wrap = helper.make_node("Pad", ["x", "p"], ["y"], mode="wrap", name="p")
    pads = helper.make_tensor("p", TensorProto.INT64, [8], [0] * 8)
    assert any("mode=wrap" in p for p in unsupported_ops(_graph(wrap, [pads])))
    nonzero = helper.make_node("NonZero", ["x"], ["y"], name="nz")
    assert any("NonZero" in p for p in unsupported_ops(_graph(nonzero)))
    q = helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["y"], name="q")
    sc = helper.make_tensor("sc", TensorProto.FLOAT, [], [0.1])
    zp = helper.make_tensor("zp", TensorProto.INT8, [], [3])
    assert any("zero point" in p for p in unsupported_ops(_graph(q, [sc, zp])))
    ok_zp = helper.make_tensor("zp", TensorProto.INT8, [], [0])
    assert unsupported_ops(_graph(q, [sc, ok_zp])) == []
    relu = helper.make_node("Relu", ["x"], ["y"], name="relu")
    assert any("opset 21" in p for p in unsupported_ops(_graph(relu, opset=21)))
    with pytest.raises(ExportError, match="TensorRT cannot parse"):
        check_graph(_graph(nonzero))


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(_has_tensorrt_gpu() is not None, reason=str(_has_tensorrt_gpu()))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_build_and_run(tmp_path, precision):
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.exporters.tensorrt.options import Build as TensorRTOptions
    from scnet_deploy.options import SizeRange
    from scnet_deploy.runtime import open_model

    ckpt = save_basicsr(tiny_model(4), tmp_path / "m.pth")
    cache = tmp_path / "timing.cache"
    options = ExportOptions(output=tmp_path / "trt", format="tensorrt", precision=precision,
                            sizes=SizeRange((8, 8), (16, 24), (64, 64)), backends={"tensorrt": TensorRTOptions(timing_cache=cache)})
    result = export(ckpt, options)
    assert cache.exists() and result.manifest["tensorrt"]["trtexec"].startswith("trtexec")
    with open_model(result.directory) as runner, open_model(ckpt) as ref:
        x = np.random.default_rng(0).random((1, 3, 20, 30), dtype=np.float32)
        diff = np.abs(runner.infer(x) - ref.infer(x)).max()
        assert diff <= (1e-4 if precision == "fp32" else 5e-2)
    export(ckpt, options)  # second build reuses the timing cache


def test_tensorrt_generation_names_what_the_code_was_written_for():
    assert tensorrt_generation("10.13.0.35").startswith("10.x") and "STRONGLY_TYPED" in tensorrt_generation("10.3.0")
    assert tensorrt_generation("11.4.0.5").startswith("11.x")
    assert tensorrt_generation("12.0.0").startswith("unsupported") and tensorrt_generation("8.6.1").startswith("unsup")


def test_type_inconsistent_graph_is_refused():
    """Strong typing inserts no casts: an Add of float16 and float32 must be caught before a device sees it."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT16, [1, 3, 4, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], name="add")], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert unsupported_ops(model) == []
    with pytest.raises(ExportError, match="strongly typed"):
        check_graph(model)


@pytest.mark.parametrize("form", ["slice", "dwconv", "dwconv+conv_before_upsample+upsample_as_deconv"])
@pytest.mark.parametrize("upsampler", ["mlp", "pixelshuffle"])
def test_fp16_export_writes_a_strongly_typed_mixed_precision_graph(tmp_path, form, upsampler):
    result = _trt_export(tmp_path, "fp16", upsampler, form)
    m = result.manifest
    model = onnx.load(str(result.directory / "model.onnx"))
    assert unsupported_ops(model) == [] and "Cast" in {n.op_type for n in model.graph.node}
    check_graph(model)
    assert {i.type.tensor_type.elem_type for i in list(model.graph.input) + list(model.graph.output)} == {
        TensorProto.FLOAT}
    convs = conv_precisions(model)
    # FP32 convs: only the image skip's depthwise deconvolution, where the bilinear skip is one (image space)
    assert convs.get("fp16", 0) >= 4 and convs.get("fp32", 0) == ("deconv" in form)
    assert m["tensorrt"]["conv_precisions"] == convs
    # the image-space path stays FP32: the last Add reads and writes float32; the feature resizes run in FP16
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    types.update({o.name: TensorProto.FLOAT for o in model.graph.output})
    last = next(n for n in model.graph.node if "sr" in n.output)
    assert last.op_type == "Add" and all(types[i] == TensorProto.FLOAT for i in last.input)
    if upsampler == "mlp" and "deconv" not in form:
        fp16_resizes = [n for n in model.graph.node if n.op_type == "Resize" and types.get(n.output[0]) == 10]
        assert len(fp16_resizes) == 2  # the two x2 feature upsamples; the image skip's x4 stays FP32
    assert m["tensorrt"]["float16"]["fp32_image_space"] and m["tensorrt"]["float16"]["io"].startswith("float32")
    v = m["verification"]
    assert v["passed"] and v["precision"] == "fp16" and "ONNX Runtime" in v["note"] and v["min_psnr_vs_fp32_db"] > 55
    assert not set(m["tensorrt"]["trtexec"].split()) & set(REMOVED_TRTEXEC_FLAGS)
    assert "--fp16" not in (result.directory / "build_engine.sh").read_text()


@pytest.mark.parametrize("version", ["10.13.0.35", "11.4.0.5"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_code_is_strongly_typed_on_tensorrt_10_and_11(monkeypatch, tmp_path, trt_graphs, version, precision):
    """The backend's real build code against each API generation: the network flag named, not a hard-coded bit
    (STRONGLY_TYPED is bit 1 in 10.x, bit 0 in 11.x), no precision flag (11.x has none; on 10.x they would fail a
    strongly typed build), the optimization profile, workspace and timing cache; the parser gets a graph it accepts."""
    result = trt_graphs[precision]
    trt, plan = _standin_build(monkeypatch, tmp_path, version, result.directory / "model.onnx")
    assert plan == f"plan {version}".encode()
    flag = ("create_network", 1 << (1 if version.startswith("10.") else 0))
    assert flag in trt.calls
    (built,) = trt.built
    assert built["network"].strongly_typed and built["flags"] == [] and built["profiles"] == 1
    assert built["pools"] == {"WORKSPACE": 256 << 20}
    assert ("set_shape", "lr", (1, 3, 8, 8), (1, 3, 16, 24), (2, 3, 64, 64)) in trt.calls
    assert ("set_timing_cache", False) in trt.calls and (tmp_path / "timing.cache").read_bytes()
    assert conv_precisions(built["network"].graph) == result.manifest["tensorrt"]["conv_precisions"]
    expected = {"fp32": "fp32", "fp16": "fp16", "int8": "int8"}[precision]
    assert set(result.manifest["tensorrt"]["conv_precisions"]) == {expected}


def test_weak_typing_flags_fail_where_the_standins_say(monkeypatch, tmp_path):
    """The stand-ins catch the break this issue was about: 11.x has no BuilderFlag.FP16 at all; 10.x refuses it on
    a strongly typed network."""
    assert not hasattr(tensorrt_standins.make("11.4.0.5").BuilderFlag, "FP16")
    trt10 = tensorrt_standins.make("10.13.0.35")
    network = trt10.Builder(trt10.Logger()).create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    config = trt10.Builder(None).create_builder_config()
    config.set_flag(trt10.BuilderFlag.FP16)
    assert trt10.Builder(None).build_serialized_network(network, config) is None


def test_refused_timing_cache_is_one_line(monkeypatch, tmp_path):
    path = tmp_path / "m.onnx"
    build_onnx(tiny_model(2, num_block=1), OnnxOptions(shift="dwconv"), path)
    with pytest.raises(ExportError, match="refused the timing cache"):
        _standin_build(monkeypatch, tmp_path, "11.4.0.5", path, timing_cache_accepted=False)


def test_plan_built_by_another_version_is_refused(monkeypatch, tmp_path):
    from scnet_deploy.exporters.tensorrt import runtime as tensorrt_runtime

    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_standins.make("11.4.0.5"))
    (tmp_path / "model.plan").write_bytes(b"plan")
    with pytest.raises(ExportError, match=r"built with TensorRT 10\.13\.0\.35, and this is TensorRT 11\.4\.0\.5"):
        tensorrt_runtime.load(tmp_path, {"precision": "fp32", "tensorrt": {"version": "10.13.0.35"}})


@pytest.mark.parametrize("version, generation", [("10.13.0.35", "10.x"), ("11.4.0.5", "11.x")])
def test_doctor_says_which_tensorrt_generation_is_installed(monkeypatch, version, generation):
    import importlib.metadata
    import importlib.util

    from scnet_deploy.doctor import doctor
    from scnet_deploy.exporters.registry import Backend

    real_version, real_find = importlib.metadata.version, importlib.util.find_spec
    monkeypatch.setattr(importlib.metadata, "version", lambda d: version if d == "tensorrt" else real_version(d))
    monkeypatch.setattr(Backend, "available", lambda self: self.name == "tensorrt" or real_find(self.requires))
    row = next(r for r in doctor()["backends"] if r["backend"] == "tensorrt")
    assert row["available"] and row["version"].startswith(f"{version} ({generation}")


def test_fp16_keeps_layers_that_would_overflow_in_fp32(tmp_path, monkeypatch):
    """A block whose activations pass FP16's 65504 (conv1 scaled up, conv2 down: the same function) stays FP32: the
    nodes that make or read those values keep float32 outputs, and the graph stays close to FP32. (ONNX Runtime's CPU
    does not overflow where TensorRT's FP16 kernels would, so the check is on the graph's types.)"""
    import onnxruntime as ort

    from scnet_deploy.exporters import onnx_float16

    model = tiny_model(2, num_block=1)
    with torch.no_grad():
        model.body[0].conv1.weight *= 1e6
        model.body[0].conv1.bias *= 1e6
        model.body[0].conv2.weight /= 1e6
    build_onnx(model, OnnxOptions(shift="dwconv"), tmp_path / "m.onnx")
    x = np.random.default_rng(1).random((1, 3, 12, 12), dtype=np.float32)

    def run(path):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]

    def output_types(path):
        m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        types = {v.name: v.type.tensor_type.elem_type for v in m.graph.value_info}
        return {n.name: types.get(n.output[0]) for n in m.graph.node}

    record = onnx_float16.write_float16(tmp_path / "m.onnx", tmp_path / "safe.onnx")
    overflow = record["fp32_overflow"]
    assert len(overflow) >= 3 and set(overflow) <= set(record["fp32_nodes"])  # conv1, shift, relu, conv2 at least
    assert {output_types(tmp_path / "safe.onnx")[n] for n in overflow} == {TensorProto.FLOAT}
    np.testing.assert_allclose(run(tmp_path / "safe.onnx"), run(tmp_path / "m.onnx"), atol=1e-2)
    monkeypatch.setattr(onnx_float16, "overflowing_nodes", lambda model, probes, limit=0: [])
    onnx_float16.write_float16(tmp_path / "m.onnx", tmp_path / "unsafe.onnx")
    assert TensorProto.FLOAT16 in {output_types(tmp_path / "unsafe.onnx")[n] for n in overflow}


@pytest.mark.parametrize("skip_as_conv", [False, True], ids=["resize", "skip_as_conv"])
def test_fp16_graph_keeps_the_image_skip_in_fp32(tmp_path, skip_as_conv):
    """The skip carries the image to the output: every node of it (skip_as_conv's pad, conv and depth-to-space,
    or the resize) and the final add stay FP32, and the graph still matches FP32 closely."""
    from scnet_deploy.exporters import onnx_float16

    build_onnx(tiny_model(4, "mlp", num_feat=16, num_block=2), OnnxOptions(skip_as_conv=skip_as_conv),
               tmp_path / "m.onnx")
    record = onnx_float16.write_float16(tmp_path / "m.onnx", tmp_path / "fp16.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    kinds = {n.name: n.op_type for n in model.graph.node}
    skip = {kinds[n] for n in record["fp32_image_space"]}
    assert skip >= ({"Pad", "Conv", "DepthToSpace", "Add"} if skip_as_conv else {"Resize", "Add"})
    assert sum(kinds[n] == "Conv" for n in record["fp32_image_space"]) == int(skip_as_conv)  # not the first layer
    converted = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "fp16.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in converted.graph.value_info}
    outputs = {n.name: n.output[0] for n in converted.graph.node}
    assert {types.get(outputs[n]) for n in record["fp32_image_space"] if outputs[n] in types} == {TensorProto.FLOAT}
