"""INT8 for ONNX Runtime and TensorRT: static QDQ quantization of the verified ONNX model with ORT's quantizer.

- ONNX Runtime: per-channel symmetric int8 weights, uint8 asymmetric activations (the fast u8s8 VNNI path).
- TensorRT: explicit quantization as TensorRT 10 wants it: per-channel symmetric int8 weights and symmetric int8
  activations (zero points 0), the same calibration data.
Only convolutions are quantized. Known ranges are never calibrated: the input ``lr`` is an image in [0, 1] and its
quantizer uses exactly that range; the image-space residual (the bilinear skip reading ``lr``, the add) and the graph
output stay float, so no calibrated range can clip the image (ORT's quantizer rewires every consumer of a quantized
tensor to its DequantizeLinear: ``keep_float_paths`` gives the skip its float input back).

``build_int8_onnx`` is the INT8 ONNX build both backends share: calibrate, quantize, hold to the accuracy gate.
"""

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scnet_deploy.calibration.budget import (Int8Data, Quantized, SpeedLimit, int8_section, quantize_within_budget,
                                             rank_by_added_error)
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.gate import AccuracyGate
from scnet_deploy.image_path import skip_convs
from scnet_deploy.manifest import INPUT_NAME

if TYPE_CHECKING:
    from scnet_deploy.model.quant_ranges import QuantRanges

CALIB_METHODS = ("minmax", "entropy", "percentile")
INPUT = INPUT_NAME
QUANTIZED_OPS = ("Conv",)


def keep_float_paths(model, only_input: bool, float_convs: tuple[str, ...] = ()) -> int:
    """Rewire non-quantized consumers (the bilinear skip's Resize; with ``only_input`` off also the residual Adds)
    of activation Q->DQ pairs to the float tensor each pair quantizes, and drop Q/DQ nodes left without consumers.
    Returns how many inputs were rewired.

    ONNX Runtime: the input only. Inside the network a float consumer of a quantized activation stops ORT fusing
    the producing conv with its QuantizeLinear (measured 3x slower), and the calibrated range there is what the
    budget measures. The TensorRT graph: every one, which keeps the residual adds in float and drifted half as much
    (benchmarks/results/int8_variants.md; TensorRT's speed could not be measured here). Convs kept in float
    (``float_convs``, the budget's fallback) read float inputs too: ORT's quantizer would otherwise hand them the
    dequantized tensor their quantized neighbours share."""
    producers = {o: n for n in model.graph.node for o in n.output}
    rewired = 0
    for node in model.graph.node:
        kept_float = node.name in float_convs
        if (node.op_type in QUANTIZED_OPS and not kept_float) or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and (q.input[0] == INPUT or not only_input
                                                                    or kept_float):
                node.input[i] = q.input[0]
                rewired += 1
    graph_outputs = {o.name for o in model.graph.output}
    while True:  # remove Q/DQ nodes nothing reads any more
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            for init in [t for t in model.graph.initializer if t.name not in used]:
                model.graph.initializer.remove(init)
            return rewired
        for n in dead:
            model.graph.node.remove(n)


class _Reader:
    """ORT's CalibrationDataReader can be read only once; this adapter re-reads our re-iterable set."""

    def __init__(self, calib):
        self.calib, self.it = calib, None

    def get_next(self):
        if self.it is None:
            self.it = iter(self.calib)
        x = next(self.it, None)
        return None if x is None else {INPUT: x}

    def rewind(self):
        self.it = None


def conv_nodes(model) -> list[str]:
    """The convolutions INT8 quantizes: every one but the image skip's (``image_path.skip_convs``)."""
    image = set(skip_convs(model))
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in image]


