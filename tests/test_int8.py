"""INT8: calibration data, each backend's INT8 path as far as this machine allows, the budget loop, and that the
1x1 convolutions are really quantized."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import save_basicsr, tiny_model
from scnet_deploy.calibration.budget import Baseline, BudgetNotMet, psnr_scores, quantize_within_budget
from scnet_deploy.calibration.content import GENERATORS
from scnet_deploy.calibration.data import CalibOptions, calibration_set, content_share, holdout_set
from scnet_deploy.calibration.int8_onnx import onnx_infer
from scnet_deploy.calibration.onnxruntime_int8 import (conv_nodes, dequantized_readers, input_range,
                                                       layer_sensitivity, output_is_float, quantize_onnx,
                                                       quantized_input_convs, quantized_weight_convs)
from scnet_deploy.errors import CheckpointError, ScnetDeployError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.exporters.onnx_graph import OnnxOptions, build_onnx, ort_session
from scnet_deploy.exporters.tensorrt.graph import unsupported_ops
from scnet_deploy.runtime import open_model

FAST = CalibOptions(count=8, crop=32)
EXTREME_FRAMES = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0)}


def smooth_images(folder: Path, low: int, high: int, seed: int, resample) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(4):
        small = rng.integers(low, high + 1, (12, 16, 3)).astype(np.uint8)
        Image.fromarray(small).resize((96, 72), resample).save(folder / f"c{i}.png")
    return folder


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """Calibration photos whose pixels lie in 60-190 only: a range calibrated on them would clip white and black."""
    return smooth_images(tmp_path_factory.mktemp("narrow"), 60, 190, 1, Image.BILINEAR)


def frame(rgb, h=12, w=10) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32)[None, :, None, None], (1, 3, h, w)).copy()


def assert_extremes_not_clipped(fp32_infer, int8_infer, tol=0.02):
    """A flat frame's output is the frame itself through the float skip: INT8 must not darken white or lift black."""
    for name, rgb in EXTREME_FRAMES.items():
        a, b = fp32_infer(frame(rgb)), int8_infer(frame(rgb))
        gap = np.abs(a.mean(axis=(0, 2, 3)) - b.mean(axis=(0, 2, 3))).max()
        assert gap < tol, f"{name} frame: INT8 output differs from FP32 by {gap:.3f} per channel"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return smooth_images(tmp_path_factory.mktemp("calib"), 0, 255, 0, Image.BICUBIC)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_basicsr(tiny_model(4, "mlp", num_feat=16, num_block=2), tmp_path_factory.mktemp("m") / "m.pth")


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("o") / "fp32.onnx"
    build_onnx(tiny_model(4, "mlp", num_feat=16, num_block=2), OnnxOptions(), path)
    return path


@pytest.fixture(scope="module")
def skip_conv_onnx(tmp_path_factory):
    """The same network with its image skip as a conv (skip_as_conv): the one conv INT8 must leave float."""
    path = tmp_path_factory.mktemp("o") / "fp32_skip_conv.onnx"
    build_onnx(tiny_model(4, "mlp", num_feat=16, num_block=2), OnnxOptions(skip_as_conv=True), path)
    return path


