"""Quantization for Qualcomm's HTP: the verified ONNX model to a QDQ graph in the scheme the HTP runs, with ONNX
Runtime's QNN quantization config (``get_qnn_qdq_config``), held to the accuracy gate on the hold-out.

- ``a16w8``: uint16 activations (asymmetric), int8 weights (symmetric, per channel): Qualcomm's "W8A16".
- ``int8``: uint8 activations, int8 weights (A8W8). Over the gate, the budget loop moves the most sensitive
  convolutions' activations to 16 bits (the HTP converts between the two), never to float: the HTP has no float
  path on most SoCs, and CPU fallback is off.
The input's range is known (an image in [0, 1]) and never calibrated. The gate is measured here on ONNX Runtime's
CPU running the QDQ graph (the quantization's arithmetic, seconds a try); the HTP's own result on the same hold-out,
which differs from it by rounding, is measured by the build and is what the artifact is held to.
"""

import contextlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from scnet_deploy.calibration.budget import (BudgetNotMet, Int8Data, Quantized, int8_section,
                                             quantize_within_budget, rank_by_added_error, why_over)
from scnet_deploy.calibration.onnxruntime_int8 import _Reader, conv_nodes, onnx_infer, tensors_of
from scnet_deploy.gate import AccuracyGate
from scnet_deploy.manifest import INPUT_NAME

ACTIVATIONS = {"a16w8": "QUInt16", "int8": "QUInt8"}
# 16-bit activations calibrated on crops meet content outside them (a line drawing's edges, a saturated flat colour)
# with ranges too narrow: each calibrated range is widened this many times about zero, at one bit of the sixteen
WIDEN_16BIT = 2.0


def split_weights(model, names: tuple[str, ...]) -> None:
    """Each convolution of ``names`` as the sum of two with int8-exact weights: its weights rounded to int8 per
    output channel (symmetric, as the quantizer will), and what that rounding left, which the quantizer rounds to
    int8 at a scale about 256 times finer: about 16-bit weights, which the HTP does not take directly."""
    import onnx

    inits = {t.name: t for t in model.graph.initializer}
    for node in [n for n in model.graph.node if n.name in names]:
        w = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        coarse = int8_rounded(w)
        for suffix, value in (("coarse", coarse), ("fine", (w - coarse).astype(np.float32))):
            model.graph.initializer.append(onnx.numpy_helper.from_array(value, f"{node.name}_{suffix}_w"))
        fine = onnx.NodeProto()
        fine.CopyFrom(node)
        fine.name, fine.output[0] = f"{node.name}_fine", f"{node.output[0]}_fine"
        del fine.input[2:]  # the bias is added once, by the coarse half
        fine.input[1] = f"{node.name}_fine_w"
        coarse_out = f"{node.output[0]}_coarse"
        add = onnx.helper.make_node("Add", [coarse_out, fine.output[0]], [node.output[0]], name=f"{node.name}_sum")
        node.input[1], node.output[0] = f"{node.name}_coarse_w", coarse_out
        index = list(model.graph.node).index(node)
        model.graph.node.insert(index + 1, fine)
        model.graph.node.insert(index + 2, add)


def calibrated_ranges(model_path: Path, calib) -> dict[str, tuple[float, float]]:
    """Every activation's (min, max) over ``calib`` (ONNX Runtime's MinMax calibrator)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(str(model_path), None, str(Path(tmp) / "augmented.onnx"),
                                       CalibrationMethod.MinMax)
        calibrator.collect_data(_Reader(calib))
        found = calibrator.compute_data()
    return {name: tuple(float(np.asarray(v).item()) for v in data.range_value) for name, data in found.data.items()}


def fold_constants(model) -> None:
    """``Constant`` nodes become initializers: the QNN config would otherwise quantize a Resize's scales as if they
    were an activation (the CPU then refuses the graph, and the HTP would read rounded scales)."""
    import onnx

    for node in [n for n in model.graph.node if n.op_type == "Constant"]:
        value = onnx.helper.get_attribute_value(node.attribute[0])
        model.graph.initializer.append(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(value), node.output[0]))
        model.graph.node.remove(node)


def fix_size(src: Path, dst: Path, size: tuple[int, int]) -> None:
    """``src`` with its input fixed at 1 x C x ``size`` (the HTP compiles static shapes), shapes inferred again."""
    import onnx

    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    channels = dims[1].dim_value or 3
    for dim, value in zip(dims, (1, channels, *size)):
        dim.Clear()
        dim.dim_value = value
    for value_info in [*model.graph.output, *model.graph.value_info]:
        value_info.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(model), str(dst))


@contextlib.contextmanager
def quiet():
    """ONNX Runtime's quantizer warns through Python's root logger and ONNX Runtime's own (opset upgrades, unused
    initializers it removes): none of it is the user's to act on."""
    import logging

    import onnxruntime as ort

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        root.setLevel(level)
        ort.set_default_logger_severity(2)


