"""The facts ``graph_guard`` checks, read from an ONNX graph (``onnx`` alone, no runtime): every operator (those of
local functions and subgraphs too) and every tensor's shape worked out with ONNX's shape inference at a fixed input
size."""

from pathlib import Path

from scnet_deploy.graph_guard import GraphFacts, elements

# What SCNet's ONNX exports are made of (every form and precision, Q/DQ INT8 included), and tensor ops of the same
# kind a retrained variant may add; never control flow (Loop, If, Scan) nor ops whose output shape depends on data
ALLOWED_OPS = frozenset({
    "Conv", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "Max", "Min", "Neg",
    "Abs", "Sqrt", "Floor", "Round", "Concat", "Split", "Slice", "Pad", "DepthToSpace", "SpaceToDepth", "Reshape",
    "Transpose", "Resize", "Upsample", "Constant", "Identity", "Cast", "QuantizeLinear", "DequantizeLinear", "Shape",
    "Gather", "Unsqueeze", "Squeeze", "Expand", "Tile", "ConstantOfShape", "BatchNormalization", "MatMul", "Gemm",
    "Flatten"})
DOMAINS = {"", "ai.onnx", "com.microsoft"}  # the standard ops; ONNX Runtime's Q/DQ contrib ops (16-bit activations)


def onnx_facts(path: Path, probe: tuple[int, int], batch: int = 1) -> GraphFacts:
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load_model_from_string(Path(path).read_bytes())
    except Exception as exc:  # protobuf's DecodeError and onnx's own: the file is not an ONNX model
        return GraphFacts({}, probe, 0, [f"not an ONNX model ({str(exc)[:80]})"])
    ops: dict[str, int] = {}
    graphs = [model.graph] + [f for f in model.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            name = node.op_type if node.domain in DOMAINS else f"{node.domain}.{node.op_type}"
            ops[name] = ops.get(name, 0) + 1
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
    if model.functions:
        ops["(local function)"] = len(model.functions)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    for tensor in inputs:
        dims = tensor.type.tensor_type.shape.dim
        for d, value in zip(dims, (batch, dims[1].dim_value if len(dims) > 1 else 3, *probe)):
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = value
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx's inference errors (InferenceError, ValidationError) share no public base
        return GraphFacts(ops, probe, 0, [f"shape inference failed: {str(exc)[:120]}"])
    largest, unknown = 0, []
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if not info.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
            unknown.append(info.name)
            continue
        largest = max(largest, elements(d.dim_value for d in dims))
    typed = {i.name for i in inferred.graph.value_info} | {o.name for o in inferred.graph.output}
    unknown += [o for n in inferred.graph.node for o in n.output if o and o not in typed]
    return GraphFacts(ops, probe, largest, unknown)
