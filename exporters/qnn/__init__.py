"""Qualcomm's Hexagon NPU (HTP) through ONNX Runtime's QNN provider: QDQ graphs compiled to a context per SoC."""
