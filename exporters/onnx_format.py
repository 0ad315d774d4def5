"""The ``onnx`` export format: ``model.onnx`` (verified) + manifest fields."""

from pathlib import Path

from scnet_deploy.exporters.onnx_export import build_onnx, options_dict
from scnet_deploy.exporters.registry import Format, register
from scnet_deploy.manifest import tool_versions

ONNX_FILE = "model.onnx"


def build(checkpoint, options, workdir: Path) -> dict:
    result = build_onnx(checkpoint.model, options.onnx, workdir / ONNX_FILE, checkpoint.spec.num_in_ch)
    return {
        "backend": "onnxruntime",
        "precision": "fp32",
        "files": [ONNX_FILE],
        "onnx": {
            "options": options_dict(options.onnx),
            "simplifier": result.simplifier,
            "nodes_before_simplify": result.nodes_before,
            "nodes_after_simplify": result.nodes_after,
            "node_count": sum(result.nodes_after.values()),
            "seconds": result.seconds,
        },
        "verification": result.verification,
        "versions": tool_versions("torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "onnxscript", "numpy"),
    }


register(Format("onnx", build, "ONNX model (shift rewritten, simplified, dynamic batch/height/width)"))
