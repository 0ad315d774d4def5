"""Checkpoint -> deploy form -> ONNX (checked, simplified, verified in ONNX Runtime against PyTorch).

Exporter choice: torch 2.13's default, the dynamo exporter (``torch.export`` based, the supported path; the
TorchScript exporter is deprecated), at opset 18, its native opset. Its own graph optimizer is skipped: onnxsim
folds the same constants in a fraction of the time, and we always simplify. ``--exporter torchscript`` (opset 17 by
default) remains for environments where dynamo fails; both are tested. The slice form through dynamo is the
dwconv form's graph with each shift convolution rewritten as Pad + Slices + Concat (``shift_convs_as_slices``):
the same ops as dynamo's own export of ``ShiftSlice``, whose symbolic-shape tracing takes 3-6x as long.
"""

import collections
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from scnet_deploy.build_options import OnnxOptions
from scnet_deploy.errors import ExportError
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME
from scnet_deploy.model.rewrites import to_deploy_form
from scnet_deploy.model.shift import OFFSETS, ShiftDWConv, shift_kernel

if TYPE_CHECKING:
    import onnx

DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
def histogram(model) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def torch_to_onnx(module: torch.nn.Module, options: OnnxOptions, in_ch: int = 3):
    """Export ``module`` with dynamic batch/height/width; returns an onnx.ModelProto (not yet simplified)."""
    import onnx

    # torch.onnx logs a warning per missing torchvision op: noise for a model that uses none.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    example = torch.rand(2, in_ch, 16, 16)  # batch 2: a batch of 1 would be specialised by torch.export
    opset = options.resolved_opset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if options.exporter == "dynamo":
            from torch.export import Dim

            dims = {axis: Dim(name) for axis, name in DYNAMIC_AXES.items()}
            program = torch.onnx.export(module, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                        dynamic_shapes={"x": dims}, opset_version=opset, dynamo=True,
                                        optimize=False, verbose=False)
            return program.model_proto
        import io

        buffer = io.BytesIO()
        axes = {INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES}
        torch.onnx.export(module, (example,), buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
        return onnx.load_from_string(buffer.getvalue())


INT64_MAX = 2**63 - 1  # "to the end" in a Slice


def shift_convs_as_slices(model) -> int:
    """Rewrite each depthwise shift convolution of a dwconv-form graph (one-hot 3x3 kernels, zero bias, padding 1)
    as the slice form, in place: one zero Pad, eight Slices (one per direction group, negative constant ends so any
    size works) and a Concat, the graph the dynamo exporter makes of ``ShiftSlice``. The dynamo exporter takes 17-25 s
    on SCNet-T's slice form here (symbolic shapes through 36 x 8 dynamic slices) and ~4 s on its dwconv form.
    Returns how many shifts were rewritten; the result is verified against PyTorch like every graph."""
    from onnx import helper, numpy_helper

    graph = model.graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    tensors.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                    if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})

    def is_shift(node) -> bool:
        if node.op_type != "Conv" or len(node.input) != 3 or node.input[1] not in tensors:
            return False
        weight, bias = tensors[node.input[1]], tensors.get(node.input[2])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        c = weight.shape[0]
        return (weight.shape == (c, 1, 3, 3) and c % 8 == 0 and attrs.get("group") == c
                and list(attrs.get("pads", [])) == [1, 1, 1, 1] and set(attrs.get("strides", [1])) == {1}
                and set(attrs.get("dilations", [1])) == {1} and bias is not None and not bias.any()
                and np.array_equal(weight, shift_kernel(c).numpy()))

    def constant(name: str, values: list[int]) -> str:
        if name not in tensors:
            graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
            tensors[name] = np.array(values, np.int64)
        return name

    def stop(offset: int) -> int:  # as shift._window: rows 1+offset .. 1+offset+size of the padded map
        return offset - 1 if offset - 1 < 0 else INT64_MAX

    nodes, rewritten = [], 0
    for node in graph.node:
        if not is_shift(node):
            nodes.append(node)
            continue
        c, g, k = tensors[node.input[1]].shape[0], tensors[node.input[1]].shape[0] // 8, rewritten
        padded = f"shift{k}_padded"
        nodes.append(helper.make_node("Pad", [node.input[0], constant("shift_pads", [0, 0, 1, 1, 0, 0, 1, 1])],
                                      [padded], name=f"shift{k}_pad", mode="constant"))
        parts = []
        for i, (dy, dx) in enumerate(OFFSETS):
            parts.append(f"shift{k}_group{i}")
            nodes.append(helper.make_node("Slice", [
                padded, constant(f"shift_starts_{c}_{i}", [0, i * g, 1 + dy, 1 + dx]),
                constant(f"shift_ends_{c}_{i}", [INT64_MAX, (i + 1) * g, stop(dy), stop(dx)]),
                constant("shift_axes", [0, 1, 2, 3]), constant("shift_steps", [1, 1, 1, 1])], [parts[-1]],
                name=f"shift{k}_slice{i}"))
        nodes.append(helper.make_node("Concat", parts, [node.output[0]], name=f"shift{k}_concat", axis=1))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def constants_as_tensors(model):
    """Rewrite ``Constant(value_floats=...)`` / ``value_ints`` as typed tensors (same values, same graph).

    The dynamo exporter writes Resize scales as value_floats; onnxslim turns those into float64 tensors, which
    Resize rejects. A typed tensor survives every simplifier.
    """
    import onnx
    from onnx import helper, numpy_helper

    for node in model.graph.node:
        if node.op_type != "Constant" or len(node.attribute) != 1:
            continue
        attr = node.attribute[0]
        dtype = {"value_floats": np.float32, "value_ints": np.int64}.get(attr.name)
        if dtype is not None:
            value = np.array(helper.get_attribute_value(attr), dtype=dtype)
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
    assert isinstance(model, onnx.ModelProto)
    return model