def test_calibration_is_deterministic_and_disjoint(folder):
    a, b = calibration_set(CalibOptions(folder, count=6, crop=16), 2), calibration_set(CalibOptions(folder, 6, 16), 2)
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.shape == (1, 3, 16, 16) and x.dtype == np.float32 for x in a)
    c = calibration_set(CalibOptions(folder, count=6, crop=16, seed=1), 2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    first, second = list(a), list(a)  # re-iterable: the same arrays again, not an exhausted iterator
    assert len(first) == 6 and all(np.array_equal(x, y) for x, y in zip(first, second))
    holdout = holdout_set(CalibOptions(folder), 2)
    photos = [h.name for h in holdout if h.content == "photo"]
    assert set(a.sources).isdisjoint(photos) and len(photos) == 1 and len([s for s in a.sources if "generated" not in s]) == 3
    default = calibration_set(CalibOptions(count=4, crop=16), 4)
    assert default.sources[0].startswith("skimage:")
    assert set(default.sources).isdisjoint(h.name for h in holdout_set(CalibOptions(), 4))


def test_calibration_mixes_generated_content_when_asked(folder):
    mixed = calibration_set(CalibOptions(folder, count=8, crop=16, content_mix=True), 2)
    plain = calibration_set(CalibOptions(folder, count=8, crop=16), 2)  # the default: photos only (measured better)
    assert content_share(CalibOptions(count=8, content_mix=True)) == 2 and content_share(CalibOptions(count=8)) == 0
    assert len(mixed) == len(plain) == 8
    assert any(s.startswith("generated:line-art") for s in mixed.sources)
    assert not any(s.startswith("generated") for s in plain.sources)
    # the folder's crops are smooth mid-tones; generated content reaches pure black and white
    assert max(float(x.max()) for x in mixed) == 1.0 and min(float(x.min()) for x in mixed) == 0.0


def test_default_holdout_mixes_content_types(folder, tmp_path):
    holdout = holdout_set(CalibOptions(), 4)
    assert {"photo", "line-art", "text", "flat-colours", "textures"} <= {h.content for h in holdout}
    assert all(h.lr.shape[0] * 4 == h.hr.shape[0] and h.lr.shape[1] * 4 == h.hr.shape[1] for h in holdout)
    from_folder = holdout_set(CalibOptions(folder), 4)  # a calibration folder's held-out photos, plus the content
    assert [h.content for h in from_folder].count("photo") == 1 and len({h.content for h in from_folder}) >= 5
    # the user's own hold-out replaces ours; sub-folders name content types
    (tmp_path / "own" / "comics").mkdir(parents=True)
    Image.fromarray(GENERATORS["line-art"](7)).save(tmp_path / "own" / "comics" / "a.png")
    Image.fromarray(GENERATORS["text"](7)).save(tmp_path / "own" / "b.png")
    own = holdout_set(CalibOptions(holdout=tmp_path / "own"), 4)
    assert sorted((Path(h.name).name, h.content) for h in own) == [("a.png", "comics"), ("b.png", "holdout")]
    with pytest.raises(ScnetDeployError, match="--holdout"):
        holdout_set(CalibOptions(holdout=tmp_path / "nope"), 4)


def test_generated_content_is_deterministic_and_reaches_the_cube_corners():
    for kind, make in GENERATORS.items():
        a, b, c = make(3), make(3), make(4)
        assert a.dtype == np.uint8 and a.shape[2] == 3 and np.array_equal(a, b) and not np.array_equal(a, c), kind
    assert (GENERATORS["line-art"](0) == 255).all(axis=2).mean() > 0.3  # white paper
    assert (GENERATORS["line-art"](0) == 0).all(axis=2).any()  # black ink
    flat = GENERATORS["flat-colours"](0)
    assert ((flat == [255, 0, 0]).all(axis=2)).any() or ((flat == [0, 0, 255]).all(axis=2)).any()


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


def _drift(value):
    return {"mean_db": value, "worst_image": {"name": "x", "content": "photo", "drift_db": value}}


def test_budget_loop_falls_back_with_real_exclusion(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    convs = conv_nodes(onnx.load(str(fp32_onnx)))

    def quantize(exclude):
        path = tmp_path / f"q{len(exclude)}.onnx"
        quantize_onnx(fp32_onnx, path, calib, "minmax", exclude)
        return path

    result = quantize_within_budget(quantize, lambda p: _drift(-1.0 if int(p.stem[1:]) < 3 else -0.01),
                                    lambda p: [n for n, _ in layer_sensitivity(fp32_onnx, p, calib.arrays[:2])], 0.1)
    assert [t["float_layers"] for t in result["tries"]] == [0, 1, 2, 4]
    assert len(result["float_layers"]) == 4 and result["drift"]["mean_db"] == -0.01
    quantized = set(quantized_input_convs(onnx.load(str(result["model"]))))
    assert not quantized & set(result["float_layers"]) and len(quantized) == len(convs) - 4


def test_budget_loop_gives_up_when_nothing_is_left():
    with pytest.raises(BudgetNotMet, match="all 3 convolutions"):
        quantize_within_budget(lambda ex: ex, lambda m: _drift(-1.0), lambda m: ["a", "b", "c"], 0.1)
    seen = []
    quantize_within_budget(lambda ex: seen.append(ex) or ex, lambda m: _drift(-1.0 if len(m) < 3 else 0.0),
                           lambda m: ["a", "b", "c"], 0.1)
    assert seen == [(), ("a",), ("a", "b"), ("a", "b", "c")]
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ScnetDeployError, match="--budget"):
            quantize_within_budget(lambda ex: ex, lambda m: _drift(0.0), lambda m: [], bad)
    # no budget (explicit opt-out): one try, whatever the drift
    result = quantize_within_budget(lambda ex: ex, lambda m: _drift(-5.0), lambda m: ["a"], None)
    assert result["float_layers"] == [] and len(result["tries"]) == 1


def _independent_holdout_drift(manifest: dict, int8_infer, fp32_infer, scale: int) -> float:
    """The hold-out drift recomputed from the saved model with the library's metric, not read from the manifest."""
    holdout = holdout_set(CalibOptions(count=8, crop=32), scale)
    assert [h.name for h in holdout] == manifest["int8"]["holdout"]["sources"]
    return float(np.mean(np.subtract(psnr_scores(int8_infer, holdout, scale), psnr_scores(fp32_infer, holdout, scale))))


def test_onnxruntime_int8_export_validate_bench(ckpt, tmp_path):
    result = export(ckpt, ExportOptions(output=tmp_path / "int8", precision="int8", calib=FAST))
    m = result.manifest
    i = m["int8"]
    assert m["precision"] == "int8" and i["calibration"]["count"] == 8 and i["budget_db"] == 0.1  # default budget
    assert set(i["calibration"]["sources"]).isdisjoint(i["holdout"]["sources"])
    assert {r["content"] for r in i["per_image"]} >= {"photo", "line-art", "text", "flat-colours", "textures"}
    assert i["worst_image"]["drift_db"] == min(r["drift_db"] for r in i["per_image"])
    recomputed = _independent_holdout_drift(m, onnx_infer(tmp_path / "int8" / "model.onnx"),
                                            _fp32_infer(ckpt, tmp_path), 4)
    assert abs(recomputed - i["drift_db"]) < 1e-6 and recomputed >= -0.1
    v = m["verification"]
    assert v["passed"] and "hold-out mean drift >= -0.1 dB" in v["rule"] and v["holdout_mean_drift_db"] == i["drift_db"]
    (tmp_path / "ds" / "HR").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "ds" / "HR" / "a.png")
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.validate import ValidateOptions, validate

    v = validate([ckpt, tmp_path / "int8"], ValidateOptions(tmp_path / "ds", 4))
    assert v["models"][1]["precision"] == "int8" and v["models"][1]["drift_db"] is not None
    assert "int8" in v["models"][1]["name"]  # labelled by what it is
    b = bench([tmp_path / "int8"], BenchOptions(shapes=((8, 8),), runs=2, baselines=False))
    assert b["models"][0]["precision"] == "int8"


