"""ONNX Runtime, the build side: the hub ONNX model copied (it was verified in ONNX Runtime), or quantized to INT8."""

import shutil
from pathlib import Path

from scnet_deploy.exporters.onnxruntime.runtime import MODEL_FILE, OrtRunner, providers

def build(ctx, workdir: Path) -> dict:
    hub = ctx.onnx()
    onnx_section = {k: v for k, v in hub["section"].items() if k != "verification"}
    if ctx.options.precision == "int8":
        from scnet_deploy.calibration.onnxruntime_int8 import build_int8_onnx

        quantized = build_int8_onnx(hub["path"], workdir / MODEL_FILE, ctx.int8_data(), ctx.options.gate(),
                                    symmetric_activations=False, speed_limit=ctx.speed_limit,
                                    ranges=ctx.checkpoint.quant)
        if quantized.abandoned is not None:  # its speed limit stopped the budget loop: nothing written
            return {"abandoned": quantized.abandoned}
        return {"files": [MODEL_FILE], "onnx": onnx_section, "int8": quantized.section.to_dict()}
    shutil.copyfile(hub["path"], workdir / MODEL_FILE)
    # The hub model was verified in ONNX Runtime against PyTorch when it was built: that is this engine.
    return {"files": [MODEL_FILE], "onnx": onnx_section, "verification": hub["section"]["verification"]}


def verification_runner(workdir: Path, fields: dict, precision: str):
    return OrtRunner(workdir / MODEL_FILE, precision=precision), None


def candidate_forms(precision: str) -> tuple[str, ...]:
    """On CPU the forms ever measured fastest there (``options.CPU_FORMS``); with the CUDA provider, every form."""
    from scnet_deploy.options import CANDIDATE_FORMS, CPU_FORMS

    return CANDIDATE_FORMS if providers()[0] == "CUDAExecutionProvider" else CPU_FORMS

