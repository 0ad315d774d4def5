"""INT8 for OpenVINO with NNCF, held to the same budget mechanism as every INT8 backend (calibration/budget.py):
``nncf.quantize`` on the IR, convolutions kept in float through NNCF's ``IgnoredScope`` when the hold-out drift is
over budget.

Settings chosen by measurement (benchmarks/int8_variants.py -> benchmarks/results/int8_variants.md): activation
ranges from the global min/max of the calibration set (NNCF's default aggregates per-sample statistics, narrower
than the extremes: content unlike the calibration photos clipped inside the network), the performance preset
(symmetric activations: the mixed preset drifts less on photos but its engine crashed OpenVINO 2026.4's CPU plugin
on 1x1 and 2x1 inputs and ran slower), fast bias correction. Known ranges are never calibrated: the input quantizer
covers exactly [0, 1], and the image-space path (bilinear skip, final add) stays float (``image_path``,
``fix_known_ranges``), so white is never clipped.
"""

from typing import TYPE_CHECKING

import numpy as np

from scnet_deploy.calibration.budget import Baseline, FirstTry, Int8Data, Quantized, Ranking, SpeedLimit, costliest, \
    int8_section, quantize_within_budget, rank_by_added_error, shortfall
from scnet_deploy.gate import AccuracyGate

if TYPE_CHECKING:
    import openvino as ov

CONV_TYPES = ("Convolution", "GroupConvolution")  # the depthwise shift is a GroupConvolution
PRESETS = ("mixed", "performance")
RANGE_ESTIMATORS = ("minmax", "default", "mean_minmax")


