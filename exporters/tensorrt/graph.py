"""TensorRT logic that needs no TensorRT: which API generation a version is, optimization profiles, the equivalent
trtexec command, and a static check that the ONNX graph is one a strongly typed TensorRT 10/11 network accepts:
every op and attribute one its ONNX parser supports, and every tensor's type consistent (strong typing inserts no
casts).

The support table covers the ops SCNet graphs (FP32, mixed FP16 and Q/DQ INT8) can contain, with the restrictions
the onnx-tensorrt operator matrix states; anything else is reported, so a graph is never sent to a device to fail
there.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scnet_deploy.errors import ExportError
from scnet_deploy.manifest import INPUT_NAME
from scnet_deploy.options import SizeRange

OPSET_RANGE = (9, 20)  # TensorRT 10's ONNX parser
GENERATIONS = (10, 11)  # the TensorRT major versions this code is written for (pyproject: tensorrt>=10,<12)


def tensorrt_generation(version: str) -> str:
    """What the installed TensorRT means for the build: 10.x opts in to strong typing, 11.x is always strongly
    typed; anything else is outside what this code was written for."""
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else None
    if major == 10:
        return "10.x: strongly typed through NetworkDefinitionCreationFlag.STRONGLY_TYPED"
    if major == 11:
        return "11.x: always strongly typed"
    return f"unsupported: written for TensorRT {' and '.join(f'{g}.x' for g in GENERATIONS)}"


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _check_resize(node, consts):
    problems = []
    mode = _attr(node, "mode", "nearest")
    ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
    if mode not in ("nearest", "linear"):
        problems.append(f"mode={mode} (supported: nearest, linear)")
    if ctm not in ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners", "tf_half_pixel_for_nn"):
        problems.append(f"coordinate_transformation_mode={ctm}")
    if _attr(node, "antialias", 0):
        problems.append("antialias=1")
    return problems


def _check_pad(node, consts):
    mode = _attr(node, "mode", "constant")
    return [] if mode in ("constant", "reflect", "edge") else [f"mode={mode}"]


def _check_conv(node, consts):
    problems = []
    if len(node.input) > 1 and node.input[1] not in consts:
        problems.append("weights are not an initializer/constant")
    kernel = _attr(node, "kernel_shape")
    if kernel is not None and len(kernel) not in (2, 3):
        problems.append(f"{len(kernel)}-D convolution (2-D or 3-D only)")
    return problems


def _check_depth_to_space(node, consts):
    mode = _attr(node, "mode", "DCR")
    return [] if mode in ("DCR", "CRD") else [f"mode={mode}"]


def _check_zero_point(node, consts):
    # Explicit quantization: int8 and symmetric only (zero point must be 0 when given).
    data = consts.get(node.input[0])
    if node.op_type == "DequantizeLinear" and data is not None and data.dtype != np.int8:
        return [f"dequantizes {data.dtype} data (TensorRT dequantizes int8 only; leave biases in float)"]
    if len(node.input) < 3 or not node.input[2]:
        return []
    zp = consts.get(node.input[2])
    if zp is None:
        return ["zero point is not a constant"]
    return [] if not zp.any() else ["non-zero zero point (TensorRT needs symmetric int8)"]


def _check_slice(node, consts):
    return [] if len(node.input) < 4 or node.input[3] in consts else ["axes are not constant"]


def _none(node, consts):
    return []


SUPPORTED = {
    "Conv": _check_conv, "ConvTranspose": _check_conv, "Relu": _none, "LeakyRelu": _none, "Add": _none,
    "Sub": _none, "Mul": _none, "Div": _none,
    "Concat": _none, "Slice": _check_slice, "Pad": _check_pad, "Resize": _check_resize,
    "DepthToSpace": _check_depth_to_space, "Constant": _none, "Identity": _none, "Reshape": _none,
    "Transpose": _none, "Clip": _none, "Cast": _none, "Shape": _none, "Gather": _none, "Unsqueeze": _none,
    "Squeeze": _none, "QuantizeLinear": _check_zero_point, "DequantizeLinear": _check_zero_point,
}


def unsupported_ops(model) -> list[str]:
    """Every node TensorRT 10's ONNX parser would reject, as 'op (node name): reason'. Empty means buildable."""
    from onnx import numpy_helper

    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"opset {opset} (TensorRT 10 parses opsets {OPSET_RANGE[0]}..{OPSET_RANGE[1]})")
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]  # quantized weights: constant for TensorRT
    for node in model.graph.node:
        check = SUPPORTED.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if check is None:
            problems.append(f"{node.op_type} ({node.name}): not in TensorRT's supported set")
            continue
        problems += [f"{node.op_type} ({node.name}): {p}" for p in check(node, consts)]
    return problems