def _fp32_onnx_of(ckpt, tmp_path) -> Path:
    return export(ckpt, ExportOptions(output=tmp_path / "fp32_onnx")).directory / "model.onnx"


def _fp32_infer(ckpt, tmp_path):
    out = tmp_path / "fp32_ref"
    export(ckpt, ExportOptions(output=out))
    return onnx_infer(out / "model.onnx")


def test_forced_fallback_keeps_the_ranked_layers_float_in_the_saved_graph(ckpt, tmp_path, monkeypatch):
    """A real export forced to fall back: the hold-out measurement reads 1 dB worse while fewer than 3 layers are
    float, so the loop must try 1, 2, then 4 float layers; the 4 the manifest names are float in the saved graph
    and every other conv int8."""
    import scnet_deploy.calibration.budget as budget
    import scnet_deploy.calibration.int8_onnx as int8_onnx

    excluded, real_quantize, real_measure = [], int8_onnx.quantize_onnx, budget.Baseline.measure

    def quantize(*args):
        excluded.append(len(args[4]))
        return real_quantize(*args)

    def measure(self, infer):
        drift = real_measure(self, infer)
        return {**drift, "mean_db": drift["mean_db"] - (1.0 if excluded[-1] < 3 else 0.0)}

    monkeypatch.setattr(int8_onnx, "quantize_onnx", quantize)
    monkeypatch.setattr(budget.Baseline, "measure", measure)
    m = export(ckpt, ExportOptions(output=tmp_path / "q", precision="int8", calib=FAST, budget_db=0.5)).manifest
    i = m["int8"]
    assert [t["float_layers"] for t in i["tries"]] == [0, 1, 2, 4] and len(i["float_layers"]) == 4
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    quantized = set(quantized_input_convs(model))
    assert not quantized & set(i["float_layers"])
    assert quantized == set(conv_nodes(model)) - set(i["float_layers"])
    assert m["verification"]["passed"] and i["within_budget"]


