"""TensorRT, the runtime side: a ``model.plan`` deserialized and run on an NVIDIA GPU (PyTorch's CUDA memory)."""

from pathlib import Path

import numpy as np

from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.registry import BackendUnavailable
from scnet_deploy.exporters.runner import Runner, SizeRange
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME
from scnet_deploy.options import RuntimeOptions

ONNX_FILE, PLAN_FILE, CACHE_FILE, SCRIPT_FILE = "model.onnx", "model.plan", "timing.cache", "build_engine.sh"
# Plans are built where they run (export --on, the device layer): what is shipped there, what comes back, the engine
DEVICE_BUILD = {"ships": (ONNX_FILE, SCRIPT_FILE), "returns": (PLAN_FILE, CACHE_FILE), "engine": PLAN_FILE,
                "builder": "engine:build_here"}


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def _require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs an NVIDIA GPU with CUDA, and none is visible here (torch.cuda). "
                                 "Build and run on the target device (see build_engine.sh in the artifact).")


class TensorRTRunner(Runner):
    profile_note = "TensorRT reported no layer times"
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

    def profile_ops(self, lr: np.ndarray, runs: int) -> dict | None:
        """TensorRT's layer profiler (``IExecutionContext.profiler``): each layer's time per run (layer names are
        the ONNX nodes' it fused, ``node_conv2d_1 + node_relu``), on a second context of the same engine."""
        import time

        import tensorrt as trt

        layers: dict[str, float] = {}

        class Layers(trt.IProfiler):
            def report_layer_time(self, layer_name, ms):
                layers[layer_name] = layers.get(layer_name, 0.0) + ms

        context, self.context = self.context, self.engine.create_execution_context()
        try:
            self._infer(lr)  # warm, unprofiled
            self.context.profiler = Layers()
            whole = []
            for _ in range(runs):
                t0 = time.perf_counter()
                self._infer(lr)
                whole.append((time.perf_counter() - t0) * 1000)
        finally:
            self.context = context
        if not layers:
            return None
        return {"ops": [{"name": n, "type": "TensorRT layer", "ms": ms / runs} for n, ms in layers.items()],
                "runs": runs, "whole_ms": whole}

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
        return "TensorRT is not installed here (pip install 'tensorrt>=10,<12' on the target)"
    try:
        import torch
    except ImportError:  # the runner's GPU memory is PyTorch's CUDA tensors (JetPack ships PyTorch)
        return "PyTorch with CUDA is not installed here (the TensorRT runner's GPU memory is PyTorch's)"
    return None if torch.cuda.is_available() else "no NVIDIA GPU is visible here"


def check(precision: str) -> str | None:
    return None  # builds its ONNX graph and build_engine.sh anywhere; the engine where TensorRT and a GPU are


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    if not (Path(directory) / PLAN_FILE).exists():
        note = manifest.get("tensorrt", {}).get("engine_note", "model.plan missing")
        raise BackendUnavailable(f"'{directory}' holds no TensorRT engine ({note}); run {SCRIPT_FILE} there, on the "
                                 "target device.")
    check_plan_version(Path(directory) / PLAN_FILE, manifest.get("tensorrt", {}).get("version"))
    return TensorRTRunner(Path(directory) / PLAN_FILE, manifest.get("precision", "fp32"),
                          SizeRange.from_dict(manifest.get("size_range"))).declare(manifest)

