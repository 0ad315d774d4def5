"""Quantization-aware fine-tuning (``scnet-deploy qat``): a tiny model fine-tuned for a few steps, the checkpoint
that carries its ranges, INT8 exports that use them, the resumable run, and the INT8 speed rule."""

import importlib.util
import json

import numpy as np
import onnx
import pytest
import torch

from conftest import cli, one_line_error, save_basicsr, smooth_hr_folder, tiny_model

pytest.importorskip("modelopt.torch.quantization")

from scnet_deploy.build_options import ExportOptions  # noqa: E402
from scnet_deploy.errors import CheckpointError, ScnetDeployError  # noqa: E402
from scnet_deploy.export import export  # noqa: E402
from scnet_deploy.model.checkpoint import load_checkpoint  # noqa: E402
from scnet_deploy.qat import QatOptions, qat  # noqa: E402

STEPS = dict(steps=4, batch=2, patch=16, save_every=2, quantize="all")  # every conv but the first: each exporter's
# ranges on every kind of convolution (the default, "hr", is tested on its own)


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """(the FP32 checkpoint, its quantization-aware fine-tuning, the data folder): 4 steps of a tiny x2 model, every
    convolution but the first quantized."""
    root = tmp_path_factory.mktemp("qat")
    data = smooth_hr_folder(root / "data", 3, (48, 48))
    teacher = save_basicsr(tiny_model(2), root / "tiny_x2.pth")
    qat(teacher, QatOptions(output=root / "tiny_qat_x2.safetensors", data=(data,), **STEPS))
    return teacher, root / "tiny_qat_x2.safetensors", data


def test_training_never_sees_an_image_the_gates_judge():
    """The generated patches qat trains on are not the export hold-out's, calibration's or the pipeline's validation
    images (the same generator and seed would be the same image)."""
    from scnet_deploy.calibration.data import CONTENT_CALIBRATION_SEEDS, CONTENT_HOLDOUT_SEEDS
    from scnet_deploy.calibration.qat_training import GENERATED_SEEDS
    from scnet_deploy.pipeline import VALIDATION_CONTENT

    validation = {key for items in VALIDATION_CONTENT.values() for source, key in items if source != "skimage"}
    judged = validation | set(CONTENT_HOLDOUT_SEEDS) | set(CONTENT_CALIBRATION_SEEDS)
    assert validation and not judged & set(GENERATED_SEEDS)


