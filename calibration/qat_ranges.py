"""The Q/DQ overrides a quantization-aware checkpoint's ranges (``model/quant_ranges.py``) give the hub ONNX graph.

Each learned convolution is found by its weight initializer's name (the official parameter name); a convolution the
training had no quantizer for (the depthwise shift of the ``dwconv`` form) takes the input range of the learned
convolution it feeds, which is exact: the shift moves values and zero-fills, ReLU keeps a symmetric grid, so
quantizing before them equals quantizing after. A convolution with no range at all (the first: it reads the image,
whose 8-bit levels a symmetric int8 step of 1/127 would halve) stays float.
"""

import numpy as np

from scnet_deploy.model.quant_ranges import QMAX, QuantRanges

# Ops a range passes through unchanged on the way from a shift convolution to the convolution it feeds
_TRANSPARENT = ("Relu",)


def conv_modules(model) -> dict[str, str]:
    """ONNX Conv node name -> the module its weight initializer names (``body.0.conv1``), for learned convs."""
    return {n.name: n.input[1].removesuffix(".weight") for n in model.graph.node
            if n.op_type == "Conv" and n.input[1].endswith(".weight")}


def input_amax_of(model, ranges: QuantRanges, modules: dict[str, str]) -> dict[str, float]:
    """ONNX Conv node name -> the amax its input is quantized with (absent: no range; it stays float); ``modules``:
    ``conv_modules(model)``."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    found = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        module = modules.get(node.name)
        if module in ranges.inputs:
            found[node.name] = ranges.inputs[module]
            continue
        following = _fed_conv(node, consumers)
        if module not in ranges.weights and following is not None and modules.get(following.name) in ranges.inputs:
            found[node.name] = ranges.inputs[modules[following.name]]  # a shift convolution: exact, see above
    return found


def _fed_conv(node, consumers):
    """The one Conv ``node``'s output reaches through ``_TRANSPARENT`` ops alone (None: another op or a fork)."""
    output = node.output[0]
    while True:
        readers = consumers.get(output, [])
        if len(readers) != 1:
            return None
        if readers[0].op_type == "Conv":
            return readers[0]
        if readers[0].op_type not in _TRANSPARENT:
            return None
        output = readers[0].output[0]


def tensor_overrides(model, ranges: QuantRanges, unsigned: bool) -> tuple[dict, list[str]]:
    """ORT quantizer ``TensorQuantOverrides`` that fix every quantized convolution's input and weight scales to the
    checkpoint's, and the convolutions left without a range (kept float). ``unsigned``: activations as uint8 with
    zero point 128 (the same grid as int8 with zero point 0, for ONNX Runtime's fast u8s8 kernels)."""
    import onnx

    inits = {t.name: t for t in model.graph.initializer}
    modules = conv_modules(model)
    amax = input_amax_of(model, ranges, modules)
    overrides, unranged = {}, []
    zero = np.array(128, np.uint8) if unsigned else np.array(0, np.int8)  # ORT wants arrays
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if node.name not in amax:
            unranged.append(node.name)
            continue
        scale = np.array(max(amax[node.name], 1e-8) / QMAX, np.float32)
        overrides.setdefault(node.input[0], [{"scale": scale, "zero_point": zero}])
        module = modules.get(node.name)
        if module in ranges.weights and node.input[1] in inits:
            w_amax = ranges.weights[module]
            channels = onnx.numpy_helper.to_array(inits[node.input[1]]).shape[0]
            if w_amax.size == 1:
                w_amax = np.full(channels, float(w_amax[0]), np.float32)
            overrides[node.input[1]] = [{"axis": 0, "scale": np.array(max(a, 1e-8) / QMAX, np.float32),
                                         "zero_point": np.array(0, np.int8)} for a in w_amax]
    return overrides, unranged