def simplify(model: "onnx.ModelProto") -> tuple["onnx.ModelProto", str]:
    """onnxsim first; onnxslim if onnxsim fails or is missing. Returns (model, which tool did it)."""
    model = constants_as_tensors(model)
    errors = []
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified, "onnxsim"
        errors.append("onnxsim: check failed")
    except Exception as exc:  # onnxsim fails on some graphs with C++ exceptions of many kinds
        errors.append(f"onnxsim: {type(exc).__name__}: {exc}"[:200])
    try:
        import onnxslim

        return onnxslim.slim(model), "onnxslim (onnxsim failed: " + "; ".join(errors) + ")"
    except Exception as exc:
        raise ExportError(f"both simplifiers failed ({'; '.join(errors)}; onnxslim: {exc}). "
                          "Retry with --no-simplify.") from exc


# The hub graph is verified in ONNX Runtime on the CPU: the one runtime the base install always has.
VERIFIER = "onnxruntime"


def graph_tool_versions() -> dict:
    """The versions of what makes and verifies every artifact's graph, as manifests record them."""
    from scnet_deploy.manifest import tool_versions

    return tool_versions("torch", "onnx", VERIFIER, "onnxsim", "onnxslim", "onnxscript", "numpy")


def ort_session(model: "Path | bytes", threads: int = 0, quiet: bool = False):
    """An ONNX Runtime CPU session of ``model`` (a path, or a serialized graph): the verifier's own."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    if quiet:
        so.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])


def verify(onnx_path: Path, reference, options: OnnxOptions, in_ch: int = 3, seed: int = 0) -> dict:
    """Run the ONNX model in ONNX Runtime (CPU) and ``reference`` in PyTorch (a module, or ``ReferenceOutputs``) at
    each verify shape; raise on mismatch."""
    from scnet_deploy.exporters.onnxruntime.runtime import OrtRunner
    from scnet_deploy.exporters.runner import verify_runner
    from scnet_deploy.options import RuntimeOptions

    with OrtRunner(onnx_path, RuntimeOptions(cuda=False)) as runner:
        return verify_runner(runner, reference, options.verify_shapes, "fp32", in_ch, seed,
                             max_abs=options.tolerance)


@dataclass
class OnnxResult:
    path: Path
    nodes_before: dict[str, int]
    nodes_after: dict[str, int]
    simplifier: str | None
    verification: dict
    seconds: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # node (and tensor) name -> SCNet stage (onnx_stages.graph_stages)


def build_onnx(reference: torch.nn.Module, options: OnnxOptions, path: Path, in_ch: int = 3,
               reference_outputs=None, exports: dict | None = None) -> OnnxResult:
    """Write the verified ONNX model of ``reference`` (the official-form SCNet) to ``path``; verified against
    ``reference_outputs`` (``ReferenceOutputs`` of the same model, shared by a session) where given. ``exports``: the
    exporter's raw graphs by the form it exported, kept by a session so that a slice form reuses its dwconv form's
    export (each dynamo export takes 4-7 s here) instead of exporting it again."""
    import onnx

    options.check()
    timings = {}
    t0 = time.perf_counter()
    form = options.deploy()
    # The slice form through the dynamo exporter: the dwconv form's graph with its shift convolutions rewritten
    # (shift_convs_as_slices), the same Pad/Slice/Concat graph in a third to a sixth of the time.
    via_dwconv = options.exporter == "dynamo" and form.shift == "slice"
    exported = replace(form, shift="dwconv") if via_dwconv else form
    deploy = to_deploy_form(reference, exported)
    key = (exported, options.exporter, options.resolved_opset())
    if exports is None or key not in exports:
        raw = torch_to_onnx(deploy, options, in_ch)
        if exports is not None:
            exports[key] = raw.SerializeToString()
    else:
        raw = onnx.load_from_string(exports[key])  # a copy: the rewrites below change the graph in place
    if via_dwconv:
        shifts = shift_convs_as_slices(raw)
        expected = sum(isinstance(m, ShiftDWConv) for m in deploy.modules())
        if shifts != expected:
            raise ExportError(f"the slice form rewrote {shifts} of {expected} shift convolutions; this is a bug in "
                              "the rewrite. Report it, or export with --exporter torchscript.")
    timings["export"] = time.perf_counter() - t0
    from scnet_deploy.exporters.onnx_stages import graph_stages

    raw_stages = graph_stages(raw)  # before simplifying: the exporter's scopes are on the raw graph's nodes
    before = histogram(raw)
    model, simplifier = raw, None
    if options.simplify:
        t0 = time.perf_counter()
        model, simplifier = simplify(raw)
        timings["simplify"] = time.perf_counter() - t0
    model.producer_name, model.producer_version = "scnet-deploy", _version()
    onnx.checker.check_model(model, full_check=True)
    scatter = sum(1 for n in model.graph.node if n.op_type == "ScatterND")
    if scatter:
        raise ExportError(f"the exported graph still has {scatter} ScatterND nodes; this is a bug in the shift "
                          "rewrite. Report it with the manifest.")
    onnx.save(model, str(path))
    t0 = time.perf_counter()
    report = verify(path, reference_outputs or reference, options, in_ch)
    timings["verify"] = time.perf_counter() - t0
    return OnnxResult(path, before, histogram(model), simplifier, report, {k: round(v, 3) for k, v in timings.items()},
                      graph_stages(model, raw_stages))


def options_dict(options: OnnxOptions) -> dict:
    d = asdict(options)
    d["opset"] = options.resolved_opset()
    return d


def _version() -> str:
    from scnet_deploy._version import __version__

    return __version__