def dq_scale(model, tensor: str):
    """(scale, zero point) of the DequantizeLinear that produces ``tensor`` (None where none does)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    node = producers.get(tensor)
    if node is None or node.op_type != "DequantizeLinear":
        return None
    return inits[node.input[1]], inits[node.input[2]]


def ranged_convs(model, ranges) -> list:
    """(module, Conv node) for each convolution of the Q/DQ graph whose (dequantized) weight the checkpoint ranges."""
    found = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            module = node.input[1].removesuffix("_DequantizeLinear_Output").removesuffix(".weight")
            if module in ranges.inputs:
                found.append((module, node))
    return found


def test_fine_tuning_writes_a_checkpoint_that_loads_everywhere_and_says_what_it_is(fine_tuned):
    teacher, student, _ = fine_tuned
    before, after = load_checkpoint(teacher), load_checkpoint(student)
    assert after.spec.scale == before.spec.scale and after.spec.params == before.spec.params
    assert after.quant is not None and before.quant is None
    # every learned convolution but the first (it reads the image) has both ranges, under official names
    convs = {n for n, m in before.model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(after.quant.inputs) == set(after.quant.weights) == convs - {"conv_first"}
    info = after.quant.info
    assert info["steps"] == 4 and info["teacher_sha256"] == before.sha256 and len(info["data_sha256"]) == 64
    assert "symmetric" in info["scheme"] and info["library"].startswith("nvidia-modelopt")
    assert info["equalization"]["alpha"] == 0.75  # channels equalized before quantizing (the default)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():  # equalized and fine-tuned, the float function stays the teacher's (4 small steps)
        assert float((after.model(x) - before.model(x)).abs().max()) < 0.05
    moved = [k for k, v in before.model.state_dict().items() if not torch.equal(v, after.model.state_dict()[k])]
    assert moved, "neither the equalization nor the fine-tuning changed a weight"
    shown = json.loads(cli("info", str(student), "--json").stdout)["quantization_aware"]
    assert shown["steps"] == 4 and shown["activation_ranges"] == len(after.quant.inputs)


def test_by_default_only_the_output_resolution_convolutions_are_quantized(fine_tuned, tmp_path):
    """qat's default (``--quantize hr``): ranges for the two convolutions that write output-resolution features alone
    (the last upsampling stage's last, conv_hr; the tiny x2 model has one stage); ONNX Runtime's INT8 export
    quantizes exactly those (and the shift before the first, exact at its range) and keeps the rest float."""
    teacher, _, data = fine_tuned
    out = tmp_path / "hr.safetensors"
    qat(teacher, QatOptions(output=out, data=(data,), steps=1, batch=2, patch=16))
    ranges = load_checkpoint(out).quant
    assert set(ranges.inputs) == set(ranges.weights) == {"upconv1.up_layer.4", "conv_hr"}
    assert ranges.info["quantize"] == "hr" and {"body.0.conv1", "conv_last"} <= set(ranges.info["float_convs"])
    result = export(out, ExportOptions(output=tmp_path / "ort", precision="int8", keep_slower_int8=True))
    model = onnx.load(str(tmp_path / "ort" / "model.onnx"))
    quantized = {module for module, node in ranged_convs(model, ranges) if dq_scale(model, node.input[0])}
    assert quantized == set(ranges.inputs)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    float_inputs = [n for n in convs if dq_scale(model, n.input[0]) is None]
    float_weights = {n.input[1] for n in float_inputs}
    assert float_weights >= {"body.0.conv1.weight", "body.1.conv2.weight", "upconv1.up_layer.1.weight",
                             "conv_last.weight"}
    q = result.manifest["int8"]["quantization"]
    assert q["quantized_convs"] == len(convs) - len(float_inputs) < q["convolutions"]
    if importlib.util.find_spec("openvino"):  # OpenVINO counts what runs int8 in its IR: the same convolutions
        ov = export(out, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8",
                                       keep_slower_int8=True)).manifest["int8"]["quantization"]
        assert ov["quantized_convs"] == q["quantized_convs"], ov["float_convs_in_ir"]


def test_export_int8_from_it_uses_its_ranges_not_calibration(fine_tuned, tmp_path):
    """ONNX Runtime: every quantized convolution's input scale is the checkpoint's amax/127 (uint8, zero point 128:
    the int8 grid), its weights' per-channel scales the checkpoint's, and nothing was calibrated."""
    _, student, _ = fine_tuned
    ranges = load_checkpoint(student).quant
    result = export(student, ExportOptions(output=tmp_path / "ort", precision="int8", keep_slower_int8=True))
    model = onnx.load(str(tmp_path / "ort" / "model.onnx"))
    q = result.manifest["int8"]["quantization"]
    assert q["method"] == "quantization-aware ranges" and "calibration" not in result.manifest["int8"]
    assert q["quantized_convs"] == q["convolutions"] - 1 and q["float_without_range"]  # conv_first
    ranged = ranged_convs(model, ranges)
    for module, node in ranged:
        scale, zero = dq_scale(model, node.input[0])
        assert np.isclose(float(scale), ranges.inputs[module] / 127, rtol=1e-6) and int(zero) == 128, module
        w_scale, w_zero = dq_scale(model, node.input[1])
        np.testing.assert_allclose(w_scale, ranges.weights[module] / 127, rtol=1e-6)
        assert not np.any(w_zero)
    assert len(ranged) == len(ranges.inputs)
    assert result.manifest["checkpoint"]["quantization_aware"]["steps"] == 4
    # the residual adds read the stream as the training computed it: float by default, dequantized where it
    # quantized the stream (qat --quantized-residual)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert adds and not any(producers.get(i) == "DequantizeLinear" for n in adds for i in n.input)
    from dataclasses import replace

    from scnet_deploy.calibration.onnxruntime_int8 import quantize_onnx

    stream = replace(ranges, info={**ranges.info, "residual_stream": "quantized"})
    quantize_onnx(_hub(student, tmp_path), tmp_path / "q.onnx",
                  [np.zeros((1, 3, 8, 8), np.float32)], ranges=stream)
    q_model = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n.op_type for n in q_model.graph.node for o in n.output}
    assert any(producers.get(i) == "DequantizeLinear" for n in q_model.graph.node if n.op_type == "Add"
               for i in n.input)


def _hub(checkpoint, tmp_path):
    from scnet_deploy.build_options import OnnxOptions
    from scnet_deploy.exporters.onnx_graph import build_onnx

    build_onnx(load_checkpoint(checkpoint).model, OnnxOptions(), tmp_path / "fp32.onnx", 3)
    return tmp_path / "fp32.onnx"


def test_openvino_int8_from_it_converts_the_symmetric_qdq_graph(fine_tuned, tmp_path):
    pytest.importorskip("openvino")
    _, student, _ = fine_tuned
    result = export(student, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8",
                                           keep_slower_int8=True))
    q = result.manifest["int8"]["quantization"]
    assert q["method"] == "quantization-aware ranges" and q["activations"] == "int8 symmetric"
    assert q["quantized_convs"] >= q["convolutions"] - 2  # conv_first float; no conv left without its ranges
    assert result.manifest["verification"]["passed"]


def test_qnn_a8w8_takes_its_convolution_scales(fine_tuned, tmp_path):
    """The HTP's QDQ graph (before compilation): the checkpoint's scales on every ranged convolution."""
    pytest.importorskip("onnxruntime_qnn")
    from scnet_deploy.calibration.qnn_quant import quantize_qdq

    _, student, _ = fine_tuned
    ckpt = load_checkpoint(student)
    _hub(student, tmp_path)
    calib = [np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)]
    record = quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "qdq.onnx", calib, "int8", ranges=ckpt.quant)
    assert record["quantization_aware"]["steps"] == 4
    model = onnx.load(str(tmp_path / "qdq.onnx"))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and "body.0.conv1" in n.input[1])
    scale, zero = dq_scale(model, conv.input[0])
    assert np.isclose(float(scale), ckpt.quant.inputs["body.0.conv1"] / 127, rtol=1e-6) and int(zero) == 128


def test_a_killed_run_resumes_and_ends_where_an_unbroken_run_ends(fine_tuned, tmp_path):
    """Seeded: the same options give the same checkpoint; killed after step 3 (state saved at step 2), the rerun
    says where it resumes and ends bit-identical to the unbroken run."""
    _, student, data = fine_tuned
    teacher = fine_tuned[0]
    out = tmp_path / "again.safetensors"  # no x2 in its name: the record carries the scale

    def stop_after_three(event):
        if event.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        qat(teacher, QatOptions(output=out, data=(data,), **STEPS), progress=stop_after_three)
    assert not out.exists() and QatOptions(output=out).state_path.exists()
    events = []
    qat(teacher, QatOptions(output=out, data=(data,), **STEPS), progress=events.append)
    assert any("resumed at step 2" in e.message for e in events)
    assert not QatOptions(output=out).state_path.exists()
    a, b = load_checkpoint(student), load_checkpoint(out)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
    assert a.quant.inputs == b.quant.inputs


def test_mistakes_are_one_line(fine_tuned, tmp_path):
    teacher, student, data = fine_tuned
    with pytest.raises(ScnetDeployError, match="already quantization-aware"):
        qat(student, QatOptions(output=tmp_path / "x.safetensors", data=(data,), **STEPS))
    with pytest.raises(ScnetDeployError, match="--data"):
        qat(teacher, QatOptions(output=tmp_path / "x.safetensors", data=(tmp_path / "nowhere",)))
    proc = cli("qat", str(teacher), "--data", str(data), "-o", str(tmp_path / "x.pth"))
    assert proc.returncode == 2 and ".safetensors" in one_line_error(proc)
    proc = cli("qat", str(teacher), "--data", str(data), "-o", str(tmp_path / "x.safetensors"), "--quantize", "body")
    assert proc.returncode == 2 and "--quantize 'body' is not a choice; use one of hr, all" in one_line_error(proc)


def test_zero_steps_equalizes_and_takes_the_ranges_keeping_the_function(fine_tuned, tmp_path):
    """``--steps 0``: the channel-equalized teacher (the same function) with its calibrated ranges, no training; with
    ``--no-equalize`` the very teacher's weights."""
    teacher, _, data = fine_tuned
    before = load_checkpoint(teacher)
    x = torch.rand(1, 3, 12, 12)
    for equalize in (True, False):
        out = tmp_path / f"zero_{equalize}.safetensors"
        qat(teacher, QatOptions(output=out, data=(data,), steps=0, batch=2, patch=16, equalize=equalize))
        after = load_checkpoint(out)
        assert after.quant.info["steps"] == 0 and after.quant.info["final_loss"] is None
        assert set(after.quant.inputs) and (after.quant.info["equalization"] is not None) == equalize
        same = all(torch.equal(v, after.model.state_dict()[k]) for k, v in before.model.state_dict().items())
        assert same != equalize  # equalizing rescales the weights; not equalizing leaves them as they were
        with torch.no_grad():
            assert torch.allclose(after.model(x), before.model(x), atol=1e-5)


def test_ranges_for_what_is_not_a_convolution_are_refused(fine_tuned, tmp_path):
    from safetensors.torch import load_file, save_file

    _, student, _ = fine_tuned
    tensors = load_file(str(student))
    tensors["quant.body.0.relu.input_amax"] = torch.tensor(1.0)
    save_file(tensors, str(tmp_path / "odd_x2.safetensors"))
    with pytest.raises(CheckpointError, match="not convolutions"):
        load_checkpoint(tmp_path / "odd_x2.safetensors")


def test_an_int8_engine_no_faster_than_fp32_is_refused_with_both_numbers(fine_tuned, tmp_path, monkeypatch):
    """Timings scripted (FP32 10 ms, INT8 12 ms): refused, both numbers in the line; kept with --keep-slower-int8,
    recorded; and where INT8 is faster its speed-up is in the manifest."""
    import scnet_deploy.int8_speed as speed

    _, student, _ = fine_tuned
    monkeypatch.setattr(speed, "time_in_turns", lambda infers, x, rounds=5: [10.0, 12.0][:len(infers)])
    with pytest.raises(speed.Int8NotFaster, match=r"not 5% faster than its FP32 engine here: 12\.0 ms against "
                                                  r"FP32's 10\.0 ms at 180x320"):
        export(student, ExportOptions(output=tmp_path / "slow", precision="int8"))
    assert not (tmp_path / "slow").exists()
    monkeypatch.setattr(speed, "time_in_turns", lambda infers, x, rounds=5: [10.0, 9.7][:len(infers)])
    with pytest.raises(speed.Int8NotFaster, match=r"9\.7 ms"):  # 3% faster: timing noise, not INT8's speed
        export(student, ExportOptions(output=tmp_path / "noise", precision="int8"))
    monkeypatch.setattr(speed, "time_in_turns", lambda infers, x, rounds=5: [10.0, 12.0][:len(infers)])
    kept = export(student, ExportOptions(output=tmp_path / "kept", precision="int8", keep_slower_int8=True))
    assert kept.manifest["int8_speed"]["kept_slower"] and kept.manifest["int8_speed"]["int8_ms"] == 12.0
    monkeypatch.setattr(speed, "time_in_turns", lambda infers, x, rounds=5: [10.0, 5.0][:len(infers)])
    fast = export(student, ExportOptions(output=tmp_path / "fast", precision="int8"))
    assert fast.manifest["int8_speed"]["speedup"] == 2.0 and not fast.manifest["int8_speed"]["kept_slower"]


def test_the_pipeline_takes_int8_from_a_quantization_aware_checkpoint_of_the_same_model_only(fine_tuned, tmp_path):
    from scnet_deploy.build_options import PipelineOptions
    from scnet_deploy.pipeline import quantization_aware

    teacher, student, _ = fine_tuned
    ckpt = load_checkpoint(teacher)
    assert quantization_aware(ckpt, teacher, PipelineOptions(qat=student)).quant is not None
    assert quantization_aware(ckpt, teacher, PipelineOptions()) is None  # not the reference: calibrated
    other = save_basicsr(tiny_model(2, seed=1), tmp_path / "other_x2.pth")
    with pytest.raises(ScnetDeployError, match="fine-tuned from another checkpoint"):
        quantization_aware(load_checkpoint(other), other, PipelineOptions(qat=student))
    with pytest.raises(ScnetDeployError, match="carries no quantizer ranges"):
        quantization_aware(ckpt, teacher, PipelineOptions(qat=other))


def test_tensorrt_int8_from_it_takes_its_scales_symmetric(fine_tuned, tmp_path):
    """TensorRT's explicit Q/DQ graph (built here; no TensorRT to build its engine): the checkpoint's scales on every
    ranged convolution, int8 zero points 0 (its float parts in FP16, so the scales are FP16-rounded)."""
    _, student, _ = fine_tuned
    ranges = load_checkpoint(student).quant
    m = export(student, ExportOptions(output=tmp_path / "trt", format="tensorrt", precision="int8")).manifest
    assert m["int8"]["quantization"]["method"] == "quantization-aware ranges" and not m["int8_speed"]["timed"]
    model = onnx.load(str(tmp_path / "trt" / "model.onnx"))
    ranged = ranged_convs(model, ranges)
    for module, node in ranged:
        scale, zero = dq_scale(model, node.input[0])
        assert np.isclose(float(scale), ranges.inputs[module] / 127, rtol=1e-3) and zero.dtype == np.int8 and zero == 0
    assert len(ranged) == len(ranges.inputs)
