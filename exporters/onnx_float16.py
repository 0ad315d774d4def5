"""Mixed-precision FP16 ONNX graphs, for strongly typed TensorRT builds (TensorRT 10 with the STRONGLY_TYPED network
flag, TensorRT 11 always): the precision of every layer is in the graph itself, never in builder flags.

onnxconverter-common's float16 converter does the conversion. It was chosen over ModelOpt AutoCast (NVIDIA's
recommendation) by measurement (``benchmarks/fp16_converters.py``): on SCNet-T x4 both graphs drift the same from FP32
on Set5 in ONNX Runtime, and onnxconverter-common is one small wheel needing only numpy, onnx and protobuf, where
ModelOpt's ONNX extra needs torch and pins onnx 1.21 and onnxruntime-gpu 1.24, which conflict with this project's.
What this module adds to the converter:
- FP32 graph input and output, and the image-space path in FP32: the nodes that only read and write image tensors
  (the bilinear skip of the input, the final add), where FP16's spacing near 1.0 (4.9e-4) is an eighth of an 8-bit
  grey level;
- nodes whose weights, or the values they make or read on probe inputs (FP32 run), pass ``FP16_SAFE_MAX``
  stay FP32 (FP16 ends at 65504);
- Resize runs in FP16: the converter blocks it by default only because its scales must stay float32, which is
  restored here;
- Q/DQ graphs get FP16 scales, so the float layers between Q/DQ pairs (resize, add, the float fallback convs) run in
  FP16 as the INT8+FP16 builder flags of weak typing had them; opset 19 at least, the first whose
  QuantizeLinear/DequantizeLinear take FP16 scales.
"""

from pathlib import Path

import numpy as np

FP16_SAFE_MAX = 8192.0  # an eighth of FP16's largest value: headroom for content brighter than the probes
QDQ_OPSET = 19
_NOT_IMAGE_SPACE = ("Conv", "QuantizeLinear", "DequantizeLinear", "Constant")