def typing_problem(model) -> str | None:
    """Why a strongly typed network would reject the graph's types (None: consistent). Strong typing inserts no
    casts, so every op must see the types ONNX allows it; ONNX's full check with type inference says exactly that."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return str(e).strip().splitlines()[0]
    return None


def check_graph(model) -> None:
    problems = unsupported_ops(model)
    if problems:
        raise ExportError(f"the ONNX graph has {len(problems)} construct(s) TensorRT cannot parse: "
                          f"{'; '.join(problems[:4])}. Try --shift dwconv or another opset.")
    problem = typing_problem(model)
    if problem:
        raise ExportError(f"the ONNX graph's types are inconsistent, which a strongly typed TensorRT network rejects: "
                          f"{problem}. Report it with the options used.")


def conv_precisions(model) -> dict[str, int]:
    """How many convolutions run in each precision, read from the graph (what a strongly typed build will do):
    int8 (weights from a DequantizeLinear of int8 data), else the weights' float type."""
    from onnx import TensorProto

    names = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.INT8: "int8"}
    types = {t.name: t.data_type for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        weight = node.input[1]
        while weight in producers and producers[weight].op_type in ("DequantizeLinear", "Cast", "Identity"):
            weight = producers[weight].input[0]
        kind = names.get(types.get(weight), "other")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@dataclass(frozen=True)
class Profile:
    """One optimization profile for input 'lr': NCHW shapes for min, opt and max."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return {"input": INPUT_NAME, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def make_profile(sizes: SizeRange, channels: int = 3, max_batch: int = 1) -> Profile:
    """TensorRT's view of the export's LR size range: NCHW shapes of input 'lr', batch 1 at min and opt,
    ``max_batch`` at max."""
    sizes.check()
    (h0, w0), (h1, w1), (h2, w2) = sizes.min, sizes.opt, sizes.max
    if max_batch < 1:
        raise ExportError(f"--max-batch must be at least 1, got {max_batch}.")
    return Profile((1, channels, h0, w0), (1, channels, h1, w1), (max_batch, channels, h2, w2))


# What TensorRT 11's trtexec removed (NVIDIA, "Migrating trtexec Usage from TensorRT 10.x to 11.x", 11.4): weak
# typing's precision flags and implicit-quantization calibration. Nothing we write may contain them.
REMOVED_TRTEXEC_FLAGS = ("--fp16", "--int8", "--bf16", "--fp8", "--int4", "--best", "--calib",
                         "--precisionConstraints", "--layerPrecisions", "--layerOutputTypes")
STRONGLY_TYPED_FLAG = "--stronglyTyped"  # required by trtexec 10.x for a strongly typed build; 11.x: always on


def trtexec_command(onnx_file: str, plan_file: str, profile: Profile, workspace_mb: int,
                    timing_cache: str | None = None) -> str:
    """The trtexec command line that builds the same engine on the target device: strongly typed, so the precision
    is the ONNX graph's (FP32, mixed FP16, or Q/DQ INT8 with FP16 float layers) and no precision flag exists."""
    shape = lambda s: f"{INPUT_NAME}:" + "x".join(map(str, s))  # noqa: E731
    parts = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={plan_file}", f"--minShapes={shape(profile.min)}",
             f"--optShapes={shape(profile.opt)}", f"--maxShapes={shape(profile.max)}",
             f"--memPoolSize=workspace:{workspace_mb}M", STRONGLY_TYPED_FLAG]
    if timing_cache:
        parts.append(f"--timingCacheFile={timing_cache}")
    return " ".join(parts)


def write_trtexec_script(path: Path, command: str) -> None:
    """``build_engine.sh``: the command, run from the artifact's directory with the device's trtexec (``$TRTEXEC``,
    else the one on PATH); ``--stronglyTyped`` is passed only where that trtexec lists it (10.x needs it; 11.x is
    always strongly typed and may drop the flag)."""
    args = " ".join("$TYPED" if a == STRONGLY_TYPED_FLAG else a for a in command.split()[1:])
    path.write_text(f"""#!/bin/sh
# Rebuild this engine on the target device: TensorRT 10.x or 11.x, strongly typed (the precision is model.onnx's).
set -e
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-trtexec}}"
if "$TRTEXEC" --help 2>&1 | grep -q -e "{STRONGLY_TYPED_FLAG}"; then TYPED={STRONGLY_TYPED_FLAG}; else TYPED=; fi
exec "$TRTEXEC" {args}
""")
    path.chmod(0o755)
