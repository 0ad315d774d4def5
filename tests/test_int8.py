"""INT8: calibration data, each backend's INT8 path as far as this machine allows, the budget loop, and that the
1x1 convolutions are really quantized."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import save_basicsr, tiny_model
from scnet_deploy.calibration.budget import BudgetNotMet, quantize_within_budget
from scnet_deploy.calibration.data import CalibOptions, calibration_set, holdout_pairs
from scnet_deploy.calibration.onnxruntime_int8 import (conv_nodes, layer_sensitivity, output_is_float,
                                                       quantize_onnx, quantized_weight_convs)
from scnet_deploy.errors import CheckpointError, ScnetDeployError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.exporters.onnx_export import OnnxOptions, build_onnx, ort_session
from scnet_deploy.exporters.tensorrt_support import unsupported_ops
from scnet_deploy.runtime import open_model

FAST = CalibOptions(count=8, crop=32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    rng = np.random.default_rng(0)
    for i in range(4):
        small = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
        Image.fromarray(small).resize((96, 72), Image.BICUBIC).save(d / f"c{i}.png")
    return d


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_basicsr(tiny_model(4, "mlp", num_feat=16, num_block=2), tmp_path_factory.mktemp("m") / "m.pth")


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("o") / "fp32.onnx"
    build_onnx(tiny_model(4, "mlp", num_feat=16, num_block=2), OnnxOptions(), path)
    return path


def test_calibration_is_deterministic_and_disjoint(folder):
    a, b = calibration_set(CalibOptions(folder, count=6, crop=16), 2), calibration_set(CalibOptions(folder, 6, 16), 2)
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.shape == (1, 3, 16, 16) and x.dtype == np.float32 for x in a)
    c = calibration_set(CalibOptions(folder, count=6, crop=16, seed=1), 2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert list(a) == list(a)  # re-iterable
    _, holdout = holdout_pairs(CalibOptions(folder), 2)
    assert set(a.sources).isdisjoint(holdout) and len(holdout) == 1 and len(a.sources) == 3
    default = calibration_set(CalibOptions(count=4, crop=16), 4)
    assert default.sources[0].startswith("skimage:")
    assert set(default.sources).isdisjoint(holdout_pairs(CalibOptions(), 4)[1])


def test_lr_input_crops_raw_pixels(folder):
    crop = calibration_set(CalibOptions(folder, count=1, crop=8, lr_input=True), 4).arrays[0]
    image = np.asarray(Image.open(folder / "c0.png")).astype(np.float32) / 255
    found = any(np.allclose(image[y:y + 8, x:x + 8].transpose(2, 0, 1), crop[0])
                for y in range(image.shape[0] - 7) for x in range(image.shape[1] - 7))
    assert found


def test_calibration_errors(folder, tmp_path):
    with pytest.raises(ScnetDeployError, match="not a folder"):
        calibration_set(CalibOptions(tmp_path / "nope"), 2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "only.png")
    with pytest.raises(ScnetDeployError, match="at least 2"):
        calibration_set(CalibOptions(tmp_path), 2)


def test_ort_qdq_really_quantizes_every_1x1_conv(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    for method in ("minmax", "percentile"):
        info = quantize_onnx(fp32_onnx, tmp_path / f"{method}.onnx", calib, method)
        model = onnx.load(str(tmp_path / f"{method}.onnx"))
        assert sorted(quantized_weight_convs(model)) == sorted(conv_nodes(model)) and info["quantized_convs"] > 0
        assert output_is_float(model)
    with pytest.raises(ScnetDeployError, match="calib-method"):
        quantize_onnx(fp32_onnx, tmp_path / "x.onnx", calib, "magic")


def test_int8_output_not_clipped_at_black_and_white(fp32_onnx, tmp_path):
    quantize_onnx(fp32_onnx, tmp_path / "q.onnx", calibration_set(FAST, 4))
    fp32, int8 = ort_session(fp32_onnx), ort_session(tmp_path / "q.onnx")
    for value in (0.0, 1.0):
        x = np.full((1, 3, 16, 16), value, np.float32)
        a, b = fp32.run(None, {"lr": x})[0], int8.run(None, {"lr": x})[0]
        assert abs(float(a.mean()) - float(b.mean())) < 0.02


def test_sensitivity_ranks_every_conv(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    quantize_onnx(fp32_onnx, tmp_path / "q.onnx", calib)
    ranking = layer_sensitivity(fp32_onnx, tmp_path / "q.onnx", calib.arrays[:2])
    model = onnx.load(str(fp32_onnx))
    pointwise = [n.name for n in model.graph.node
                 if n.op_type == "Conv" and all(a.name != "group" or a.i == 1 for a in n.attribute)]
    assert sorted(n for n, _ in ranking) == sorted(pointwise) and len(ranking) < len(conv_nodes(model))
    assert ranking == sorted(ranking, key=lambda kv: kv[1], reverse=True)


def test_budget_loop_falls_back_with_real_exclusion(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    convs = conv_nodes(onnx.load(str(fp32_onnx)))

    def quantize(exclude):
        path = tmp_path / f"q{len(exclude)}.onnx"
        quantize_onnx(fp32_onnx, path, calib, "minmax", exclude)
        return path

    result = quantize_within_budget(quantize, lambda p: -1.0 if int(p.stem[1:]) < 3 else -0.01,
                                    lambda p: [n for n, _ in layer_sensitivity(fp32_onnx, p, calib.arrays[:2])], 0.1)
    assert [h["float_layers"] for h in result["history"]] == [0, 1, 2, 4]
    assert len(result["float_layers"]) == 4 and result["drift_db"] == -0.01
    quantized = set(quantized_weight_convs(onnx.load(str(result["model"]))))
    assert not quantized & set(result["float_layers"]) and len(quantized) == len(convs) - 4


def test_budget_loop_gives_up_when_nothing_is_left():
    with pytest.raises(BudgetNotMet, match="all 3 convolutions"):
        quantize_within_budget(lambda ex: ex, lambda m: -1.0, lambda m: ["a", "b", "c"], 0.1)
    seen = []
    quantize_within_budget(lambda ex: seen.append(ex) or ex, lambda m: -1.0 if len(m) < 3 else 0.0,
                           lambda m: ["a", "b", "c"], 0.1)
    assert seen == [(), ("a",), ("a", "b"), ("a", "b", "c")]
    with pytest.raises(ScnetDeployError, match=">= 0"):
        quantize_within_budget(lambda ex: ex, lambda m: 0.0, lambda m: [], -1)


def test_onnxruntime_int8_export_validate_bench(ckpt, tmp_path):
    result = export(ckpt, ExportOptions(output=tmp_path / "int8", precision="int8", calib=FAST, budget_db=0.5))
    m = result.manifest
    assert m["precision"] == "int8" and m["int8"]["calibration"]["count"] == 8
    assert m["int8"]["drift_db"] >= -0.5 and m["verification"]["passed"]
    assert set(m["int8"]["calibration"]["sources"]).isdisjoint(m["int8"]["holdout"]["sources"])
    (tmp_path / "ds" / "HR").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "ds" / "HR" / "a.png")
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.validate import ValidateOptions, validate

    v = validate([ckpt, tmp_path / "int8"], ValidateOptions(tmp_path / "ds", 4))
    assert v["models"][1]["precision"] == "int8" and v["models"][1]["drift_db"] is not None
    b = bench([tmp_path / "int8"], BenchOptions(shapes=((8, 8),), runs=2, baselines=False))
    assert b["models"][0]["precision"] == "int8"


def test_tensorrt_int8_is_explicit_symmetric_qdq(ckpt, tmp_path):
    m = export(ckpt, ExportOptions(output=tmp_path / "trt", format="tensorrt", precision="int8", calib=FAST)).manifest
    model = onnx.load(str(tmp_path / "trt" / "model.onnx"))
    assert unsupported_ops(model) == []
    zero_points = [init for init in model.graph.initializer if "zero_point" in init.name]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)
    assert all(z.data_type == onnx.TensorProto.INT8 for z in zero_points)
    assert sorted(quantized_weight_convs(model)) == sorted(conv_nodes(model))
    assert m["verification"]["passed"] and "ONNX Runtime" in m["verification"]["note"]
    assert "--int8" in (tmp_path / "trt" / "build_engine.sh").read_text()
    assert m["tensorrt"]["engine"] is None or m["tensorrt"]["engine"] == "model.plan"


@pytest.mark.openvino
@pytest.mark.parametrize("budget", [None, 0.5])
def test_openvino_int8_nncf(ckpt, tmp_path, budget):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'scnet-deploy[openvino]')")
    m = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8", calib=FAST,
                                   budget_db=budget)).manifest
    i = m["int8"]
    assert i["quantization"]["method"] == ("nncf.quantize" if budget is None else "nncf.quantize_with_accuracy_control")
    assert i["quantization"]["quantized_convs"] > 0
    import openvino as ov

    from scnet_deploy.calibration.openvino_int8 import CONV_TYPES, float_convolutions

    model = ov.Core().read_model(str(tmp_path / "ov" / "model.xml"))
    pointwise = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "Convolution"]
    assert pointwise and not set(pointwise) & set(float_convolutions(model)), "1x1 convs must be quantized"
    assert CONV_TYPES
    with open_model(tmp_path / "ov") as runner:
        assert runner.precision == "int8" and runner.infer(np.zeros((1, 3, 9, 7), np.float32)).shape == (1, 3, 36, 28)


@pytest.mark.coreml
def test_coreml_int8_weights(ckpt, tmp_path):
    pytest.importorskip("coremltools", reason="coremltools is not installed")
    m = export(ckpt, ExportOptions(output=tmp_path / "cm", format="coreml", precision="int8")).manifest
    program = m["coreml"]["program"]
    assert program["quantized_convs"] == program["convs"] > 0
    assert "macOS" in m["int8"]["activations"] or sys.platform == "darwin"


def test_nonfinite_weights_refuse_calibration(tmp_path):
    sd = tiny_model(4).state_dict()
    sd["conv_first.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan_x4.pth")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="refusing to calibrate"):
        export(tmp_path / "nan_x4.pth", ExportOptions(output=tmp_path / "q", precision="int8", calib=FAST))
    out = subprocess.run([sys.executable, "-m", "scnet_deploy", "export", str(tmp_path / "nan_x4.pth"), "-o",
                          str(tmp_path / "q"), "--int8", "--calib-count", "4"], capture_output=True, text=True)
    assert out.returncode == 2 and "refusing to calibrate" in out.stderr and not (tmp_path / "q").exists()


def test_int8_cli(ckpt, tmp_path):
    out = subprocess.run([sys.executable, "-m", "scnet_deploy", "export", str(ckpt), "-o", str(tmp_path / "a"),
                          "--int8", "--calib-count", "4", "--calib-method", "entropy", "--budget", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["int8"]["calibration"]["method"] == "entropy" and m["options"]["budget_db"] == 1
    bad = subprocess.run([sys.executable, "-m", "scnet_deploy", "export", str(ckpt), "-o", str(tmp_path / "b"),
                          "--int8", "--precision", "bf16"], capture_output=True, text=True)
    assert bad.returncode == 2 and "contradict" in bad.stderr
