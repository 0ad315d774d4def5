"""The INT8 ONNX build shared by the ONNX Runtime and TensorRT backends: calibrate, quantize, hold to the budget."""

import shutil
import tempfile
from pathlib import Path

from scnet_deploy.calibration.budget import onnx_infer, psnr_y_of, quantize_within_budget
from scnet_deploy.calibration.data import calibration_set, holdout_pairs
from scnet_deploy.calibration.onnxruntime_int8 import layer_sensitivity, quantize_onnx


def verification_inputs(pairs) -> list:
    """Two natural-image LR crops of different, odd sizes (INT8 ranges are calibrated on images, not noise)."""
    lr = pairs[0][0].transpose(2, 0, 1)[None].astype("float32") / 255.0
    return [lr[:, :, :37, :29].copy(), lr[:, :, 5:29, 3:47].copy()]


def build_int8_onnx(ctx, out_path: Path, symmetric_activations: bool) -> dict:
    """Write the INT8 QDQ model to ``out_path``; returns its manifest section (and 'inputs' for verification)."""
    ctx.checkpoint.require_finite("calibrate")
    opts, scale = ctx.options.calib, ctx.checkpoint.spec.scale
    calib = calibration_set(opts, scale)
    pairs, holdout = holdout_pairs(opts, scale)
    fp32 = ctx.onnx()["path"]
    fp32_psnr = psnr_y_of(onnx_infer(fp32), pairs, scale)
    with tempfile.TemporaryDirectory() as tmp:
        details = {}

        def quantize(exclude):
            path = Path(tmp) / f"int8_{len(exclude)}.onnx"
            details.update(quantize_onnx(fp32, path, calib, opts.method, exclude, symmetric_activations))
            return path

        result = quantize_within_budget(
            quantize, lambda p: psnr_y_of(onnx_infer(p), pairs, scale) - fp32_psnr,
            lambda p: [name for name, _ in layer_sensitivity(fp32, p, calib.arrays[:4])], ctx.options.budget_db)
        shutil.copyfile(result["model"], out_path)
    return {"calibration": {"sources": calib.sources, "count": len(calib), "crop": opts.crop, "seed": opts.seed,
                            "method": opts.method},
            "holdout": {"sources": holdout, "fp32_psnr_y": fp32_psnr},
            "quantization": {k: v for k, v in details.items() if k != "float_convs"},
            "budget_db": result["budget_db"], "drift_db": result["drift_db"], "float_layers": result["float_layers"],
            "history": result["history"], "inputs": verification_inputs(pairs)}