def _channels(model) -> dict[str, int]:
    """Channel count (dimension 1) of every tensor whose shape inference knows it."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    channels = {}
    for v in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[v.name] = dims[1].dim_value
    return channels


def _constants(model) -> set[str]:
    return {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                        for o in n.output}


def image_space_nodes(model) -> list[str]:
    """Nodes that only read and write image tensors (the channel count of the graph's input or output), and the
    image skip (``image_path.skip_nodes``: skip_as_conv's conv and depth-to-space work on s*s phases per channel):
    the skip path and the final add. No other convolution and no Q/DQ node is among them (a conv reading image
    channels is the network's first layer, and a Cast between a DequantizeLinear and its conv would stop TensorRT
    fusing them)."""
    from scnet_deploy.image_path import skip_nodes

    skip = set(skip_nodes(model, model.graph.input[0].name))
    channels = _channels(model)
    image = {channels.get(v.name) for v in list(model.graph.input) + list(model.graph.output)} - {None}
    constants = _constants(model)
    names = []
    for node in model.graph.node:
        if node.op_type in _NOT_IMAGE_SPACE and node.name not in skip:
            continue
        inputs = [i for i in node.input if i and i not in constants]
        tensors = inputs + list(node.output)
        if node.name in skip or (tensors and all(channels.get(t) in image for t in tensors)):
            names.append(node.name)
    return names


def overflowing_nodes(model, probes: list[np.ndarray], limit: float = FP16_SAFE_MAX) -> list[str]:
    """Nodes with a float weight beyond ``limit`` in magnitude, and nodes that make or read a float tensor beyond it
    on any of ``probes`` (an FP32 run)."""
    import onnx
    from onnx import numpy_helper

    from scnet_deploy.exporters.onnx_graph import ort_session

    big_weights = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
                   and t.dims and np.abs(numpy_helper.to_array(t)).max(initial=0) > limit}
    found = {n.name for n in model.graph.node if big_weights.intersection(n.input)}
    float_outputs = {v.name for v in onnx.shape_inference.infer_shapes(model).graph.value_info
                     if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    producer = {o: n.name for n in model.graph.node for o in n.output if o in float_outputs}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=t) for t in producer if t not in existing)
    session = ort_session(probe.SerializeToString(), quiet=True)
    names = [o.name for o in session.get_outputs()]
    input_name = session.get_inputs()[0].name
    big = set()
    for x in probes:
        for name, value in zip(names, session.run(names, {input_name: x})):
            if name in producer and np.abs(value).max(initial=0) > limit:
                big.add(name)
    # the node that makes such a value and every node that reads it: neither can hold it in FP16
    found |= {producer[name] for name in big} | {n.name for n in model.graph.node if big.intersection(n.input)}
    return sorted(found)


def _restore_resize_scales(model) -> None:
    """Resize's roi/scales inputs are float32 only: undo the converter's FP16 on them."""
    import onnx
    from onnx import numpy_helper

    producers = {o: n for n in model.graph.node for o in n.output}
    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Resize":
            continue
        for k in range(1, min(len(node.input), 3)):
            while node.input[k] in producers and producers[node.input[k]].op_type == "Cast":
                node.input[k] = producers[node.input[k]].input[0]  # back to the float32 constant
            tensor = initializers.get(node.input[k])
            if tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT16:
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)


def _unshare_initializers(model, keep: list[str]) -> None:
    """Give nodes kept FP32 their own copy of any initializer they share with converted nodes (the dwconv form's
    shift convolutions share one weight): the converter converts a shared initializer for all its readers."""
    initializers = {t.name: t for t in model.graph.initializer}
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name)
    kept = set(keep)
    for node in model.graph.node:
        if node.name not in kept:
            continue
        for k, name in enumerate(node.input):
            if name in initializers and readers[name] - kept:
                copy = model.graph.initializer.add()
                copy.CopyFrom(initializers[name])
                copy.name = f"{name}__fp32_{node.name}"
                node.input[k] = copy.name


def _scales(model) -> dict[str, np.ndarray]:
    """The float32 scale of every QuantizeLinear/DequantizeLinear, by initializer name."""
    from onnx import numpy_helper

    names = {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names}


def _round_scales_up(model, scales: dict[str, np.ndarray]) -> None:
    """FP16 scales rounded up, never down: a scale rounded down would shrink the calibrated range and clip (the
    input's exact [0, 1] would end at 0.99994); rounding up costs at most 0.05% of resolution."""
    import onnx
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.name in scales and tensor.data_type == onnx.TensorProto.FLOAT16:
            exact = scales[tensor.name].astype(np.float32)
            half = exact.astype(np.float16)
            half = np.where(half.astype(np.float32) < exact, np.nextafter(half, np.float16(np.inf)), half)
            tensor.CopyFrom(numpy_helper.from_array(half.astype(np.float16), tensor.name))


def _restore_float_outputs(model) -> None:
    """With its last node kept FP32, the converter casts that node's float32 result to a float16 graph output
    despite ``keep_io_types``: drop that Cast and declare the output float32 again."""
    import onnx

    producers = {o: n for n in model.graph.node for o in n.output}
    for output in model.graph.output:
        cast = producers.get(output.name)
        if output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 or cast is None or cast.op_type != "Cast":
            continue
        source = producers[cast.input[0]]
        source.output[list(source.output).index(cast.input[0])] = output.name
        model.graph.node.remove(cast)
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _copy(model):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def to_float16(model, probes: list[np.ndarray]):
    """The mixed-precision FP16 graph of the FP32 (or FP32 Q/DQ) ``model``, and a record of what stayed FP32."""
    import onnxconverter_common
    from onnx import version_converter
    from onnxconverter_common import float16

    has_qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if has_qdq and opset < QDQ_OPSET:
        model = version_converter.convert_version(model, QDQ_OPSET)
    scales = _scales(model)
    image = image_space_nodes(model)
    overflow = overflowing_nodes(model, probes)
    keep = sorted(set(image) | set(overflow))
    model = _copy(model)
    _unshare_initializers(model, keep)
    blocked_ops = [op for op in float16.DEFAULT_OP_BLOCK_LIST if op != "Resize"]
    producers = {o: n for n in model.graph.node for o in n.output}
    scale_constants = [producers[i].name for n in model.graph.node if n.op_type == "Resize" for i in n.input[1:3]
                       if i in producers and producers[i].op_type == "Constant"]
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked_ops,
                                                 node_block_list=keep + scale_constants, max_finite_val=65504.0)
    _restore_resize_scales(converted)
    _restore_float_outputs(converted)
    _round_scales_up(converted, scales)  # type consistency is checked where the graph ships: check_graph
    record = {"converter": f"onnxconverter-common {onnxconverter_common.__version__}",
              "opset": next(o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")),
              "fp32_nodes": keep, "fp32_image_space": image, "fp32_overflow": overflow,
              "io": "float32 input and output", "qdq_scales": "float16" if has_qdq else None}
    return converted, record


def probe_inputs(in_ch: int = 3, size: int = 32) -> list[np.ndarray]:
    """Inputs that push activations high: uniform noise (every frequency), white, and a hard black/white edge."""
    noise = np.random.default_rng(0).random((1, in_ch, size, size), dtype=np.float32)
    white = np.ones((1, in_ch, size, size), np.float32)
    edge = np.zeros((1, in_ch, size, size), np.float32)
    edge[..., size // 2:] = 1.0
    return [noise, white, edge]


def write_float16(src: Path, dst: Path, in_ch: int = 3) -> dict:
    """Convert the ONNX file ``src`` to its mixed-precision FP16 graph at ``dst`` (may be the same path)."""
    import onnx

    converted, record = to_float16(onnx.load(str(src)), probe_inputs(in_ch))
    onnx.save(converted, str(dst))
    return record