def _ov_infer(model, config: dict):
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def infer(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    infer.compiled = compiled  # the request must not outlive its compiled model
    return infer


def _is_weight_quantized(conv) -> bool:
    # int8 weights appear as a Constant(i8) -> Convert -> (Subtract) -> Multiply chain, or a FakeQuantize
    seen, frontier = 0, [conv.input(1).get_source_output().get_node()]
    while frontier and seen < 6:
        node = frontier.pop()
        seen += 1
        kind = node.get_type_name()
        if kind == "FakeQuantize" or (kind == "Constant" and node.get_element_type().get_type_name() == "i8"):
            return True
        frontier += [i.get_source_output().get_node() for i in node.inputs()]
    return False


def _reads_quantized(conv) -> bool:
    """Whether the convolution's input comes from a FakeQuantize (through ReLU alone): weights that are int8
    constants on their own (a shift's one-hot kernel, stored compressed) do not make a convolution int8."""
    node = conv.input(0).get_source_output().get_node()
    while node.get_type_name() == "Relu":
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "FakeQuantize"


def float_convolutions(model) -> list[str]:
    """Convolutions of the quantized IR that run in float: their weights or their input not quantized."""
    return sorted(op.get_friendly_name() for op in model.get_ops()
                  if op.get_type_name() in CONV_TYPES and not (_is_weight_quantized(op) and _reads_quantized(op)))


def input_quantizers(model) -> list:
    """FakeQuantize ops that read the network input directly."""
    params = {p.get_friendly_name() for p in model.get_parameters()}
    return [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"
            and op.input(0).get_source_output().get_node().get_friendly_name() in params]


def fake_quantize_range(fq) -> tuple[float, float]:
    """The (low, high) float range a FakeQuantize passes (its output range)."""
    lo = fq.input(3).get_source_output().get_node().get_data()
    hi = fq.input(4).get_source_output().get_node().get_data()
    return float(np.min(lo)), float(np.max(hi))


def _not_image_path(op) -> bool:
    """The network's first layer (a convolution that reads the input itself), the input's quantizer (in a quantized
    IR), the output."""
    kind = op.get_type_name()
    return kind in ("FakeQuantize", "Result") or (
        kind in CONV_TYPES and op.input(0).get_source_output().get_node().get_type_name() == "Parameter")


def image_path(model) -> list[str]:
    """The ops of the image-space path: from the input through every consumer but the network's first layer (the
    bilinear skip: a resize, or skip_as_conv's pad, 3x3 conv and depth-to-space; the final add) to the output.
    NNCF would quantize the add's inputs, clipping the upsampled image to the calibrated range, and the skip's conv
    weights; these stay float (NNCF's ignored scope)."""
    names, frontier = [], [t.get_node() for p in model.get_parameters() for t in p.output(0).get_target_inputs()]
    while frontier:
        op = frontier.pop()
        if _not_image_path(op) or op.get_friendly_name() in names:
            continue
        names.append(op.get_friendly_name())
        frontier += [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]
    return sorted(names)


def fix_known_ranges(model) -> dict:
    """The input is an image in [0, 1]: its quantizer gets exactly that range; every consumer of the quantized input
    other than a convolution (the image-space bilinear skip) reads the float input instead."""
    import openvino as ov

    param = model.get_parameters()[0]
    rewired = 0
    for fq in input_quantizers(model):
        for i, value in ((1, 0.0), (2, 1.0), (3, 0.0), (4, 1.0)):
            old = fq.input(i).get_source_output()
            const = ov.opset13.constant(np.full(old.get_shape(), value, np.float32))
            fq.input(i).replace_source_output(const.output(0))
        for target in list(fq.output(0).get_target_inputs()):
            if target.get_node().get_type_name() not in CONV_TYPES:
                target.replace_source_output(param.output(0))
                rewired += 1
    model.validate_nodes_and_infer_types()
    return {"input_range": [0.0, 1.0], "float_consumers_of_input": rewired}


def _activations(model, names: list[str], config: dict):
    """infer(x) -> {op friendly name: output 0} for ``names`` (plus the model output)."""
    import openvino as ov

    clone = model.clone()
    ops = {op.get_friendly_name(): op for op in clone.get_ops()}
    present = [n for n in names if n in ops]
    clone.add_outputs([ops[n].output(0) for n in present])
    compiled = ov.Core().compile_model(clone, "CPU", config)
    request = compiled.create_infer_request()

    def run(x):
        request.infer({0: x})
        return {n: request.get_output_tensor(i + 1).data.copy() for i, n in enumerate(present)}

    run.compiled = compiled  # the request must not outlive its compiled model
    return run


def layer_sensitivity(fp32, int8, samples, config: dict) -> list[tuple[str, float]]:
    """Convolutions ranked by the error each adds (its input's quantizer included), INT8 vs FP32 runs on
    ``samples``. The depthwise shift's one-hot weights are exact in int8, but the range calibrated for its input
    can clip: it is a candidate too. The image path's convolutions (float already) are not."""
    learned, image = {}, set(image_path(fp32))
    for op in fp32.get_ops():
        if op.get_type_name() in CONV_TYPES and op.get_friendly_name() not in image:
            learned[op.get_friendly_name()] = (op.input(0).get_source_output().get_node().get_friendly_name(),
                                               op.get_friendly_name())
    names = sorted({k for pair in learned.values() for k in pair})
    a, b = _activations(fp32, names, config), _activations(int8, names, config)
    return rank_by_added_error(learned, [(a(x), b(x)) for x in samples])


def convolution_quantizers(model) -> dict[str, list[str]]:
    """{activation FakeQuantize: the convolutions it feeds} for the quantizers in front of convolutions."""
    feeds = {}
    for op in model.get_ops():
        if op.get_type_name() in CONV_TYPES:
            source = op.input(0).get_source_output().get_node()
            if source.get_type_name() == "FakeQuantize":
                feeds.setdefault(source.get_friendly_name(), []).append(op.get_friendly_name())
    return feeds


def without_quantizers(model: "ov.Model", names) -> "ov.Model":
    """A copy of ``model`` with the FakeQuantize ops ``names`` removed: their consumers read the float values."""
    clone = model.clone()
    wanted = set(names)
    for fq in [op for op in clone.get_ops() if op.get_friendly_name() in wanted]:
        source = fq.input(0).get_source_output()
        for target in list(fq.output(0).get_target_inputs()):
            target.replace_source_output(source)
    clone.validate_nodes_and_infer_types()
    return clone


def ranking(fp32, int8, samples, baseline: Baseline, config: dict, before: dict | None = None,
            gate: AccuracyGate = AccuracyGate()) -> Ranking:
    """The convolutions to keep in float, first first: the one behind the quantizer whose removal brings the engine
    closest to the accuracy gate on the hold-out (``budget.shortfall``: visible share and drift; measured:
    ``costliest`` over the quantizers in front of convolutions, about 12 measurements for SCNet-T, made only when
    the budget loop keeps a layer in float), then the rest by the error each adds on ``samples``
    (``layer_sensitivity``, ~4 s for SCNet-T here, which is all the budget loop's reach check needs).

    Measured because the added-error ranking can miss where the drift is: in the dwconv forms one quantizer, the
    first block's pre-ReLU shift input, cost 0.135 of 0.213 dB (on flat colours) and ranked past the 15th
    (benchmarks/results/ov_int8_quantizers.md). ``before``: ``int8``'s hold-out measurement where the budget loop
    has made it already."""
    convs = {op.get_friendly_name() for op in fp32.get_ops() if op.get_type_name() in CONV_TYPES}
    convs -= set(image_path(fp32))
    feeds = convolution_quantizers(int8)

    def won_back(names) -> float:
        return start - shortfall(baseline.measure(_ov_infer(without_quantizers(int8, names), config)), gate)

    start = shortfall(before if before is not None else baseline.measure(_ov_infer(int8, config)), gate)

    def first() -> list[str]:  # two at once: an int8 compile (~0.3 s) runs on one core, and both release the GIL
        worst = costliest(sorted(feeds), won_back, workers=2)
        return [c for c in feeds.get(worst, []) if c in convs]

    return Ranking(first, len(convs), lambda: [n for n, _ in layer_sensitivity(fp32, int8, samples, config)])


def nncf_parameters(preset: str = "performance", ranges: str = "minmax", bias_correction: str = "fast",
                    known_ranges: bool = True) -> dict:
    """Keyword arguments of ``nncf.quantize`` for one combination of settings (benchmarks/int8_variants.py)."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    del known_ranges  # applied after quantization (fix_known_ranges), not an NNCF parameter
    from nncf.quantization.range_estimator import (AggregatorType, RangeEstimatorParameters,
                                                   StatisticsCollectorParameters, StatisticsType)

    def extreme_quantile(kind):  # each sample's 1e-4 quantile, then the extreme over samples
        return StatisticsCollectorParameters(StatisticsType.QUANTILE, kind, quantile_outlier_prob=1e-4)

    estimator = {"minmax": RangeEstimatorParametersSet.MINMAX, "mean_minmax": RangeEstimatorParametersSet.MEAN_MINMAX,
                 "histogram": RangeEstimatorParametersSet.HISTOGRAM,
                 "quantile_minmax": RangeEstimatorParameters(extreme_quantile(AggregatorType.MIN),
                                                             extreme_quantile(AggregatorType.MAX)),
                 "default": None}[ranges]
    advanced = AdvancedQuantizationParameters(activations_range_estimator_params=estimator) \
        if estimator is not None else AdvancedQuantizationParameters()
    return {"preset": {"mixed": nncf.QuantizationPreset.MIXED,
                       "performance": nncf.QuantizationPreset.PERFORMANCE}[preset],
            "fast_bias_correction": bias_correction == "fast", "advanced_parameters": advanced}


def static_for(model, calib):
    """A copy of ``model`` with the input shape of the calibration crops where they all share one: NNCF's statistics
    and bias-correction runs are the same computations, about 15% faster than through dynamic shapes."""
    shapes = {tuple(a.shape) for a in calib}
    copy = model.clone()
    if len(shapes) == 1:
        copy.reshape({copy.inputs[0]: list(next(iter(shapes)))})
    return copy


def with_input_shape(model, quantized):
    """``quantized`` with ``model``'s input shape again (dynamic height and width)."""
    quantized.reshape({quantized.inputs[0]: model.inputs[0].get_partial_shape()})
    return quantized


DEFAULT_SETTINGS = {"preset": "performance", "ranges": "minmax", "bias_correction": "fast", "known_ranges": True}


def quantize_with_float(model, calib, exclude: tuple[str, ...] = (), settings: dict = DEFAULT_SETTINGS):
    """``model`` quantized by NNCF on the calibration crops ``calib`` with the convolutions ``exclude`` (and, with
    known ranges, the image-space path) kept in float; the known ranges fixed. Returns it and what was fixed."""
    import nncf

    float_path = image_path(model) if settings.get("known_ranges", True) else []
    scope = nncf.IgnoredScope(names=list(exclude) + float_path) if exclude or float_path else None
    quantized = with_input_shape(model, nncf.quantize(static_for(model, calib), nncf.Dataset(list(calib)),
                                                      subset_size=len(calib), ignored_scope=scope,
                                                      **nncf_parameters(**settings)))
    fixes = {}
    if settings.get("known_ranges", True):
        fixes.update(fix_known_ranges(quantized), float_image_path=float_path)
    return quantized, fixes


def _fp32_baseline(model, data: Int8Data, gate: AccuracyGate, config: dict, first_try: FirstTry | None) -> Baseline:
    """The FP32 IR's scores on the hold-out, computed once per candidate (a resumed one's come from its first try)."""
    if first_try is not None and first_try.baseline is not None:
        return first_try.baseline
    baseline = data.baseline(_ov_infer(model, config), gate.visible_levels)
    if first_try is not None:
        first_try.baseline = baseline
    return baseline


def _conv_counts(quantized) -> tuple[dict, list[str]]:
    """({"quantized_convs", "convolutions"}, the convolutions kept float) of a quantized IR."""
    float_layers = float_convolutions(quantized)
    convs = [op for op in quantized.get_ops() if op.get_type_name() in CONV_TYPES]
    return {"quantized_convs": len(convs) - len(float_layers), "convolutions": len(convs)}, float_layers


def quantize_ir(model, data: Int8Data, gate: AccuracyGate, config: dict,
                settings: dict = DEFAULT_SETTINGS, speed_limit: SpeedLimit | None = None,
                first_try: FirstTry | None = None) -> Quantized:
    """Quantize the FP32 OpenVINO ``model`` (run with compile ``config``) within the accuracy ``gate`` on ``data``'s
    hold-out; the result's model is the quantized ``ov.Model``. ``speed_limit``: see ``budget.SpeedLimit``;
    ``first_try``: the candidate's kept FP32 scores and all-INT8 try (``budget.FirstTry``), filled or reused."""
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines would interleave with our progress display
    calib = data.calib
    baseline = _fp32_baseline(model, data, gate, config, first_try)
    fixes = {}

    def quantize(exclude):
        quantized, fixed = quantize_with_float(model, calib, exclude, settings)
        fixes.update(fixed)
        return quantized

    # each model's drift as the loop measured it (the resumed all-INT8 try's from its first call): the ranking
    # starts from the all-INT8 drift and need not measure it again
    measured = {}
    if first_try is not None and first_try.tried:
        measured[id(first_try.model)] = first_try.drift

    def measure(m) -> dict:
        measured[id(m)] = baseline.measure(_ov_infer(m, config))
        return measured[id(m)]

    result = quantize_within_budget(
        quantize, measure,
        lambda m: ranking(model, m, calib.arrays[:4], baseline, config, measured[id(m)], gate), gate,
        None if speed_limit is None else lambda m, *tried: speed_limit.check(_ov_infer(m, config), *tried),
        first_try=first_try)
    if result["abandoned"] is not None:
        return Quantized(None, None, result["abandoned"])
    quantized = result["model"]
    counts, float_layers = _conv_counts(quantized)
    quantization = {"method": "nncf.quantize", "nncf": nncf.__version__, **settings, **fixes, **counts,
                    "float_convs_in_ir": [n for n in float_layers
                                          if n not in fixes.get("float_image_path", [])]}  # the budget's
    return Quantized(quantized, int8_section(calib, data.options, baseline, result, quantization))


def quantize_ir_from_ranges(fp32_onnx, model, ranges, data: Int8Data, gate: AccuracyGate, config: dict,
                            speed_limit: SpeedLimit | None = None, first_try: FirstTry | None = None) -> Quantized:
    """A quantization-aware checkpoint's INT8 IR: the Q/DQ graph its ranges give the verified ONNX
    (``onnxruntime_int8.quantize_onnx``: symmetric int8, nothing calibrated), converted by OpenVINO (which runs Q/DQ
    pairs as int8), held to the same gate by the same budget loop (convolutions ranked on the Q/DQ graph).
    ``model``: the FP32 ``ov.Model`` of the same graph, the gate's reference; ``speed_limit``, ``first_try``: as
    ``quantize_ir``'s."""
    import tempfile
    from pathlib import Path

    import openvino as ov

    from scnet_deploy.calibration.onnxruntime_int8 import layer_sensitivity, quantize_onnx

    baseline = _fp32_baseline(model, data, gate, config, first_try)
    details, graphs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        def qdq(exclude) -> Path:
            path = Path(tmp) / f"qdq_{len(exclude)}.onnx"
            details.update(quantize_onnx(Path(fp32_onnx), path, data.calib, exclude=exclude,
                                         symmetric_activations=True, ranges=ranges))
            return path

        def quantize(exclude):
            path = qdq(exclude)
            converted = ov.convert_model(str(path))
            graphs[id(converted)] = path
            return converted

        def rank(m) -> list[str]:  # on the Q/DQ graph (a model resumed from a first try: written again)
            path = graphs.get(id(m))
            path = path if path and path.exists() else qdq(())
            return [name for name, _ in layer_sensitivity(Path(fp32_onnx), path, data.calib.arrays[:4])]

        too_slow = None if speed_limit is None else lambda m, *tried: speed_limit.check(_ov_infer(m, config), *tried)
        result = quantize_within_budget(quantize, lambda m: baseline.measure(_ov_infer(m, config)), rank, gate,
                                        too_slow, first_try=first_try)
    if result["abandoned"] is not None:
        return Quantized(None, None, result["abandoned"])
    quantized = result["model"]
    counts, float_layers = _conv_counts(quantized)
    quantization = {**{k: v for k, v in details.items() if k != "float_convs"},
                    "converted_by": f"openvino {ov.__version__} from the Q/DQ ONNX graph", **counts,
                    "float_convs_in_ir": float_layers}
    return Quantized(quantized, int8_section(None, data.options, baseline, result, quantization))
