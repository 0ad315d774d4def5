"""The image skip of an SCNet ONNX graph: the nodes that carry the input to the output beside the network (the
bilinear resize, or skip_as_conv's pad, 3x3 conv and depth-to-space). INT8 and FP16 conversions keep them in FP32:
they carry the image itself, and their weights are not exact in int8."""

from .manifest import INPUT_NAME

_NOT_FOLLOWED = ("QuantizeLinear", "DequantizeLinear")  # the first layer's quantized input is not the skip


def constant_tensors(model) -> set[str]:
    """The tensors of an ONNX graph that depend on no input: initializers, Constant outputs, and what nodes compute
    from those alone (a bias a preprocessor made)."""
    constants = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # topological order
        if all(i in constants for i in node.input if i):
            constants.update(node.output)
    return constants


def skip_nodes(model, input_name: str = INPUT_NAME) -> list[str]:
    """Names, in graph order, of the nodes computed from the input alone other than the network's first layer (the
    conv that reads the input itself)."""
    constants = constant_tensors(model)
    derived, names = {input_name}, []
    for node in model.graph.node:  # topological order
        data = [i for i in node.input if i and i not in constants]
        if not data or node.op_type in _NOT_FOLLOWED or (node.op_type == "Conv" and node.input[0] == input_name):
            continue
        if all(i in derived for i in data):
            derived.update(node.output)
            names.append(node.name)
    return names


def skip_convs(model, input_name: str = INPUT_NAME) -> list[str]:
    """The convolutions among ``skip_nodes`` (skip_as_conv's one)."""
    skip = set(skip_nodes(model, input_name))
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.name in skip]