def test_budget_opt_out_is_explicit_and_recorded(ckpt, tmp_path):
    m = export(ckpt, ExportOptions(output=tmp_path / "q", precision="int8", calib=FAST, budget_db=None)).manifest
    assert m["int8"]["budget_db"] is None and "off" in m["int8"]["budget"] and m["options"]["budget_db"] is None
    assert "no drift budget" in m["verification"]["rule"]
    with pytest.raises(ScnetDeployError, match="--budget"):
        export(ckpt, ExportOptions(output=tmp_path / "bad", precision="int8", calib=FAST, budget_db=-0.1))
    assert not (tmp_path / "bad").exists()


def test_tensorrt_int8_is_explicit_symmetric_qdq(ckpt, tmp_path):
    m = export(ckpt, ExportOptions(output=tmp_path / "trt", format="tensorrt", precision="int8", calib=FAST)).manifest
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


def _ov_model(path):
    import openvino as ov

    return ov.Core().read_model(str(path))


@pytest.mark.openvino
def test_openvino_int8_nncf(ckpt, tmp_path):
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'scnet-deploy[openvino]')")
    m = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8", calib=FAST)).manifest
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


def test_the_costliest_item_is_found_by_halving_in_2_log2_n_measurements():
    from scnet_deploy.calibration.budget import costliest

    cost = {f"q{i}": 0.001 * (i % 5) for i in range(57)}
    cost["q41"] = 0.135  # one quantizer costs most of the drift, as the dwconv forms' first-block shift input
    asked = []

    def won_back(group):
        asked.append(group)
        return sum(cost[g] for g in group)

    assert costliest(list(cost), won_back) == "q41" and len(asked) <= 2 * 6
    assert costliest([], won_back) is None and costliest(["only"], won_back) == "only"
    sequential = list(asked)
    asked.clear()
    assert costliest(list(cost), won_back, workers=2) == "q41"  # the two halves of each step at once: the same
    assert sorted(map(tuple, asked)) == sorted(map(tuple, sequential[:len(asked)])) and len(asked) == 12


@pytest.mark.openvino
def test_the_ranking_past_its_measured_head_is_computed_only_when_a_budget_loop_reaches_it():
    from scnet_deploy.calibration.budget import Ranking, quantize_within_budget

    calls = []

    def rest():
        calls.append(1)
        return ["c", "a", "d", "b"]

    ranking = Ranking(["b"], 4, rest)
    assert len(ranking) == 4 and ranking[:1] == ["b"] and ranking[0] == "b" and not calls
    assert ranking[:3] == ["b", "c", "a"] and list(ranking) == ["b", "c", "a", "d"] and sorted(ranking) == list("abcd")
    assert len(calls) == 1  # computed once

    def loop(drift_with_b_in_float: float) -> list:
        calls.clear()
        drift = {(): -0.3, ("b",): drift_with_b_in_float, ("b", "c"): -0.05}
        result = quantize_within_budget(lambda exclude: exclude, lambda m: {"mean_db": drift[m], "worst_image": {
            "drift_db": drift[m]}}, lambda m: Ranking(["b"], 4, rest), 0.1)
        return result["float_layers"]

    assert loop(-0.05) == ["b"] and not calls  # within budget with the head in float: the rest never computed
    assert loop(-0.2) == ["b", "c"] and len(calls) == 1


