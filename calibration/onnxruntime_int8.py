"""INT8 for ONNX Runtime and TensorRT: static QDQ quantization of the verified ONNX model with ORT's quantizer.

- ONNX Runtime: per-channel symmetric int8 weights, uint8 asymmetric activations (the fast u8s8 VNNI path).
- TensorRT: explicit quantization as TensorRT 10 wants it: per-channel symmetric int8 weights and symmetric int8
  activations (zero points 0), the same calibration data.
Only convolutions are quantized; the image-space residual (bilinear skip + add) and the graph output stay float,
so calibrated ranges can never clip the output below the image range.
"""

import tempfile
from pathlib import Path

import numpy as np

from scnet_deploy.errors import ScnetDeployError

CALIB_METHODS = ("minmax", "entropy", "percentile")


class _Reader:
    """ORT's CalibrationDataReader can be read only once; this adapter re-reads our re-iterable set."""

    def __init__(self, calib):
        self.calib, self.it = calib, None

    def get_next(self):
        if self.it is None:
            self.it = iter(self.calib)
        x = next(self.it, None)
        return None if x is None else {"lr": x}

    def rewind(self):
        self.it = None


def conv_nodes(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def quantize_onnx(fp32_path: Path, out_path: Path, calib, method: str = "minmax", exclude: tuple[str, ...] = (),
                  symmetric_activations: bool = False) -> dict:
    """Write the QDQ model of ``fp32_path`` to ``out_path``; returns what was done."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise ScnetDeployError(f"--calib-method {method!r} is unknown; choose one of {list(CALIB_METHODS)}.")
    convs = conv_nodes(onnx.load(str(fp32_path)))
    unknown = sorted(set(exclude) - set(convs))
    if unknown:
        raise ScnetDeployError(f"cannot keep {unknown} in float: not convolutions of this model.")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Symbolic shape inference fails on dynamic H/W; ONNX shape inference and graph optimisation suffice.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"], nodes_to_exclude=list(exclude),
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric_activations,
                           "CalibPercentile": 99.999,
                           # TensorRT dequantizes int8 only; it fuses float biases itself. ORT fuses int32 biases.
                           "QuantizeBias": not symmetric_activations})
    quantized = [n for n in convs if n not in exclude]
    return {"method": method, "quantized_convs": len(quantized), "float_convs": sorted(exclude),
            "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel", "calibration_samples": len(calib)}


def quantized_weight_convs(model) -> list[str]:
    """Convs whose weight input comes from a DequantizeLinear of int8 data: really quantized."""
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    result = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        dq = producers.get(node.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear":
            src = inits.get(dq.input[0])
            if src is not None and src.data_type == 3:  # INT8
                result.append(node.name)
    return result


def output_is_float(model) -> bool:
    """The graph output is not produced by a DequantizeLinear (so no calibrated range can clip the image)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return all(producers[o.name].op_type != "DequantizeLinear" for o in model.graph.output)


def layer_sensitivity(fp32_path: Path, int8_path: Path, samples) -> list[tuple[str, float]]:
    """Rank the learned convolutions by the error each adds: NMSE of its output minus NMSE of its input, INT8 vs
    FP32 runs on ``samples``."""
    import onnx
    import onnxruntime as ort

    fp32 = onnx.load(str(fp32_path))
    int8 = onnx.load(str(int8_path))
    convs = [n for n in fp32.graph.node if n.op_type == "Conv"]
    names = sorted({t for n in convs for t in (n.input[0], n.output[0])} - {"lr"})

    def run(model, x):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        existing = {o.name for o in m.graph.output}
        m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in existing)
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        out = session.run(names, {"lr": x})
        return dict(zip(names, out))

    err = {t: 0.0 for t in names}
    for x in samples:
        a, b = run(fp32, x), run(int8, x)
        for t in names:
            err[t] += float(np.mean((a[t] - b[t]) ** 2) / (np.mean(a[t] ** 2) + 1e-12))
    # The depthwise shift (group > 1, one-hot weights exact in int8) adds no error of its own: not a candidate.
    learned = [n for n in convs if all(a.name != "group" or a.i == 1 for a in n.attribute)]
    added = {n.name: err[n.output[0]] - err.get(n.input[0], 0.0) for n in learned}
    return sorted(added.items(), key=lambda kv: kv[1], reverse=True)
