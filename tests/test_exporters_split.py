"""exporters/split.py: exact split execution: an engine's graph cut at the body's output, the body on the whole
image and the tail on tiles; its output is the whole engine's."""

import numpy as np
import pytest
import torch

from conftest import tiny_model
from scnet_deploy import autotune
from scnet_deploy.build_options import TuneOptions
from scnet_deploy.build_options import CalibOptions
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.build_options import OnnxOptions
from scnet_deploy.exporters.split import SplitRunner, tail_radius
from scnet_deploy.runtime import open_model


FORMS = {"dwconv": OnnxOptions(), "slice+cbu+skip_as_conv": OnnxOptions(shift="slice", conv_before_upsample=True,
                                                                         skip_as_conv=True)}


@pytest.mark.parametrize("scale,upsampler", [(4, "mlp"), (3, "pixelshuffle"), (8, "mlp")])
def test_the_tail_radius_is_enough_and_not_more(scale, upsampler):
    """A change of the features one pixel beyond the tail's radius from a window leaves the window's output alone;
    one within the radius (the tail's real reach) changes it."""
    from scnet_deploy.model.arch import detect_arch

    model = tiny_model(scale, upsampler)
    arch = detect_arch(model.state_dict(), scale).to_dict()
    radius = tail_radius(arch)
    assert radius == 2 * len({2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]) + 1

    def tail(features, image):
        out = features
        for upconv in model.upconvs():
            out = model.lrelu(upconv(out))
        return model.conv_last(model.lrelu(model.conv_hr(out))) + model.skip(image)

    f, image = torch.rand(1, 16, 24, 24), torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        base = tail(f, image)[..., 8 * scale:16 * scale, 8 * scale:16 * scale]
        far, near = f.clone(), f.clone()
        far[..., 8 - radius - 1, :] += 1
        near[..., 8 - 1, :] += 1
        assert torch.equal(tail(far, image)[..., 8 * scale:16 * scale, 8 * scale:16 * scale], base)
        assert not torch.equal(tail(near, image)[..., 8 * scale:16 * scale, 8 * scale:16 * scale], base)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("openvino", marks=pytest.mark.openvino)])
def test_split_execution_is_the_whole_engine(ckpt, tmp_path, fmt, form, precision):
    """FP32 and INT8 engines of both backends that can cut their graph, two forms: the split output equals the
    whole engine's at tile sides that cut the image into many tiles, border tiles and one tile. OpenVINO INT8: the
    CPU plugin compiles the two parts of the quantized graph apart (the body's output crosses in f32 where the whole
    graph fuses the last add with the next quantizer), so outputs differ by roundings: >= 50 dB PSNR to the whole
    engine, the autotuner's rule for split execution of a reduced precision."""
    from scnet_deploy.exporters.runner import SAME_ENGINE_MIN_PSNR_DB as SPLIT_MIN_PSNR_DB
    from scnet_deploy.exporters.runner import psnr_vs_reference

    if fmt == "openvino":
        pytest.importorskip("openvino")
        if precision == "int8":
            pytest.importorskip("nncf", reason="nncf is not installed")
    export(ckpt, ExportOptions(output=tmp_path / "a", format=fmt, precision=precision, onnx=FORMS[form],
                               calib=CalibOptions(count=8, crop=32), budget_db=None, keep_slower_int8=True))
    x = np.random.default_rng(1).random((2, 3, 37, 41), dtype=np.float32)
    with open_model(tmp_path / "a") as runner:
        whole = runner.infer(x)
        for tile in (8, 16, 40):
            split = SplitRunner(runner, tile)
            assert split.halo == 5 and split.infer(x).shape == whole.shape
            out = split.infer(x)
            if fmt == "openvino" and precision == "int8":
                assert psnr_vs_reference(out, whole) >= SPLIT_MIN_PSNR_DB, (tile, form)
            else:
                assert np.abs(out - whole).max() <= 1e-5, (tile, fmt, form, precision)


def test_a_graph_without_a_residual_add_is_not_split():
    import onnx
    from onnx import TensorProto, helper

    from scnet_deploy.exporters.split import onnx_body_output

    graph = helper.make_graph([helper.make_node("Relu", ["lr"], ["sr"])], "g",
                              [helper.make_tensor_value_info("lr", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("sr", TensorProto.FLOAT, [1, 3, 4, 4])])
    assert onnx_body_output(helper.make_model(graph)) is None
    assert onnx.checker.check_model(helper.make_model(graph)) is None


def test_a_split_measured_faster_is_chosen_recorded_and_every_verb_runs_it_exactly(ckpt, tmp_path, monkeypatch):
    """Pretend split execution measured faster than the whole image and tiles (the measurement is the one tiles
    use, tested in test_autotune.py): the artifact records it and opens as a SplitRunner with the same output."""
    real = autotune._time_tiles

    def split_faster(runner, *args):
        timings = real(runner, *args)
        assert "split 16" in timings and timings["split 16"]["max_abs_diff_to_whole"] <= 1e-5
        return {**timings, "split 16": {**timings["split 16"], "median_ms": 0.001, "from": "in turn"}}

    monkeypatch.setattr(autotune, "_time_tiles", split_faster)
    result = export(ckpt, ExportOptions(output=tmp_path / "a", tune=TuneOptions(
        "latency", ("dwconv",), (40, 40), 1, (32,), split_tiles=(16,))))
    assert result.manifest["autotune"]["split"] == 16 and result.manifest["autotune"]["tile"] is None
    x = np.random.default_rng(1).random((1, 3, 37, 41), dtype=np.float32)
    with open_model(tmp_path / "a") as runner, torch.no_grad():
        assert isinstance(runner, SplitRunner) and runner.tile == 16
        ref = tiny_model(4, "mlp")(torch.from_numpy(x)).numpy()
        assert np.abs(runner.infer(x) - ref).max() <= 1e-4
        assert np.abs(runner.worker().infer(x) - ref).max() <= 1e-4


def test_a_split_slower_than_the_whole_image_is_not_kept(ckpt, tmp_path, monkeypatch):
    """Split execution made slow: screened once (its exactness check is its warm-up), not timed again, not kept."""
    from scnet_deploy.exporters import split as split_module

    calls = []
    real_infer = split_module.SplitRunner._infer

    def slow(self, lr):
        calls.append(lr.shape)
        import time

        time.sleep(0.5)
        return real_infer(self, lr)

    monkeypatch.setattr(split_module.SplitRunner, "_infer", slow)
    result = export(ckpt, ExportOptions(output=tmp_path / "a", tune=TuneOptions(
        "latency", ("dwconv",), (40, 40), 4, (), split_tiles=(16,))))
    record = result.manifest["autotune"]
    assert record["split"] is None and record["tiles"]["split 16"]["from"] == "screening"
    assert len(calls) == 2  # the check, then one timed run already slower than the whole image: given up
    with open_model(tmp_path / "a") as runner:
        assert not isinstance(runner, SplitRunner)


def test_without_the_onnx_package_an_onnxruntime_engine_is_not_split_and_says_why(ckpt, tmp_path, monkeypatch):
    """A device's torch-free install has onnxruntime but not onnx, which cuts the graph: no split is tried there,
    and an artifact tuned to run split says in one line what is missing."""
    import importlib.util

    from scnet_deploy.errors import ScnetDeployError

    export(ckpt, ExportOptions(output=tmp_path / "a"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with open_model(tmp_path / "a") as runner:
        assert runner.parts() is None
        with pytest.raises(ScnetDeployError, match="pip install onnx"):
            SplitRunner(runner, 16)