def quantize_qdq(fp32: Path, out: Path, calib, precision: str, refined: tuple[str, ...] = (), ranges=None) -> dict:
    """Write the QDQ model of ``fp32`` for the HTP at ``precision``; ``refined``: the budget loop's fallback for these
    convolutions: in A16W8 their weights split in two int8 halves (``split_weights``), in A8W8 their activations
    16-bit. ``ranges``: a quantization-aware checkpoint's (A8W8 only): its convolutions' input and weight scales
    (``qat_ranges.tensor_overrides``, uint8 with zero point 128), the HTP's other tensors calibrated."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    model = onnx.load(str(fp32))
    fold_constants(model)
    if precision == "a16w8":
        split_weights(model, refined)
    by_name = {n.name: n for n in model.graph.node}
    overrides = {INPUT_NAME: [{"rmin": np.float32(0.0), "rmax": np.float32(1.0)}]}  # an image: known, not calibrated
    if ranges is not None and precision == "int8":
        from scnet_deploy.calibration.qat_ranges import tensor_overrides

        overrides.update(tensor_overrides(model, ranges, unsigned=True)[0])
    for name in refined if precision == "int8" else ():
        overrides[by_name[name].output[0]] = [{"quant_type": QuantType.QUInt16}]  # over a range: 16 bits win
    with tempfile.TemporaryDirectory() as tmp, quiet():
        folded = Path(tmp) / "folded.onnx"
        onnx.save(model, str(folded))
        if precision == "a16w8":
            for name, (lo, hi) in calibrated_ranges(folded, calib).items():
                overrides.setdefault(name, [{"rmin": np.float32(min(lo, 0.0) * WIDEN_16BIT),
                                             "rmax": np.float32(max(hi, 0.0) * WIDEN_16BIT)}])
        config = get_qnn_qdq_config(str(folded), _Reader(calib), activation_type=getattr(QuantType,
                                    ACTIVATIONS[precision]), weight_type=QuantType.QInt8, per_channel=True,
                                    weight_symmetric=True, init_overrides=overrides)
        quantize(str(folded), str(out), config)
    sixteen = precision == "a16w8"
    return {"activations": "uint16 asymmetric" if sixteen else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel", "input_range": [0.0, 1.0],
            "method": "minmax" + (f", ranges widened x{WIDEN_16BIT:g}" if sixteen else ""),
            "refined_convs": sorted(refined),
            "refinement": "weights split in two int8 halves" if sixteen else "16-bit activations",
            "quantized_convs": len(conv_nodes(model)), "convolutions": len(conv_nodes(model)),
            "calibration_samples": len(calib),
            **({"quantization_aware": ranges.info} if ranges is not None and precision == "int8" else {})}


def int8_rounded(w: np.ndarray) -> np.ndarray:
    """``w`` rounded to int8 per output channel, symmetric (as the quantizer rounds weights), back in float."""
    scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127.0
    scale = np.where(scale == 0, 1.0, scale).reshape(-1, *([1] * (w.ndim - 1)))
    return (np.clip(np.round(w / scale), -127, 127) * scale).astype(np.float32)


def weight_sensitivity(fp32: Path, samples) -> list[str]:
    """The convolutions, the one whose int8-rounded weights change its output most first: the relative error of
    each output on ``samples``' real activations (the shift's one-hot kernels round exactly: error 0). An A16W8
    graph's error is its weights' (its activations have 16 bits), so this ranks what splitting wins back."""
    import onnx

    model = onnx.load(str(fp32))
    fold_constants(model)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.name in conv_nodes(model)]
    inputs = sorted({n.input[0] for n in convs} - {INPUT_NAME})
    error = {n.name: 0.0 for n in convs}
    for x in samples:
        found = {INPUT_NAME: x, **tensors_of(model, inputs, x)}
        for node in convs:
            w = inits[node.input[1]].astype(np.float32)
            if w.shape[2:] != (1, 1) or w.shape[1] != found[node.input[0]].shape[1]:  # grouped: its weights alone
                error[node.name] += float(np.sum((w - int8_rounded(w)) ** 2) / (np.sum(w ** 2) + 1e-12))
                continue
            a = found[node.input[0]][0].reshape(w.shape[1], -1)
            out, delta = w[:, :, 0, 0] @ a, (w - int8_rounded(w))[:, :, 0, 0] @ a
            error[node.name] += float(np.mean(delta ** 2) / (np.mean(out ** 2) + 1e-12))
    return [name for name, e in sorted(error.items(), key=lambda kv: kv[1], reverse=True)]


def sensitivity(fp32: Path, qdq: Path, samples) -> list[str]:
    """The convolutions, the one adding most error first (``rank_by_added_error``): each is keyed by the tensors
    both graphs hold around it (the QNN quantizer folds a ReLU after a convolution into its range, so the ReLU's
    output stands for the convolution's)."""
    import onnx

    model, quantized = onnx.load(str(fp32)), onnx.load(str(qdq))
    common = {o for n in model.graph.node for o in n.output} & {o for n in quantized.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def seen(name):  # the tensor both graphs hold for ``name``: itself, or the output of the ReLU it feeds
        after = readers.get(name, [])
        if name not in common and len(after) == 1 and after[0].op_type in ("Relu", "LeakyRelu"):
            return after[0].output[0]
        return name

    convs = {n.name: (seen(n.input[0]), seen(n.output[0])) for n in model.graph.node if n.name in conv_nodes(model)}
    keys = sorted({k for pair in convs.values() for k in pair} & common)
    ranked = rank_by_added_error(convs, [(tensors_of(model, keys, x), tensors_of(quantized, keys, x)) for x in samples])
    # a convolution reading the image keeps 8 bits: the input's type is fixed (ONNX Runtime's mixed-precision pass
    # cannot give the graph input a second one)
    return [name for name, _ in ranked if convs[name][0] != INPUT_NAME]


def aim(gate: AccuracyGate) -> AccuracyGate:
    """What the budget loop aims at on ONNX Runtime's CPU: half the gate, so that the HTP, which rounds its own way
    (the reference's A16W8 graph at 0.093% of a line drawing's pixels 4+ levels off on the CPU measured 0.10% on
    the emulated HTP), stays within the gate itself."""
    return AccuracyGate(gate.drift_db / 2, gate.max_visible / 2, gate.visible_levels) if gate.on else gate


def not_met(exc: BudgetNotMet, gate: AccuracyGate, precision: str) -> BudgetNotMet:
    """The budget loop's refusal in the HTP's terms: what was refined, the gate's reasons (the whole gate: the loop
    aims at half of it), and what to do."""
    refined = "split in two int8 halves" if precision == "a16w8" else "at 16-bit activations"
    return BudgetNotMet(f"--format qnn --precision {precision} fails the accuracy gate on the hold-out even with "
                        f"{max(exc.layers - 1, 0)} of its {exc.layers} convolutions {refined} ("
                        f"{why_over(exc.drift, aim(gate))}, at the half of the gate the CPU's measure aims at); "
                        + ("export --precision a16w8 (16-bit activations)" if precision == "int8" else
                           "calibrate on content like yours (--calib-data) or choose the content that gates "
                           "(--content)") + ", or raise --max-visible / --budget knowingly.")


def build_qdq(fp32: Path, out_path: Path, data: Int8Data, gate: AccuracyGate, precision: str,
              ranges=None) -> Quantized:
    """Write the HTP QDQ model of the verified FP32 ONNX ``fp32`` to ``out_path`` within the accuracy ``gate`` on
    ``data``'s hold-out (measured on ONNX Runtime's CPU); the budget loop refines its most sensitive convolutions
    (``quantize_qdq``) until it passes, or the export fails in one line with the gate's reasons."""
    calib, baseline = data.calib, data.baseline(onnx_infer(fp32), gate.visible_levels)
    with tempfile.TemporaryDirectory() as tmp:
        details = {}

        def quantize(refined):
            path = Path(tmp) / f"qdq_{len(refined)}.onnx"
            details.update(quantize_qdq(fp32, path, calib, precision, tuple(refined), ranges))
            return path

        try:
            result = quantize_within_budget(quantize, lambda p: baseline.measure(onnx_infer(p)), lambda p: (
                weight_sensitivity(fp32, calib.arrays[:4]) if precision == "a16w8"
                else sensitivity(fp32, p, calib.arrays[:4])), aim(gate))
        except BudgetNotMet as exc:
            raise not_met(exc, gate, precision) from None
        shutil.copyfile(result["model"], out_path)
    details["aim"] = "half the gate on ONNX Runtime's CPU: the HTP's own rounding must keep within the gate"
    section = int8_section(calib, data.options, baseline, result, details)
    return Quantized(out_path, section)


def holdout_crops(holdout, size: tuple[int, int], scale: int) -> tuple[list, list[str]]:
    """Each hold-out image's centre crop of ``size`` LR pixels (and its HR), for an engine fixed at that size; the
    names of the images smaller than that, left out."""
    from dataclasses import replace

    from scnet_deploy.imaging.images import centre_crop

    crops, left_out = [], []
    for item in holdout:
        if item.lr.shape[0] < size[0] or item.lr.shape[1] < size[1]:
            left_out.append(item.name)
            continue
        crops.append(replace(item, lr=centre_crop(item.lr, *size),
                             hr=centre_crop(item.hr, size[0] * scale, size[1] * scale, scale)))
    return crops, left_out
