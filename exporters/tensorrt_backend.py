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

import numpy as np

from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.onnx_float16 import write_float16
from scnet_deploy.exporters.registry import BackendUnavailable
from scnet_deploy.exporters.runner import Runner, SizeRange
from scnet_deploy.exporters.tensorrt_graph import (check_graph, conv_precisions, make_profile, tensorrt_generation,
                                                   trtexec_command, write_trtexec_script)
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME
from scnet_deploy.options import RuntimeOptions

ONNX_FILE, PLAN_FILE, CACHE_FILE, SCRIPT_FILE = "model.onnx", "model.plan", "timing.cache", "build_engine.sh"


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs an NVIDIA GPU with CUDA, and none is visible here (torch.cuda). "
                                 "Build and run on the target device (see build_engine.sh in the artifact).")


def strongly_typed(trt) -> int:
    """The network creation flags of a strongly typed network, by name: STRONGLY_TYPED is bit 1 in TensorRT 10.x
    (after EXPLICIT_BATCH) and bit 0 in 11.x, where it is also ignored (always on)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_plan(onnx_path: Path, profile, workspace_mb: int, cache_in: Path | None, cache_out: Path) -> bytes:
    """The serialized engine of ``onnx_path``, strongly typed: no precision flag (TensorRT 11 has none)."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT could not parse the ONNX model: {'; '.join(errors[:3])}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    cache = config.create_timing_cache(cache_in.read_bytes() if cache_in and cache_in.exists() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(f"TensorRT {trt.__version__} refused the timing cache '{cache_in}' (made by another TensorRT "
                          "version or GPU); delete it or pass another --timing-cache.")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see its log above); try a smaller --max-size or a "
                          "larger --workspace.")
    cache_out.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(serialized)


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, plan: Path, precision: str, size_range: SizeRange) -> None:
        import tensorrt as trt
        import torch

        _require_gpu()
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise ExportError(f"'{plan}' is not a TensorRT engine for this TensorRT version/GPU; rebuild it with "
                              "build_engine.sh on this device.")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        super().__init__(precision, size_range, name=f"tensorrt {torch.cuda.get_device_name()}")

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(lr).cuda()
        self.context.set_input_shape(INPUT_NAME, tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(INPUT_NAME, x.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, y.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        self.stream.synchronize()
        return y.cpu().numpy()

    def close(self) -> None:
        self.context = self.engine = self.runtime = None


def check_plan_version(plan: Path, built_with: str | None) -> None:
    """Plans run only on the TensorRT version that built them: refuse another's in one line."""
    import tensorrt as trt

    if built_with and built_with != trt.__version__:
        raise ExportError(f"'{plan}' was built with TensorRT {built_with}, and this is TensorRT {trt.__version__}; a "
                          f"plan runs only on the version that built it: rebuild it here with {SCRIPT_FILE}.")


def engine_unavailable_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed here (pip install 'scnet-deploy[tensorrt]' on the target)"
    try:
        import torch
    except ImportError:  # the runner's GPU memory is PyTorch's CUDA tensors (JetPack ships PyTorch)
        return "PyTorch with CUDA is not installed here (the TensorRT runner's GPU memory is PyTorch's)"
    return None if torch.cuda.is_available() else "no NVIDIA GPU is visible here"


def check(precision: str) -> str | None:
    return None  # builds its ONNX graph and build_engine.sh anywhere; the engine where TensorRT and a GPU are


def build(ctx, workdir: Path) -> dict:
    import onnx

    hub = ctx.onnx()
    opts, precision = ctx.options.tensorrt, ctx.options.precision
    fields = {"onnx": {k: v for k, v in hub["section"].items() if k != "verification"}}
    in_ch = ctx.checkpoint.spec.num_in_ch
    typed = {}
    if precision == "int8":
        # Explicit quantization: a Q/DQ graph with symmetric int8 activations and per-channel weights, its float
        # parts in FP16; the budget is measured on that final graph.
        from scnet_deploy.calibration.int8_onnx import build_int8_onnx

        fields["int8"] = build_int8_onnx(hub["path"], workdir / ONNX_FILE, ctx.int8_data(), ctx.options.budget_db,
                                         symmetric_activations=True,
                                         finish=lambda path: typed.update(write_float16(path, path, in_ch))).section
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


def build_here(directory: Path, verification: Path | None = None) -> dict:
    """The ``build-engine`` verb, run on the target device: build the plan of the TensorRT artifact ``directory``
    (its verified ONNX graph) with this machine's TensorRT, verify it against ``verification`` (the inputs and
    PyTorch FP32 outputs the export shipped: ``ShippedReference``), and record both in its manifest (written
    atomically). Returns the manifest."""
    import tensorrt as trt

    from scnet_deploy.exporters.runner import ShippedReference, verify_runner
    from scnet_deploy.manifest import file_hashes, read_manifest, sha256_of, write_manifest

    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.get("backend") != "tensorrt":
        raise ExportError(f"'{directory}' is a {manifest.get('backend')} artifact; build-engine builds TensorRT ones.")
    section, sizes = manifest["tensorrt"], SizeRange.from_dict(manifest["size_range"])
    profile = make_profile(sizes, manifest["arch"]["num_in_ch"], manifest["options"]["tensorrt"]["max_batch"])
    plan = build_plan(directory / ONNX_FILE, profile, section["workspace_mb"], None, directory / CACHE_FILE)
    (directory / PLAN_FILE).write_bytes(plan)
    section.update({"engine": PLAN_FILE, "version": trt.__version__, "generation": tensorrt_generation(trt.__version__),
                    "engine_note": None})
    files = [ONNX_FILE, PLAN_FILE, CACHE_FILE, SCRIPT_FILE]
    reason = engine_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"the engine was built with TensorRT {trt.__version__} here, and cannot be verified: "
                                 f"{reason}.")
    if verification is not None:
        reference = ShippedReference.load(verification)
        with TensorRTRunner(directory / PLAN_FILE, manifest["precision"], sizes) as runner:
            manifest["verification"] = verify_runner(runner, reference, [], manifest["precision"],
                                                     manifest["arch"]["num_in_ch"], inputs=reference.inputs,
                                                     int8=manifest.get("int8"))
    manifest["files"] = file_hashes(directory, files)
    if verification is not None:  # what this record was made of: the shipped set, this engine (remote.py checks)
        manifest["verification"].update({"reference_sha256": sha256_of(Path(verification)),
                                         "engine_sha256": manifest["files"][PLAN_FILE]})
    return write_manifest(directory, manifest)


def verification_runner(workdir: Path, fields: dict, precision: str):
    """The engine where one was built; else its strongly typed graph (FP32, mixed FP16, Q/DQ INT8) in ONNX Runtime."""
    if (workdir / PLAN_FILE).exists():
        return TensorRTRunner(workdir / PLAN_FILE, precision, SizeRange.from_dict(fields.get("size_range"))), None
    from scnet_deploy.exporters.onnxruntime_backend import OrtRunner

    return (OrtRunner(workdir / ONNX_FILE, precision=precision),
            f"the TensorRT graph ({precision}, strongly typed), run in ONNX Runtime on the CPU (no TensorRT engine "
            f"here: {engine_unavailable_reason()})")


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    if not (Path(directory) / PLAN_FILE).exists():
        note = manifest.get("tensorrt", {}).get("engine_note", "model.plan missing")
        raise BackendUnavailable(f"'{directory}' holds no TensorRT engine ({note}); run {SCRIPT_FILE} there, on the "
                                 "target device.")
    check_plan_version(Path(directory) / PLAN_FILE, manifest.get("tensorrt", {}).get("version"))
    return TensorRTRunner(Path(directory) / PLAN_FILE, manifest.get("precision", "fp32"),
                          SizeRange.from_dict(manifest.get("size_range"))).declare(manifest)
