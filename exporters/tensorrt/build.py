"""TensorRT 10 and 11: ``model.plan`` built from the verified ONNX with the TensorRT Python API, run on an NVIDIA GPU.

Strongly typed, the only way TensorRT 11 builds (it removed ``BuilderFlag.FP16``/``INT8``) and the way TensorRT 10
(Jetson) builds with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: the precision is the ONNX graph's, never a
builder flag. FP32: the verified graph; FP16: its mixed-precision graph (``onnx_float16``); INT8: the explicit Q/DQ
graph with FP16 scales, so the float layers between Q/DQ pairs run in FP16. Explicit optimization profile from the
user's LR resolution range, workspace limit, timing cache reused and updated across builds. The artifact also keeps
``model.onnx`` and ``build_engine.sh`` (the equivalent trtexec command, for trtexec 10.x and 11.x) so the engine can
be rebuilt on the target device, where plans must be built.
"""

import shutil
from pathlib import Path

from scnet_deploy.exporters.onnx_float16 import write_float16
from scnet_deploy.exporters.runner import SizeRange
from scnet_deploy.exporters.tensorrt.engine import build_plan
from scnet_deploy.exporters.tensorrt.options import Build
from scnet_deploy.exporters.tensorrt.graph import (check_graph, conv_precisions, make_profile, tensorrt_generation,
                                                   trtexec_command, write_trtexec_script)
from scnet_deploy.exporters.tensorrt.runtime import (CACHE_FILE, ONNX_FILE, PLAN_FILE, SCRIPT_FILE, TensorRTRunner,
                                                     engine_unavailable_reason)

def build(ctx, workdir: Path) -> dict:
    import onnx

    hub = ctx.onnx()
    opts, precision = ctx.options.backend("tensorrt", Build()), ctx.options.precision
    fields = {"onnx": {k: v for k, v in hub["section"].items() if k != "verification"}}
    in_ch = ctx.checkpoint.spec.num_in_ch
    typed = {}
    if precision == "int8":
        # Explicit quantization: a Q/DQ graph with symmetric int8 activations and per-channel weights, its float
        # parts in FP16; the budget is measured on that final graph.
        from scnet_deploy.calibration.onnxruntime_int8 import build_int8_onnx

        fields["int8"] = build_int8_onnx(hub["path"], workdir / ONNX_FILE, ctx.int8_data(), ctx.options.gate(),
                                         symmetric_activations=True,
                                         finish=lambda path: typed.update(write_float16(path, path, in_ch)),
                                         ranges=ctx.checkpoint.quant).section.to_dict()
    elif precision == "fp16":
        typed = write_float16(hub["path"], workdir / ONNX_FILE, in_ch)
    else:
        shutil.copyfile(hub["path"], workdir / ONNX_FILE)
    graph = onnx.load(str(workdir / ONNX_FILE))
    check_graph(graph)
    profile = make_profile(ctx.options.sizes, in_ch, opts.max_batch)
    command = trtexec_command(ONNX_FILE, PLAN_FILE, profile, opts.workspace_mb, CACHE_FILE)
    write_trtexec_script(workdir / SCRIPT_FILE, command)
    size_range = ctx.options.sizes
    section = {"typing": "strong (TensorRT 10.x: STRONGLY_TYPED flag, 11.x: always); precision from the graph",
               "conv_precisions": conv_precisions(graph), "float16": typed or None, "profile": profile.to_dict(),
               "workspace_mb": opts.workspace_mb, "trtexec": command, "timing_cache": CACHE_FILE}
    fields.update({"size_range": size_range.to_dict(), "tensorrt": section})
    reason = engine_unavailable_reason()
    if reason is not None:
        # No engine here: the artifact carries the graph TensorRT will build, checked for parser support and, where
        # ONNX Runtime can run it (FP32, INT8 Q/DQ), against PyTorch (``verification_runner``).
        section.update({"engine": None, "engine_note": f"not built: {reason}; run {SCRIPT_FILE} on the target"})
        return {"files": [ONNX_FILE, SCRIPT_FILE], **fields}
    import tensorrt as trt

    plan = build_plan(workdir / ONNX_FILE, profile, opts.workspace_mb, opts.timing_cache, workdir / CACHE_FILE)
    (workdir / PLAN_FILE).write_bytes(plan)
    if opts.timing_cache:
        shutil.copyfile(workdir / CACHE_FILE, opts.timing_cache)
    section.update({"engine": PLAN_FILE, "version": trt.__version__,
                    "generation": tensorrt_generation(trt.__version__)})
    return {"files": [ONNX_FILE, PLAN_FILE, CACHE_FILE, SCRIPT_FILE], **fields}


def verification_runner(workdir: Path, fields: dict, precision: str):
    """The engine where one was built; else its strongly typed graph (FP32, mixed FP16, Q/DQ INT8) in ONNX Runtime."""
    if (workdir / PLAN_FILE).exists():
        return TensorRTRunner(workdir / PLAN_FILE, precision, SizeRange.from_dict(fields.get("size_range"))), None
    from scnet_deploy.exporters.onnxruntime.runtime import OrtRunner

    return (OrtRunner(workdir / ONNX_FILE, precision=precision),
            f"the TensorRT graph ({precision}, strongly typed), run in ONNX Runtime on the CPU (no TensorRT engine "
            f"here: {engine_unavailable_reason()})")

