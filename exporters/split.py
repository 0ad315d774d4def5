"""Exact split execution: an engine's own graph cut at the body's output; the body runs on the whole image, the
upsampling tail on exact tiles (``tiling.run_tiled``) whose halo covers the tail's receptive radius, so the output
is the whole graph's. The tail writes 64-channel maps at 2x and 4x the input size, far beyond a CPU's caches; on windows they may
stay in them. Where that is faster is measured, not assumed: the autotuner times it on the engine it chose and keeps
it only where it beats the whole graph (``manifest["autotune"]["split"]``).

The cut is made when the engine is loaded, from the very graph that was verified: nothing else is shipped. Backends
that can cut their graph implement ``Runner.parts()`` (each cuts its own graph at the body's output, found by
``is_residual_add``: ONNX's here, OpenVINO's in its folder).
"""

import numpy as np

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.exporters.runner import Runner


def tail_radius(arch: dict) -> int:
    """LR pixels on each side that can influence a tail output pixel: one per upsampler stage's resize, one per
    stage's shift, one for the image skip (``ArchSpec.receptive_radius`` less the body's one per block)."""
    return int(arch["receptive_radius"]) - int(arch["num_block"])


def is_residual_add(inputs_constant: list[bool]) -> bool:
    return len(inputs_constant) == 2 and not any(inputs_constant)


def onnx_body_output(model) -> str | None:
    """The tensor the body hands to the tail: the output of the last residual Add (an Add of two computed tensors)
    that is not the final image add. None if the graph has none."""
    from scnet_deploy.image_path import constant_tensors

    constants, outputs = constant_tensors(model), {o.name for o in model.graph.output}
    last = None
    for node in model.graph.node:  # topological order
        if node.op_type == "Add" and is_residual_add([i in constants for i in node.input]) \
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


class SplitRunner(Runner):
    """An engine run as its body on the whole image and its tail on tiles of ``tile`` LR pixels (plus the tail's
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

    @property
    def stoppable(self) -> bool:
        return self.inner.stoppable

    def stop(self) -> None:
        self.inner.stop()

    def worker(self) -> "Runner":
        import copy

        clone = copy.copy(self)
        clone.inner = self.inner.worker()
        clone.body, clone.tail = clone.inner.parts()
        return clone

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        from scnet_deploy.imaging.tiling import run_tiled

        n, c, h, w = lr.shape  # SCNet's output has its input's channels (arch.detect_arch checks)
        out = np.empty((n, c, h * self.scale, w * self.scale), np.float32)
        # the tail's two inputs cut as one array (features, then the image), each tile split back for the call
        joined = np.concatenate([self.body(lr), lr], axis=1)

        def tail(crop: np.ndarray) -> np.ndarray:
            return self.tail(np.ascontiguousarray(crop[:, :-c]), np.ascontiguousarray(crop[:, -c:]))

        for i, image in enumerate(joined):
            def sink(y: int, x: int, block: np.ndarray, i=i) -> None:
                out[i, :, y:y + block.shape[1], x:x + block.shape[2]] = block

            run_tiled(tail, image, self.scale, self.tile, self.halo, sink)
        return out
