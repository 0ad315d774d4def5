"""Exact split execution: an engine's own graph cut at the body's output; the body runs on the whole image, the
upsampling tail on windows of one size whose halo covers the tail's receptive radius, so the output is the whole
graph's. The tail writes 64-channel maps at 2x and 4x the input size, far beyond a CPU's caches; on windows they may
stay in them. Where that is faster is measured, not assumed: the autotuner times it on the engine it chose and keeps
it only where it beats the whole graph (``manifest["autotune"]["split"]``).

The cut is made when the engine is loaded, from the very graph that was verified: nothing else is shipped. Backends
that can cut their graph (ONNX Runtime, OpenVINO) implement ``Runner.parts()``.
"""

import numpy as np

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.exporters.runner import Runner


def tail_radius(arch: dict) -> int:
    """LR pixels on each side that can influence a tail output pixel: one per upsampler stage's resize, one per
    stage's shift, one for the image skip (``ArchSpec.receptive_radius`` less the body's one per block)."""
    return int(arch["receptive_radius"]) - int(arch["num_block"])


def windows(length: int, tile: int, halo: int) -> list[tuple[int, int, int]]:
    """(tile start, window start, window length) along one axis: every window is ``min(length, tile + 2 halo)``
    long and lies inside [0, length); a window at the border keeps the border (where the graph's own padding acts)."""
    size = min(length, tile + 2 * halo)
    return [(start, min(max(start - halo, 0), length - size), size) for start in range(0, length, tile)]


def _is_residual_add(inputs_constant: list[bool]) -> bool:
    return len(inputs_constant) == 2 and not any(inputs_constant)


def onnx_body_output(model) -> str | None:
    """The tensor the body hands to the tail: the output of the last residual Add (an Add of two computed tensors)
    that is not the final image add. None if the graph has none."""
    constants = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    last = None
    for node in model.graph.node:  # topological order
        data = [i for i in node.input if i and i not in constants]
        if not data:
            constants.update(node.output)
        elif node.op_type == "Add" and _is_residual_add([i in constants for i in node.input]) \
                and node.output[0] not in outputs:
            last = node.output[0]
    return last


def onnx_parts(path, input_name: str, output_name: str):
    """(body, tail) ONNX models of the model at ``path``, or None: body(input) -> features,
    tail(features, input) -> output."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    cut = onnx_body_output(model)
    if cut is None:
        return None
    extractor = Extractor(model)
    return cut, extractor.extract_model([input_name], [cut]), extractor.extract_model([cut, input_name],
                                                                                     [output_name])


def _ov_constant(output) -> bool:
    node = output.get_node()
    while node.get_type_name() == "Convert":  # FP16-compressed constants are decompressed by a Convert
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "Constant"


def ov_body_output(model):
    """The op whose output the body hands to the tail in an OpenVINO model (see ``onnx_body_output``), or None."""
    last = None
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add" and _is_residual_add([_ov_constant(i.get_source_output()) for i in op.inputs()]) \
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


class SplitRunner(Runner):
    """An engine run as its body on the whole image and its tail on windows of ``tile`` LR pixels (plus the tail's
    receptive radius as halo): exactly the whole graph's output."""

    def __init__(self, inner: Runner, tile: int, arch: dict | None = None) -> None:
        arch = arch or inner.arch  # ArchSpec.to_dict(): from the artifact's manifest, or the autotuner's spec
        parts = inner.parts()
        if parts is None:
            raise ScnetDeployError(f"{inner.name}: split execution (the body whole, the tail on tiles of {tile}) "
                                   "cannot cut this engine's graph here: it has no residual add, or ONNX Runtime "
                                   "lacks the onnx package (pip install onnx); re-export with --tune-split-tiles ''.")
        super().__init__(inner.precision, inner.size_range, f"{inner.name} (tail on tiles of {tile})", arch)
        self.manifest, self.backend = inner.manifest, inner.backend
        self.inner, self.tile, self.halo, self.scale = inner, tile, tail_radius(arch), int(arch["scale"])
        self.body, self.tail = parts

    def close(self) -> None:
        self.body = self.tail = None
        self.inner.close()

    def worker(self) -> "Runner":
        import copy

        clone = copy.copy(self)
        clone.inner = self.inner.worker()
        clone.body, clone.tail = clone.inner.parts()
        return clone

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        features = self.body(lr)
        n, _, h, w = lr.shape
        s, out = self.scale, None
        for r0, ry, rh in windows(h, self.tile, self.halo):
            th = min(self.tile, h - r0)
            for c0, cx, cw in windows(w, self.tile, self.halo):
                tw = min(self.tile, w - c0)
                sr = self.tail(np.ascontiguousarray(features[:, :, ry:ry + rh, cx:cx + cw]),
                               np.ascontiguousarray(lr[:, :, ry:ry + rh, cx:cx + cw]))
                if out is None:
                    out = np.empty((n, sr.shape[1], h * s, w * s), np.float32)
                oy, ox = (r0 - ry) * s, (c0 - cx) * s
                out[:, :, r0 * s:(r0 + th) * s, c0 * s:(c0 + tw) * s] = sr[:, :, oy:oy + th * s, ox:ox + tw * s]
        return out
