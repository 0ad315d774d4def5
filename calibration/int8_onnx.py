"""The INT8 ONNX build shared by the ONNX Runtime and TensorRT backends: calibrate, quantize, hold to the budget."""

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from scnet_deploy.calibration.budget import Int8Data, Quantized, SpeedLimit, int8_section, quantize_within_budget
from scnet_deploy.calibration.onnxruntime_int8 import layer_sensitivity, quantize_onnx


def onnx_infer(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]


def build_int8_onnx(fp32: Path, out_path: Path, data: Int8Data, budget_db: float | None,
                    symmetric_activations: bool, speed_limit: SpeedLimit | None = None,
                    finish: Callable[[Path], None] | None = None) -> Quantized:
    """Write the INT8 QDQ model of the verified FP32 ONNX ``fp32`` to ``out_path``, within ``budget_db`` on
    ``data``'s hold-out. ``speed_limit`` (ONNX Runtime engines only): see ``budget.SpeedLimit``. ``finish(path)``
    rewrites each quantized graph in place before it is measured (TensorRT: its float parts to FP16), so the budget
    holds for the graph that ships."""
    calib, baseline = data.calib, data.baseline(onnx_infer(fp32))
    with tempfile.TemporaryDirectory() as tmp:
        details = {}

        def quantize(exclude):
            path = Path(tmp) / f"int8_{len(exclude)}.onnx"
            details.update(quantize_onnx(fp32, path, calib, data.options.method, exclude, symmetric_activations))
            if finish is not None:
                finish(path)
            return path

        result = quantize_within_budget(
            quantize, lambda p: baseline.measure(onnx_infer(p)),
            lambda p: [name for name, _ in layer_sensitivity(fp32, p, calib.arrays[:4])], budget_db,
            None if speed_limit is None else lambda p, *tried: speed_limit.check(onnx_infer(p), *tried))
        shutil.copyfile(result["model"], out_path)
    quantization = {k: v for k, v in details.items() if k != "float_convs"}
    return Quantized(out_path, int8_section(calib, data.options, baseline, result, quantization))
