"""OpenVINO's graph cut for split execution (``exporters/split.py``): the body and the upsampling tail of an IR, cut
at the body's output as ``split.onnx_body_output`` finds it in ONNX."""

from scnet_deploy.exporters.split import is_residual_add


def _ov_constant(output) -> bool:
    node = output.get_node()
    while node.get_type_name() == "Convert":  # FP16-compressed constants are decompressed by a Convert
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "Constant"


def ov_body_output(model):
    """The op whose output the body hands to the tail in an OpenVINO model (see ``onnx_body_output``), or None."""
    last = None
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add" and is_residual_add([_ov_constant(i.get_source_output()) for i in op.inputs()]) \
                and not any(t.get_node().get_type_name() == "Result" for t in op.output(0).get_target_inputs()):
            last = op
    return last


def ov_parts(read_model):
    """(body, tail) OpenVINO models of the model ``read_model()`` returns (called twice: the tail is cut from its
    own copy), or None."""
    import openvino as ov

    body_model, tail_model = read_model(), read_model()
    cut = ov_body_output(body_model)
    if cut is None:
        return None
    body = ov.Model([cut.output(0)], body_model.get_parameters(), "body")
    cut = ov_body_output(tail_model)
    features = ov.opset13.parameter(cut.get_output_partial_shape(0), cut.get_output_element_type(0), "features")
    for target in list(cut.output(0).get_target_inputs()):
        target.replace_source_output(features.output(0))
    tail = ov.Model(tail_model.get_results(), [features, *tail_model.get_parameters()], "tail")
    return body, tail
