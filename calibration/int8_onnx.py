"""The INT8 ONNX build shared by the ONNX Runtime and TensorRT backends: calibrate, quantize, hold to the budget."""

import shutil
import tempfile
from pathlib import Path

from scnet_deploy.calibration.budget import Baseline, int8_section, psnr_scores, quantize_within_budget, \
    verification_inputs
from scnet_deploy.calibration.data import calibration_set, holdout_set
from scnet_deploy.calibration.onnxruntime_int8 import layer_sensitivity, quantize_onnx


def onnx_infer(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]


def build_int8_onnx(fp32: Path, out_path: Path, options, scale: int, budget_db: float | None,
                    symmetric_activations: bool) -> dict:
    """Write the INT8 QDQ model of the verified FP32 ONNX ``fp32`` to ``out_path``; returns its manifest section
    (and 'inputs' for verification)."""
    calib = calibration_set(options, scale)
    holdout = holdout_set(options, scale)
    baseline = Baseline(holdout, psnr_scores(onnx_infer(fp32), holdout, scale), scale)
    with tempfile.TemporaryDirectory() as tmp:
        details = {}

        def quantize(exclude):
            path = Path(tmp) / f"int8_{len(exclude)}.onnx"
            details.update(quantize_onnx(fp32, path, calib, options.method, exclude, symmetric_activations))
            return path

        result = quantize_within_budget(
            quantize, lambda p: baseline.measure(onnx_infer(p)),
            lambda p: [name for name, _ in layer_sensitivity(fp32, p, calib.arrays[:4])], budget_db)
        shutil.copyfile(result["model"], out_path)
    quantization = {k: v for k, v in details.items() if k != "float_convs"}
    return {**int8_section(calib, options, baseline, result, quantization), "inputs": verification_inputs(holdout)}
