"""Which stage of SCNet each node of an exported ONNX graph belongs to (head, body.N, upsampler, tail, skip), from
the module scopes the dynamo exporter records on each node (``pkg.torch.onnx.name_scopes``). Recorded in the
manifest (``onnx.stages``: node name -> stage), so that ``bench --profile`` maps each runtime's per-operator times
back to the architecture without the graph at hand. Nodes without a scope of their own (the shared LeakyReLU, the
slice form's rewritten shifts, nodes the simplifier made) take their data input's stage; the node that writes the
graph output adds the image skip: it is the skip's."""

import ast

STAGE_ORDER = ("head", "body", "upsampler", "tail", "skip")


def stage_of(scopes: list[str]) -> str | None:
    """The stage a module scope list names (``['', 'body', 'body.3', 'body.3.conv1', ...]``), or None."""
    top = scopes[1] if len(scopes) > 1 else ""
    if top == "conv_first":
        return "head"
    if top == "body" and len(scopes) > 2:
        return scopes[2]
    if top.startswith("upconv"):
        return "upsampler"
    if top in ("conv_hr", "conv_last"):
        return "tail"
    if top == "skip":
        return "skip"
    return None


def _scoped(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return stage_of(list(ast.literal_eval(prop.value)))
            except (ValueError, SyntaxError):
                return None
    return None


def graph_stages(model, known: dict[str, str] | None = None) -> dict[str, str]:
    """node name -> stage for every node of ``model`` (and its output tensors' names, which some runtimes report
    instead); ``known``: stages found earlier for nodes of the same names (the raw export's, before simplifying)."""
    known = dict(known or {})
    outputs = {o.name for o in model.graph.output}
    initializers = {t.name for t in model.graph.initializer}
    by_tensor: dict[str, str] = {}
    stages: dict[str, str] = {}
    for node in model.graph.node:
        stage = known.get(node.name) or _scoped(node)
        if stage is None and any(o in outputs for o in node.output):
            stage = "skip"
        if stage is None:
            inputs = [by_tensor[i] for i in node.input if i in by_tensor and i not in initializers]
            stage = inputs[0] if inputs else ("skip" if node.op_type == "Resize" else "head")
        stages[node.name] = stage
        for out in node.output:
            by_tensor[out] = stage
    return {**stages, **{t: s for t, s in by_tensor.items() if t not in stages}}
