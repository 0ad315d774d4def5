"""calibration/openvino_int8.py: NNCF INT8 in OpenVINO, known ranges in the saved IR, the quantizer ranking, and
resumed candidates reusing their FP32 scores."""

import math

import numpy as np
import pytest

from conftest import assert_extremes_not_clipped
from scnet_deploy.build_options import CalibOptions
from scnet_deploy.gate import AccuracyGate
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.build_options import OnnxOptions
from scnet_deploy.runtime import open_model


FAST = CalibOptions(count=8, crop=32)


def _ov_model(path):
    import openvino as ov

    return ov.Core().read_model(str(path))


@pytest.mark.openvino
def test_openvino_int8_nncf(ckpt, tmp_path):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e '.[openvino]' in the checkout)")
    m = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8", keep_slower_int8=True, calib=FAST)).manifest
    i = m["int8"]
    assert i["quantization"]["method"] == "nncf.quantize" and i["quantization"]["ranges"] == "minmax"
    assert i["quantization"]["quantized_convs"] > 0 and i["budget_db"] == 0.1 and m["verification"]["passed"]
    assert {r["content"] for r in i["per_image"]} >= {"photo", "line-art", "text"}
    from scnet_deploy.calibration.openvino_int8 import float_convolutions

    model = _ov_model(tmp_path / "ov" / "model.xml")
    pointwise = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Convolution"]
    assert pointwise and not set(pointwise) & set(float_convolutions(model)), "1x1 convs must be quantized"
    # independently of that helper: the IR stores an int8 weight tensor for every 1x1 conv
    int8_weights = [op for op in model.get_ops() if op.get_type_name() == "Constant"
                    and op.get_element_type().get_type_name() == "i8" and len(op.get_output_shape(0)) == 4]
    assert len(int8_weights) >= len(pointwise)
    with open_model(tmp_path / "ov") as runner:
        assert runner.precision == "int8" and runner.infer(np.zeros((1, 3, 9, 7), np.float32)).shape == (1, 3, 36, 28)
        assert "int8" in runner.name  # not "f32", the precision of its float parts


def test_openvino_ranking_puts_first_the_convolution_behind_the_costliest_quantizer(ckpt, tmp_path, monkeypatch):
    """The budget loop's first layer kept in float is measured, not guessed: the convolution behind the quantizer
    whose removal wins back most hold-out drift comes first even where the added-error ranking puts it last."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e '.[openvino]' in the checkout)")
    import openvino as ov

    from scnet_deploy.calibration import openvino_int8 as oi
    from scnet_deploy.calibration.budget import int8_data

    export(ckpt, ExportOptions(output=tmp_path / "fp32", format="openvino"))
    fp32 = _ov_model(tmp_path / "fp32" / "model.xml")
    data = int8_data(FAST, 4)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    int8 = oi.quantize_ir(fp32, data, AccuracyGate(None), config).model
    feeds = oi.convolution_quantizers(int8)
    damaged_fq = sorted(feeds)[len(feeds) // 2]
    victim = feeds[damaged_fq][0]
    fq = next(op for op in int8.get_ops() if op.get_friendly_name() == damaged_fq)
    lo, hi = oi.fake_quantize_range(fq)
    for i, value in ((1, lo / 20), (2, hi / 20), (3, lo / 20), (4, hi / 20)):  # clips at a twentieth of its range
        old = fq.input(i).get_source_output()
        fq.input(i).replace_source_output(ov.opset13.constant(np.full(old.get_shape(), value, np.float32)).output(0))
    real = oi.layer_sensitivity
    monkeypatch.setattr(oi, "layer_sensitivity", lambda *a: sorted(real(*a), key=lambda kv: kv[0] == victim))
    baseline = data.baseline(oi._ov_infer(fp32, config))
    order = oi.ranking(fp32, int8, data.calib.arrays[:2], baseline, config)
    assert order[0] == victim and sorted(order) == sorted(n for n, _ in real(fp32, int8, data.calib.arrays[:2],
                                                                              config))


@pytest.mark.openvino
def test_openvino_candidate_taken_up_again_reuses_its_fp32_scores_and_all_int8_try(ckpt, tmp_path, monkeypatch):
    """The autotuner sets an OpenVINO INT8 candidate aside after its all-INT8 try, then takes it up again with a
    second limit sharing the first's ``first_try``: the second call neither quantizes all-INT8 again nor scores the
    FP32 engine on the hold-out again (its scores are the first call's)."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e '.[openvino]' in the checkout)")
    from scnet_deploy.calibration import budget
    from scnet_deploy.calibration import openvino_int8 as oi

    export(ckpt, ExportOptions(output=tmp_path / "fp32", format="openvino"))
    fp32 = _ov_model(tmp_path / "fp32" / "model.xml")
    data, config = budget.int8_data(FAST, 4), {"INFERENCE_PRECISION_HINT": "f32"}
    scored, quantized = [], []
    real_baseline, real_loop = budget.Int8Data.baseline, oi.quantize_within_budget
    monkeypatch.setattr(budget.Int8Data, "baseline", lambda self, infer, levels=4: scored.append(1) or
                        real_baseline(self, infer, levels))

    def loop(quantize, measure, rank, gate, too_slow=None, first_try=None):
        def counted(exclude):
            quantized.append(exclude)
            return quantize(exclude)
        if not first_try.tried:  # the first call: the all-INT8 try, then set aside as over budget
            model = counted(())
            first_try.model, first_try.drift = model, measure(model)
            return {"abandoned": budget.Abandoned("set aside", 1.0)}
        return real_loop(counted, measure, rank, AccuracyGate(None), too_slow, first_try)

    monkeypatch.setattr(oi, "quantize_within_budget", loop)
    x = np.zeros((1, 3, 8, 8), np.float32)
    kept = budget.FirstTry()
    assert oi.quantize_ir(fp32, data, AccuracyGate(0.1), config, speed_limit=budget.SpeedLimit(None, x),
                          first_try=kept).abandoned is not None
    result = oi.quantize_ir(fp32, data, AccuracyGate(0.1), config, speed_limit=budget.SpeedLimit(math.inf, x),
                            first_try=kept)
    assert scored == [1] and quantized == [()]
    assert result.section.holdout["fp32_psnr_y"] == pytest.approx(float(np.mean(kept.baseline.fp32_psnr)))


@pytest.mark.openvino
def test_openvino_statistics_on_the_crops_static_shape_quantize_the_same(ckpt, tmp_path):
    """NNCF runs on a copy reshaped to the calibration crops' one shape (faster); the quantized model is the one the
    dynamic model gives, and gets the dynamic input shape back."""
    nncf = pytest.importorskip("nncf", reason="nncf is not installed (pip install -e '.[openvino]' in the checkout)")
    import openvino as ov

    from scnet_deploy.calibration.data import calibration_set
    from scnet_deploy.calibration.openvino_int8 import nncf_parameters, static_for, with_input_shape

    export(ckpt, ExportOptions(output=tmp_path / "fp32", format="openvino"))
    model = _ov_model(tmp_path / "fp32" / "model.xml")
    calib = list(calibration_set(FAST, 4))
    static = static_for(model, calib)
    assert static.inputs[0].get_partial_shape().is_static and model.inputs[0].get_partial_shape().is_dynamic
    ways = [with_input_shape(model, nncf.quantize(m, nncf.Dataset(calib), subset_size=len(calib),
                                                  **nncf_parameters())) for m in (model.clone(), static)]
    assert ways[1].inputs[0].get_partial_shape() == model.inputs[0].get_partial_shape()
    x = np.random.default_rng(0).random((1, 3, 13, 21), dtype=np.float32)
    outs = [ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x})[0] for m in ways]
    np.testing.assert_array_equal(outs[0], outs[1])
    mixed = calib[:2] + [calib[0][:, :, :20, :24]]
    assert static_for(model, mixed).inputs[0].get_partial_shape().is_dynamic  # crops of two shapes: left dynamic


