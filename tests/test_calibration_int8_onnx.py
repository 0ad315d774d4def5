"""calibration/onnxruntime_int8.py (build_int8_onnx): the Q/DQ graph quantizes every 1x1 conv, known ranges are never calibrated, and the
sensitivity ranking finds a damaged conv."""

import onnx
import pytest

from conftest import assert_extremes_not_clipped, tiny_model
from scnet_deploy.calibration.data import CalibOptions, calibration_set
from scnet_deploy.calibration.onnxruntime_int8 import onnx_infer
from scnet_deploy.calibration.onnxruntime_int8 import (conv_nodes, dequantized_readers, input_range,
                                                       layer_sensitivity, output_is_float, quantize_onnx,
                                                       quantized_weight_convs)
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.exporters.onnx_graph import build_onnx, OnnxOptions


FAST = CalibOptions(count=8, crop=32)


@pytest.fixture(scope="module")
def skip_conv_onnx(tmp_path_factory):
    """The same network with its image skip as a conv (skip_as_conv): the one conv INT8 must leave float."""
    path = tmp_path_factory.mktemp("o") / "fp32_skip_conv.onnx"
    build_onnx(tiny_model(4, "mlp", num_feat=16, num_block=2), OnnxOptions(skip_as_conv=True), path)
    return path


def test_ort_qdq_really_quantizes_every_1x1_conv(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    for method in ("minmax", "percentile"):
        info = quantize_onnx(fp32_onnx, tmp_path / f"{method}.onnx", calib, method)
        model = onnx.load(str(tmp_path / f"{method}.onnx"))
        assert sorted(quantized_weight_convs(model)) == sorted(conv_nodes(model)) and info["quantized_convs"] > 0
        assert output_is_float(model)
    with pytest.raises(ScnetDeployError, match="calib-method"):
        quantize_onnx(fp32_onnx, tmp_path / "x.onnx", calib, "magic")


@pytest.mark.parametrize("form", ["resize", "skip_as_conv"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["onnxruntime-u8", "tensorrt-s8"])
def test_known_ranges_are_never_calibrated_in_the_qdq_graph(fp32_onnx, skip_conv_onnx, narrow, tmp_path, symmetric,
                                                            form):
    """Calibrated on mid-tones only, the saved graph still quantizes the input over all of [0, 1], its skip (a
    Resize, or skip_as_conv's Pad, float Conv and DepthToSpace) and every other non-conv node read float tensors,
    and white/black/saturated frames come out as in FP32."""
    fp32 = fp32_onnx if form == "resize" else skip_conv_onnx
    calib = calibration_set(CalibOptions(narrow, count=8, crop=32), 4)
    assert max(float(x.max()) for x in calib) < 0.8  # really narrow
    quantize_onnx(fp32, tmp_path / "q.onnx", calib, "minmax", (), symmetric)
    model = onnx.load(str(tmp_path / "q.onnx"))
    lo, hi = input_range(model)
    assert lo <= 0.0 and hi >= 1.0 - 1e-6, f"input quantized over [{lo}, {hi}], narrower than [0, 1]"
    assert dequantized_readers(model) == [], "a non-conv node reads a dequantized (clipped) activation"
    skip = [n for n in model.graph.node if n.op_type == ("Resize" if form == "resize" else "Pad") and n.input[0] == "lr"]
    assert skip, "the image-space skip must read the float input"
    assert output_is_float(model)
    if form == "skip_as_conv":
        producers = {o: n for n in model.graph.node for o in n.output}
        skip_conv = [n for n in model.graph.node if n.op_type == "Conv" and producers.get(n.input[0]) is skip[0]]
        assert len(skip_conv) == 1 and producers.get(skip_conv[0].input[1]) is None, "the skip's conv is quantized"
        assert sorted(quantized_weight_convs(model)) == sorted(conv_nodes(model))  # every other conv is
        assert skip_conv[0].name not in conv_nodes(model)
        assert len(conv_nodes(model)) == len([n for n in model.graph.node if n.op_type == "Conv"]) - 1
    assert_extremes_not_clipped(onnx_infer(fp32), onnx_infer(tmp_path / "q.onnx"))


def test_sensitivity_ranks_a_damaged_conv_first(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    quantize_onnx(fp32_onnx, tmp_path / "q.onnx", calib)
    model = onnx.load(str(tmp_path / "q.onnx"))
    ranking = layer_sensitivity(fp32_onnx, tmp_path / "q.onnx", calib.arrays[:2])
    fp32 = onnx.load(str(fp32_onnx))
    assert sorted(n for n, _ in ranking) == sorted(conv_nodes(fp32))  # the shift's input range can clip too
    # damage the weight scale of a conv in the middle of the ranking: it must now add the most error
    victim = ranking[len(ranking) // 2][0]
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == victim)
    scale_name = producers[conv.input[1]].input[1]
    init = next(t for t in model.graph.initializer if t.name == scale_name)
    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 3.0, scale_name))
    onnx.save(model, str(tmp_path / "damaged.onnx"))
    damaged = layer_sensitivity(fp32_onnx, tmp_path / "damaged.onnx", calib.arrays[:2])
    assert damaged[0][0] == victim and damaged == sorted(damaged, key=lambda kv: kv[1], reverse=True)