def test_openvino_ranking_puts_first_the_convolution_behind_the_costliest_quantizer(ckpt, tmp_path, monkeypatch):
    """The budget loop's first layer kept in float is measured, not guessed: the convolution behind the quantizer
    whose removal wins back most hold-out drift comes first even where the added-error ranking puts it last."""
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'scnet-deploy[openvino]')")
    import openvino as ov

    from scnet_deploy.calibration import openvino_int8 as oi
    from scnet_deploy.calibration.budget import int8_data

    export(ckpt, ExportOptions(output=tmp_path / "fp32", format="openvino"))
    fp32 = _ov_model(tmp_path / "fp32" / "model.xml")
    data = int8_data(FAST, 4)
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    int8 = oi.quantize_ir(fp32, data, None, config).model
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
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'scnet-deploy[openvino]')")
    from scnet_deploy.calibration import budget
    from scnet_deploy.calibration import openvino_int8 as oi

    export(ckpt, ExportOptions(output=tmp_path / "fp32", format="openvino"))
    fp32 = _ov_model(tmp_path / "fp32" / "model.xml")
    data, config = budget.int8_data(FAST, 4), {"INFERENCE_PRECISION_HINT": "f32"}
    scored, quantized = [], []
    real_baseline, real_loop = budget.Int8Data.baseline, oi.quantize_within_budget
    monkeypatch.setattr(budget.Int8Data, "baseline", lambda self, infer: scored.append(1) or real_baseline(self,
                                                                                                         infer))

    def loop(quantize, measure, rank, budget_db, too_slow=None, first_try=None):
        def counted(exclude):
            quantized.append(exclude)
            return quantize(exclude)
        if "model" not in first_try:  # the first call: the all-INT8 try, then set aside as over budget
            model = counted(())
            first_try.update(model=model, drift=measure(model))
            raise budget.BudgetAbandoned("set aside", 1.0)
        return real_loop(counted, measure, rank, None, too_slow, first_try)

    monkeypatch.setattr(oi, "quantize_within_budget", loop)
    x = np.zeros((1, 3, 8, 8), np.float32)
    first = budget.SpeedLimit(None, x)
    with pytest.raises(budget.BudgetAbandoned):
        oi.quantize_ir(fp32, data, 0.1, config, speed_limit=first)
    result = oi.quantize_ir(fp32, data, 0.1, config, speed_limit=budget.SpeedLimit(math.inf, x,
                                                                                   first_try=first.first_try))
    assert scored == [1] and quantized == [()]
    assert result.section["holdout"]["fp32_psnr_y"] == pytest.approx(float(np.mean(first.first_try["baseline"].fp32_psnr)))


@pytest.mark.openvino
def test_openvino_statistics_on_the_crops_static_shape_quantize_the_same(ckpt, tmp_path):
    """NNCF runs on a copy reshaped to the calibration crops' one shape (faster); the quantized model is the one the
    dynamic model gives, and gets the dynamic input shape back."""
    nncf = pytest.importorskip("nncf", reason="nncf is not installed (pip install 'scnet-deploy[openvino]')")
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
    pytest.importorskip("nncf", reason="nncf is not installed (pip install 'scnet-deploy[openvino]')")
    calib = CalibOptions(narrow, count=8, crop=32)
    onnx_options = OnnxOptions(skip_as_conv=form == "skip_as_conv")
    m = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8", calib=calib,
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


@pytest.mark.coreml
def test_coreml_int8_weights(ckpt, tmp_path):
    pytest.importorskip("coremltools", reason="coremltools is not installed")
    m = export(ckpt, ExportOptions(output=tmp_path / "cm", format="coreml", precision="int8")).manifest
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    # read the saved package itself, not the exporter's in-memory program: every conv's weight is an int8 tensor
    spec = ct.utils.load_spec(str(tmp_path / "cm" / "model.mlpackage"))
    main = spec.mlProgram.functions["main"]
    ops = list(main.block_specializations[main.opset].operations)
    producers = {out.name: op for op in ops for out in op.outputs}
    convs = [op for op in ops if op.type == "conv"]
    assert len(convs) == len(conv_nodes(onnx.load(str(_fp32_onnx_of(ckpt, tmp_path))))) > 0
    for conv in convs:
        weight = producers.get(conv.inputs["weight"].arguments[0].name)
        assert weight is not None and weight.type.startswith("constexpr_"), conv.outputs[0].name
        data = weight.attributes.get("quantized_data") or weight.attributes.get("data")
        assert data.type.tensorType.dataType == MIL_pb2.INT8, conv.outputs[0].name
    assert "macOS" in m["int8"]["activations"] or sys.platform == "darwin"
    assert m["int8"]["within_budget"] is None or sys.platform == "darwin"  # measured only where Core ML predicts


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


def test_measure_only_budget_check_for_weight_only_int8():
    from scnet_deploy.calibration.budget import check_within_budget

    record = check_within_budget("model", lambda m: _drift(-0.05), 0.1)
    assert record["float_layers"] == [] and record["tries"][0]["mean_drift_db"] == -0.05
    assert set(record) == set(quantize_within_budget(lambda ex: "m", lambda m: _drift(-0.05), lambda m: [], 0.1))
    with pytest.raises(BudgetNotMet, match="over the 0.1 dB budget"):
        check_within_budget("model", lambda m: _drift(-0.2), 0.1)
    assert check_within_budget("model", lambda m: _drift(-3.0), None)["budget_db"] is None