@pytest.mark.openvino
@pytest.mark.parametrize("form", ["resize", "skip_as_conv"])
def test_openvino_int8_known_ranges_in_the_saved_ir(ckpt, narrow, tmp_path, form):
    """Calibrated on mid-tones only: the saved IR's input quantizer covers exactly [0, 1], the image-space skip
    (an Interpolate, or skip_as_conv's Pad, float conv and depth-to-space) reads the Parameter itself, the output is
    not fake-quantized, and white/black/saturated frames come out as in FP32."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install -e '.[openvino]' in the checkout)")
    calib = CalibOptions(narrow, count=8, crop=32)
    onnx_options = OnnxOptions(skip_as_conv=form == "skip_as_conv")
    m = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8", keep_slower_int8=True, calib=calib,
                                   budget_db=None, onnx=onnx_options)).manifest
    export(ckpt, ExportOptions(output=tmp_path / "fp32", format="openvino", onnx=onnx_options))
    from scnet_deploy.calibration.openvino_int8 import (fake_quantize_range, float_convolutions, image_path,
                                                        input_quantizers)

    model = _ov_model(tmp_path / "ov" / "model.xml")
    param = model.get_parameters()[0]
    fqs = input_quantizers(model)
    assert fqs and all(fake_quantize_range(fq) == (0.0, 1.0) for fq in fqs)
    skip = [op for op in model.get_ops() if op.get_type_name() == ("Interpolate" if form == "resize" else "Pad")
            and op.input(0).get_source_output().get_node().get_friendly_name() == param.get_friendly_name()]
    assert skip, "the image-space skip must read the float input, not its FakeQuantize"
    if form == "skip_as_conv":
        skip_conv = [t.get_node() for t in skip[0].output(0).get_target_inputs()]
        assert [op.get_type_name() for op in skip_conv] == ["GroupConvolution"]
        assert float_convolutions(model) == [skip_conv[0].get_friendly_name()], "only the skip's conv is float"
        quantization = m["int8"]["quantization"]
        assert quantization["float_convs_in_ir"] == []  # not one the budget kept in float
        convs = [op for op in model.get_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
        assert quantization["quantized_convs"] == len(convs) - 1
    assert all(t.get_node().get_type_name() in ("Convolution", "GroupConvolution")
               for fq in fqs for t in fq.output(0).get_target_inputs())
    result = model.get_results()[0].input(0).get_source_output().get_node()
    assert result.get_type_name() != "FakeQuantize"
    path = [op for op in model.get_ops() if op.get_friendly_name() in image_path(model)]
    assert {op.get_type_name() for op in path} >= ({"Interpolate", "Add"} if form == "resize"
                                                  else {"Pad", "GroupConvolution", "DepthToSpace", "Add"})
    assert not [op.get_friendly_name() for op in path for out in op.outputs() for t in out.get_target_inputs()
                if t.get_node().get_type_name() == "FakeQuantize"], "the image-space path is fake-quantized"
    with open_model(tmp_path / "fp32") as a, open_model(tmp_path / "ov") as b:
        assert_extremes_not_clipped(a.infer, b.infer)
