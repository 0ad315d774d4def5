"""TensorRT: profile logic, trtexec command and the static parser-support check run everywhere; the real engine
build and run need TensorRT and an NVIDIA GPU and skip with that reason elsewhere."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import save_basicsr, tiny_model
from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.onnx_graph import OnnxOptions, build_onnx
from scnet_deploy.exporters.tensorrt_graph import (check_graph, make_profile, trtexec_command,
                                                     unsupported_ops)
from scnet_deploy.options import EXPORT_SIZES, SizeRange


def test_profile_from_resolution_range():
    p = make_profile(SizeRange((16, 24), (180, 320), (540, 960)), channels=3, max_batch=4)
    assert p.min == (1, 3, 16, 24) and p.opt == (1, 3, 180, 320) and p.max == (4, 3, 540, 960)
    assert p.to_dict()["input"] == "lr"
    with pytest.raises(ExportError, match="min <= opt <= max"):
        make_profile(SizeRange((200, 16), (180, 320), (540, 960)))
    with pytest.raises(ExportError, match="max-batch"):
        make_profile(EXPORT_SIZES, max_batch=0)


def test_trtexec_command():
    p = make_profile(SizeRange((16, 16), (180, 320), (1080, 1920)))
    cmd = trtexec_command("model.onnx", "model.plan", p, "fp16", 2048, "timing.cache")
    assert cmd == ("trtexec --onnx=model.onnx --saveEngine=model.plan --minShapes=lr:1x3x16x16 "
                   "--optShapes=lr:1x3x180x320 --maxShapes=lr:1x3x1080x1920 --memPoolSize=workspace:2048M --fp16 "
                   "--timingCacheFile=timing.cache")
    assert "--fp16" not in trtexec_command("m.onnx", "m.plan", p, "fp32", 64)


@pytest.mark.parametrize("form", ["slice", "dwconv", "fold+conv_before_upsample",
                                  "dwconv+conv_before_upsample+upsample_as_deconv"])
@pytest.mark.parametrize("upsampler", ["mlp", "pixelshuffle"])
def test_our_graphs_are_parsable_by_tensorrt(tmp_path, form, upsampler):
    from scnet_deploy.rewrites import DeployOptions

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


def _graph(node, extra_inits=(), opset=18):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([node], "g", [x], [y], initializer=list(extra_inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


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


def _has_tensorrt_gpu() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed (it cannot be on this project's CI machines; pip install tensorrt on a GPU box)"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU visible"
    return None


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(_has_tensorrt_gpu() is not None, reason=str(_has_tensorrt_gpu()))
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_build_and_run(tmp_path, precision):
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.options import SizeRange, TensorRTOptions
    from scnet_deploy.runtime import open_model

    ckpt = save_basicsr(tiny_model(4), tmp_path / "m.pth")
    cache = tmp_path / "timing.cache"
    options = ExportOptions(output=tmp_path / "trt", format="tensorrt", precision=precision,
                            sizes=SizeRange((8, 8), (16, 24), (64, 64)), tensorrt=TensorRTOptions(timing_cache=cache))
    result = export(ckpt, options)
    assert cache.exists() and result.manifest["tensorrt"]["trtexec"].startswith("trtexec")
    with open_model(result.directory) as runner, open_model(ckpt) as ref:
        x = np.random.default_rng(0).random((1, 3, 20, 30), dtype=np.float32)
        diff = np.abs(runner.infer(x) - ref.infer(x)).max()
        assert diff <= (1e-4 if precision == "fp32" else 5e-2)
    export(ckpt, options)  # second build reuses the timing cache