def test_one_session_builds_each_onnx_form_and_calibration_set_once(ckpt, tmp_path, monkeypatch):
    """``export -f onnx,openvino,tensorrt --int8`` (and the latency autotuner over two forms on top): every ONNX
    graph is exported once per deploy form and every calibration/hold-out set once, however many engines use them."""
    import scnet_deploy.calibration.budget as budget
    import scnet_deploy.exporters.onnx_graph as onnx_graph
    import scnet_deploy.exporters.torch_runner as runner_mod
    from scnet_deploy.autotune import TuneOptions

    counts = {"build_onnx": 0, "torch_to_onnx": 0, "calibration_set": 0, "holdout_set": 0}

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, wrapper)

    counting(onnx_graph, "build_onnx")
    counting(onnx_graph, "torch_to_onnx")
    counting(budget, "calibration_set")
    counting(budget, "holdout_set")
    asked, forwards = [], []  # the PyTorch reference: inputs verified against, and forward passes it ran

    class CountingReference(runner_mod.ReferenceOutputs):
        def __init__(self, module):
            super().__init__(module)
            real = self.module
            self.module = lambda x: (forwards.append(x.numpy().tobytes()), real(x))[1]

        def __call__(self, x):
            asked.append(x.numpy().tobytes())
            return super().__call__(x)
    monkeypatch.setattr(runner_mod, "ReferenceOutputs", CountingReference)
    result = export(ckpt, ExportOptions(output=tmp_path / "all", format="onnx,openvino,tensorrt", precision="int8",
                                        calib=FAST))
    assert sorted(result.manifests) == ["onnx", "openvino", "tensorrt"]
    assert counts == {"build_onnx": 1, "torch_to_onnx": 1, "calibration_set": 1, "holdout_set": 1}
    # every engine verified against the reference (ONNX graph + 3 engines), each distinct input run once in PyTorch
    assert len(asked) > len(set(asked)) and sorted(forwards) == sorted(set(asked))
    counts.update(dict.fromkeys(counts, 0))
    tuned = export(ckpt, ExportOptions(output=tmp_path / "tuned", format="onnx,openvino", precision="int8", calib=FAST,
                                       tune=TuneOptions("latency", ("dwconv", "slice"), size=(16, 16), runs=1,
                                                        tiles=())))
    assert {m["form"] for m in tuned.manifests.values()} <= {"dwconv", "slice"}
    # two forms, each built once; one export: the slice form's graph is the dwconv form's export, rewritten
    assert counts == {"build_onnx": 2, "torch_to_onnx": 1, "calibration_set": 1, "holdout_set": 1}


def test_a_speed_limit_stops_a_budget_loop_only_when_over_budget_and_slower():
    import time

    from scnet_deploy.calibration.budget import BudgetAbandoned, SpeedLimit, quantize_within_budget

    x = np.zeros((1, 3, 4, 4), np.float32)
    slow = lambda x: time.sleep(0.03)  # noqa: E731
    fast = lambda x: None  # noqa: E731
    with pytest.raises(BudgetAbandoned, match="set aside") as info:
        SpeedLimit(None, x, runs=1).check(fast, 0, -0.3)  # no limit yet: report the speed, go no further
    assert info.value.ms < 5
    SpeedLimit(10.0, x, runs=1).check(fast, 1, -0.3)  # faster than the limit: go on
    with pytest.raises(BudgetAbandoned, match="slower than 10.0 ms"):
        SpeedLimit(10.0, x, runs=1).check(slow, 1, -0.3)
    # in the loop: every try over budget is checked; each float layer adds 30 ms and 0.1 dB
    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):
        return {"mean_db": -0.9 + 0.1 * k, "worst_image": {"drift_db": -0.9 + 0.1 * k}}

    speed = lambda k, *tried: SpeedLimit(75.0, x, runs=1, margin=1.0).check(  # noqa: E731
        lambda _: time.sleep(0.03 * k), *tried)
    with pytest.raises(BudgetAbandoned):
        quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1, speed)
    assert tries == [0, 1, 2, 4]  # 120 ms with 4 in float: stopped there, not at 8
    tries.clear()
    result = quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1)
    assert tries == [0, 1, 2, 4, 8] and result["float_layers"] == list("abcdefgh")  # no limit: to the end