def quantize_onnx(fp32_path: Path, out_path: Path, calib, method: str = "minmax", exclude: tuple[str, ...] = (),
                  symmetric_activations: bool = False, ranges: "QuantRanges | None" = None) -> dict:
    """Write the QDQ model of ``fp32_path`` to ``out_path``; returns what was done. ``ranges``: a
    quantization-aware checkpoint's (``qat``): every scale is its, nothing is calibrated (``calib``'s first crop
    only runs ORT's calibrator, whose ranges the overrides replace), a convolution without a range stays float, and
    the residual adds read the stream as the training computed them: float, or dequantized where it quantized the
    stream (``qat --quantized-residual``, ONNX Runtime's fast graph)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise ScnetDeployError(f"--calib-method {method!r} is unknown; choose one of {list(CALIB_METHODS)}.")
    fp32 = onnx.load(str(fp32_path))
    convs = conv_nodes(fp32)
    unknown = sorted(set(exclude) - set(convs))
    if unknown:
        raise ScnetDeployError(f"cannot keep {unknown} in float: not convolutions of this model.")
    overrides = {INPUT: [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]}
    unranged = []
    if ranges is not None:
        from scnet_deploy.calibration.qat_ranges import tensor_overrides

        overrides, unranged = tensor_overrides(fp32, ranges, unsigned=not symmetric_activations)
        exclude = tuple(exclude) + tuple(n for n in unranged if n not in exclude)
        calib = list(calib)[:1]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Symbolic shape inference fails on dynamic H/W; ONNX shape inference and graph optimisation suffice.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
            nodes_to_exclude=list(exclude) + skip_convs(fp32),
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": symmetric_activations,
                           "CalibPercentile": 99.999,
                           "TensorQuantOverrides": overrides,
                           # TensorRT dequantizes int8 only; it fuses float biases itself. ORT fuses int32 biases.
                           "QuantizeBias": not symmetric_activations})
    model = onnx.load(str(out_path))
    # a quantization-aware graph: the residual adds read the stream as its training computed them
    only_input = not symmetric_activations if ranges is None else ranges.quantized_residual
    keep_float_paths(model, only_input=only_input, float_convs=tuple(exclude))
    onnx.save(model, str(out_path))
    quantized = [n for n in convs if n not in exclude]
    found = {"input_range": [0.0, 1.0],
             "float_paths": "image-space skip and output" + ("" if only_input else ", residual adds"),
             "method": method, "quantized_convs": len(quantized), "convolutions": len(convs),
             "float_convs": sorted(exclude),
            "activations": "int8 symmetric" if symmetric_activations else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel", "calibration_samples": len(calib)}
    if ranges is None:
        return found
    return {**found, "method": "quantization-aware ranges", "calibration_samples": 0, "input_range": None,
            "activations": "int8 symmetric" + ("" if symmetric_activations else " (as uint8, zero point 128)"),
            "float_without_range": unranged, "quantization_aware": ranges.info}


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


def quantized_input_convs(model) -> list[str]:
    """Convs whose data input is dequantized int8/uint8: they run quantized (a conv kept in float reads a float
    tensor; its weights may still be a shared, exactly representable int8 tensor, as the shift's one-hot kernels)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "DequantizeLinear"]


def output_is_float(model) -> bool:
    """The graph output is not produced by a DequantizeLinear (so no calibrated range can clip the image)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    return all(producers[o.name].op_type != "DequantizeLinear" for o in model.graph.output)


def reads_input(node, producers) -> bool:
    """Whether ``node`` quantizes the graph input, directly or through a Cast (FP16 graphs cast it first)."""
    source = producers.get(node.input[0])
    return node.input[0] == INPUT or (source is not None and source.op_type == "Cast" and source.input[0] == INPUT)


def dequantized_readers(model) -> list[str]:
    """Nodes other than the quantized ops that read the dequantized (clipped) input instead of the input itself
    (should be none: the image-space skip reads the float input)."""
    producers = {o: n for n in model.graph.node for o in n.output}

    def is_dequantized_input(name):
        dq = producers.get(name)
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return q is not None and q.op_type == "QuantizeLinear" and reads_input(q, producers)

    return [n.name for n in model.graph.node if n.op_type not in QUANTIZED_OPS + ("QuantizeLinear",)
            and any(is_dequantized_input(i) for i in n.input)]


def input_range(model) -> tuple[float, float] | None:
    """The float range the input's QuantizeLinear represents, or None when the input is not quantized."""
    import onnx

    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and reads_input(node, producers):
            scale = float(inits[node.input[1]])
            zp = inits[node.input[2]] if len(node.input) > 2 else np.array(0, np.uint8)
            info = np.iinfo(zp.dtype)
            return (float((info.min - int(zp)) * scale), float((info.max - int(zp)) * scale))
    return None


def tensors_of(model, names: list[str], x: np.ndarray) -> dict:
    """The values of the tensors ``names`` when ``model`` (an ONNX ModelProto, left as it is) runs on ``x`` in ONNX
    Runtime's CPU: a copy of the graph with them as outputs."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in names if t not in existing)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {INPUT: x})))


def layer_sensitivity(fp32_path: Path, int8_path: Path, samples) -> list[tuple[str, float]]:
    """Rank the convolutions by the error each adds: NMSE of its output minus NMSE of its (float) input, INT8 vs
    FP32 runs on ``samples``."""
    import onnx

    fp32 = onnx.load(str(fp32_path))
    int8 = onnx.load(str(int8_path))
    quantized = set(conv_nodes(fp32))
    convs = [n for n in fp32.graph.node if n.name in quantized]
    names = sorted({t for n in convs for t in (n.input[0], n.output[0])} - {INPUT})

    # Every conv is a candidate: the depthwise shift's one-hot weights are exact in int8, but the range calibrated for
    # its input can clip, and that error is counted as added by it.
    learned = {n.name: (n.input[0], n.output[0]) for n in convs}
    return rank_by_added_error(learned, [(tensors_of(fp32, names, x), tensors_of(int8, names, x)) for x in samples])

def onnx_infer(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]


def build_int8_onnx(fp32: Path, out_path: Path, data: Int8Data, gate: AccuracyGate,
                    symmetric_activations: bool, speed_limit: SpeedLimit | None = None,
                    finish: Callable[[Path], None] | None = None, ranges: "QuantRanges | None" = None) -> Quantized:
    """Write the INT8 QDQ model of the verified FP32 ONNX ``fp32`` to ``out_path``, within the accuracy ``gate`` on
    ``data``'s hold-out. ``speed_limit`` (ONNX Runtime engines only): see ``budget.SpeedLimit``. ``finish(path)``
    rewrites each quantized graph in place before it is measured (TensorRT: its float parts to FP16), so the budget
    holds for the graph that ships. ``ranges``: a quantization-aware checkpoint's (``quantize_onnx``)."""
    calib, baseline = data.calib, data.baseline(onnx_infer(fp32), gate.visible_levels)
    with tempfile.TemporaryDirectory() as tmp:
        details = {}

        def quantize(exclude):
            path = Path(tmp) / f"int8_{len(exclude)}.onnx"
            details.update(quantize_onnx(fp32, path, calib, data.options.method, exclude, symmetric_activations,
                                         ranges))
            if finish is not None:
                finish(path)
            return path

        result = quantize_within_budget(
            quantize, lambda p: baseline.measure(onnx_infer(p)),
            lambda p: [name for name, _ in layer_sensitivity(fp32, p, calib.arrays[:4])], gate,
            None if speed_limit is None else lambda p, *tried: speed_limit.check(onnx_infer(p), *tried))
        if result["abandoned"] is not None:
            return Quantized(None, None, result["abandoned"])
        shutil.copyfile(result["model"], out_path)
    quantization = {k: v for k, v in details.items() if k != "float_convs"}
    return Quantized(out_path, int8_section(None if ranges is not None else calib, data.options, baseline, result,
                                            quantization))