def test_a_speed_limited_budget_loop_stops_when_the_budget_is_out_of_its_reach():
    """Under a speed limit (the autotuner), a loop stops when the layers not yet in float could not win back the
    drift still over budget even at the rate of those already in float (the ranking puts the worst first). Without a
    limit (a plain export), the same loop runs to its end."""
    from scnet_deploy.calibration.budget import BudgetAbandoned, SpeedLimit, out_of_reach, quantize_within_budget

    x = np.zeros((1, 3, 4, 4), np.float32)
    drift = {0: -0.30, 1: -0.29, 2: -0.285, 4: -0.28, 8: -0.05}  # stuck near -0.29 until all 8 are in float
    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):
        return {"mean_db": drift[k], "worst_image": {"drift_db": drift[k]}}

    limit = SpeedLimit(1e6, x, runs=1)  # never too slow: only the reach rule can stop it
    with pytest.raises(BudgetAbandoned, match="out of reach") as info:
        quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1,
                               lambda m, *t: limit.check(lambda _: None, *t))
    assert tries == [0, 1] and [t["float_layers"] for t in info.value.tries] == [0, 1]  # 0.19 dB at 0.01 per layer
    tries.clear()
    assert quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1)["float_layers"] == \
        list("abcdefgh") and tries == [0, 1, 2, 4, 8]
    # error spread evenly over 8 layers: every step is within reach (the loop of the speed-limit test above)
    tried = lambda *pairs: [{"float_layers": k, "mean_drift_db": d} for k, d in pairs]  # noqa: E731
    assert not out_of_reach(tried((0, -0.9), (1, -0.8)), 0.1, 8)
    assert not out_of_reach(tried((0, -0.9), (1, -0.8), (2, -0.7), (4, -0.5)), 0.1, 8)
    assert out_of_reach(tried((0, -0.9), (1, -0.9)), 0.1, 8) and out_of_reach(tried((0, -0.9), (1, -0.95)), 0.1, 8)
    assert not out_of_reach(tried((0, -0.9)), 0.1, 8) and not out_of_reach(tried((0, -0.9), (1, -0.05)), 0.1, 8)


def test_a_candidate_taken_up_again_resumes_from_its_all_int8_try():
    """The autotuner's first limit stops a candidate after its all-INT8 try; the second limit shares that try
    (``SpeedLimit.first_try``), so the loop goes on from it without quantizing everything again."""
    from scnet_deploy.calibration.budget import BudgetAbandoned, SpeedLimit, quantize_within_budget

    x = np.zeros((1, 3, 4, 4), np.float32)
    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):
        return {"mean_db": -0.9 + 0.3 * k, "worst_image": {"drift_db": -0.9 + 0.3 * k}}

    first = SpeedLimit(None, x, runs=1)
    with pytest.raises(BudgetAbandoned, match="set aside"):
        quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1,
                               lambda m, *t: first.check(lambda _: None, *t), first_try=first.first_try)
    assert tries == [0] and first.first_try == {"model": 0, "drift": measure(0)}
    again = SpeedLimit(1e6, x, runs=1, first_try=first.first_try)
    result = quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1,
                                    lambda m, *t: again.check(lambda _: None, *t), first_try=again.first_try)
    assert tries == [0, 1, 2, 4] and result["float_layers"] == list("abcd")
    assert result["tries"][0]["float_layers"] == 0  # the kept try is still recorded as the first


def test_a_candidate_taken_up_again_with_none_within_budget_runs_its_loop_to_the_end_from_its_first_try():
    """``SpeedLimit(math.inf)``: no candidate within budget to beat; the loop resumes from the kept all-INT8 try and
    is neither timed nor stopped where its budget looks out of reach (a result must come out of it)."""
    from scnet_deploy.calibration.budget import SpeedLimit, quantize_within_budget

    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):  # no gain from the first layers (out of reach by their rate), then within budget with all 8
        d = -0.9 if k < 8 else -0.05
        return {"mean_db": d, "worst_image": {"drift_db": d}}

    def never_timed(_):
        raise AssertionError("timed")

    limit = SpeedLimit(math.inf, np.zeros((1, 3, 4, 4), np.float32), runs=1,
                       first_try={"model": 0, "drift": measure(0)})
    result = quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), 0.1,
                                    lambda m, *t: limit.check(never_timed, *t), first_try=limit.first_try)
    assert tries[0] != 0 and result["float_layers"] == list("abcdefgh")
