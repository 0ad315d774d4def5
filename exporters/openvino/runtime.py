"""OpenVINO, the runtime side: an IR (model.xml + model.bin) compiled for the CPU plugin at an explicit precision.

Precision is always explicit at run time: the CPU plugin's default inference precision is bf16 on CPUs with
AVX512-BF16/AMX, so "FP32" means INFERENCE_PRECISION_HINT=f32. bf16 and f16 are precisions of their own, verified
as such (PSNR vs FP32).
"""

from pathlib import Path

import numpy as np

from scnet_deploy.errors import ExportError
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.exporters.openvino.options import CompileOptions, Run
from scnet_deploy.options import RuntimeOptions

XML, BIN = "model.xml", "model.bin"


# INT8 runs its non-quantized parts (resize, add, float-kept layers) in f32: its drift is INT8's alone.
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


_CAPABILITY = {"bf16": "BF16", "f16": "FP16", "f32": "FP32"}


def cpu_capabilities() -> list[str]:
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def inference_precision(precision: str, options: CompileOptions) -> str:
    """The INFERENCE_PRECISION_HINT for a precision: explicit option, else the precision's own where the CPU has it.

    FP16 on a CPU without native f16 runs f32 arithmetic over FP16-compressed weights (OpenVINO's own fallback).
    """
    hint = options.inference_precision or _HINTS[precision]
    if hint not in _CAPABILITY:
        raise ExportError(f"OpenVINO inference precision {hint!r} is unknown; choose f32, bf16 or f16.")
    if hint == "f16" and options.inference_precision is None and "FP16" not in cpu_capabilities():
        hint = "f32"
    return hint


def compile_config(hint: str, options: CompileOptions) -> dict:
    perf = options.performance.upper()
    if perf not in ("LATENCY", "THROUGHPUT"):
        raise ExportError(f"OpenVINO performance hint {options.performance!r} is unknown; choose latency or "
                          "throughput.")
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": perf}
    if options.streams:
        config["NUM_STREAMS"] = str(options.streams)
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    return config


class OpenVINORunner(Runner):
    backend = "openvino"
    stoppable = True

    def __init__(self, xml: Path, precision: str, options: CompileOptions) -> None:
        import openvino as ov

        hint = inference_precision(precision, options)
        if _CAPABILITY[hint] not in cpu_capabilities():
            raise ExportError(f"this CPU cannot run OpenVINO {hint} (capabilities {cpu_capabilities()}); use "
                              "--precision fp32 here, or run the artifact on a CPU that has it.")
        self.config = compile_config(hint, options)
        self.xml = Path(xml)
        self.compiled = ov.Core().compile_model(str(xml), "CPU", self.config)
        self._parts = None  # the body and tail compiled, once
        self.effective = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.request = self.compiled.create_infer_request()
        # Labelled by what it is: an INT8 engine's hint is only the precision of its float parts.
        label = f"int8 (float parts {hint})" if precision == "int8" else hint
        super().__init__(precision, name=f"openvino CPU {label}")

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        self.request.infer({0: lr})
        return self.request.get_output_tensor(0).data.copy()

    def stop(self) -> None:
        if self.request is not None:
            self.request.cancel()

    def optimal_requests(self) -> int:
        return int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    @property
    def element_bytes(self) -> int:  # what the CPU plugin computes in (fp16 weights run in f32)
        return 1 if self.precision == "int8" else {"bf16": 2, "f16": 2}.get(self.effective, 4)

    def profile_ops(self, lr: np.ndarray, runs: int) -> dict:
        """OpenVINO's performance counters (the engine compiled again with them on, the same configuration): each
        executed node's real time, averaged over the timed runs; names are the IR's (``node_conv2d/WithoutBiases``,
        reorders named after the nodes they join)."""
        import time

        import openvino as ov

        compiled = ov.Core().compile_model(str(self.xml), "CPU", {**self.config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        request.infer({0: lr})
        ops: dict[tuple[str, str], float] = {}
        whole = []
        for _ in range(runs):
            t0 = time.perf_counter()
            request.infer({0: lr})
            whole.append((time.perf_counter() - t0) * 1000)
            for p in request.profiling_info:
                if p.status == p.Status.EXECUTED:
                    key = (p.node_name, f"{p.node_type} ({p.exec_type})")
                    ops[key] = ops.get(key, 0.0) + p.real_time.total_seconds() * 1000 / runs
        return {"ops": [{"name": n, "type": t, "ms": ms} for (n, t), ms in ops.items()], "runs": runs,
                "whole_ms": whole}

    def worker(self) -> "OpenVINORunner":
        import copy

        clone = copy.copy(self)  # the same compiled model; its own infer request (a request serves one run at a time)
        clone.request = self.compiled.create_infer_request()
        return clone

    def run_in_flight(self, lr: np.ndarray, count: int, inflight: int) -> None:
        import openvino as ov

        queue = ov.AsyncInferQueue(self.compiled, inflight)
        for _ in range(count):
            queue.start_async({0: np.ascontiguousarray(lr, dtype=np.float32)})
        queue.wait_all()

    def parts(self):
        if self._parts is None:
            import openvino as ov

            from scnet_deploy.exporters.openvino.split import ov_parts

            core = ov.Core()
            models = ov_parts(lambda: core.read_model(str(self.xml)))
            if models is None:
                return None
            self._parts = [core.compile_model(m, "CPU", self.config) for m in models]
        body, tail = (c.create_infer_request() for c in self._parts)

        def run_body(lr):
            body.infer({0: lr})
            return body.get_output_tensor(0).data.copy()

        def run_tail(features, lr):
            tail.infer({0: features, 1: lr})
            return tail.get_output_tensor(0).data.copy()

        return run_body, run_tail

    def close(self) -> None:
        self.request = self.compiled = self._parts = None


# What SCNet's IRs are made of (every form, f32/bf16/f16 and INT8's FakeQuantize), and tensor ops of the same kind;
# never control flow (TensorIterator, Loop, If) nor ops whose output shape depends on data
ALLOWED_OPS = frozenset({
    "Parameter", "Result", "Constant", "Convert", "Convolution", "GroupConvolution", "Add", "Subtract", "Multiply",
    "Divide", "Relu", "PRelu", "Clamp", "Sigmoid", "Tanh", "Maximum", "Minimum", "Floor", "Round", "Sqrt", "Pad",
    "Concat", "Split", "VariadicSplit", "StridedSlice", "Slice", "DepthToSpace", "SpaceToDepth", "Reshape",
    "Transpose", "Interpolate", "FakeQuantize", "FakeConvert", "ShapeOf", "Gather", "Unsqueeze", "Squeeze",
    "Broadcast", "Tile", "MatMul"})


def graph_facts(directory: Path, manifest: dict, probe: tuple[int, int]):
    """What ``graph_guard`` checks: the IR's operators, and its shapes with the input set to ``probe``."""
    import openvino as ov

    from scnet_deploy.graph_guard import GraphFacts, elements

    model = ov.Core().read_model(str(Path(directory) / XML))
    ops: dict[str, int] = {}
    for op in model.get_ops():
        ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
    unknown, largest = [], 0
    try:
        channels = model.inputs[0].get_partial_shape()[1]
        model.reshape({model.inputs[0]: ov.PartialShape([1, channels if channels.is_static else 3, *probe])})
    except Exception as exc:  # a graph that cannot take the probe size: refused by the guard
        return GraphFacts(ops, probe, 0, [f"reshape to {probe}: {str(exc)[:120]}"])
    for op in model.get_ops():
        for out in op.outputs():
            shape = out.get_partial_shape()
            if shape.is_dynamic:
                unknown.append(op.get_friendly_name())
            else:
                largest = max(largest, elements(shape.to_shape()))
    return GraphFacts(ops, probe, largest, unknown)


def check(precision: str) -> str | None:
    """Why this machine cannot build or run ``precision`` (None: it can)."""
    if precision == "int8":
        import importlib.util

        if importlib.util.find_spec("nncf") is None:
            from scnet_deploy.errors import EXPORT_EXTRA

            return f"OpenVINO INT8 needs nncf (the export stack), which is not installed ({EXPORT_EXTRA})"
    if precision == "bf16" and "BF16" not in cpu_capabilities():
        return "this CPU has no bf16 support in OpenVINO"
    return None


def load_errors() -> tuple[type, ...]:
    """What OpenVINO raises on an IR it cannot read or compile."""
    return (RuntimeError,)


def compile_options(runtime: RuntimeOptions, hint: str | None = None) -> CompileOptions:
    """The CPU plugin's options for a run as ``runtime`` asks (its throughput hint with several requests in
    flight), at ``hint`` (None: from the precision)."""
    run = runtime.backend("openvino", Run())
    return CompileOptions(hint, "throughput" if runtime.inflight else run.performance, run.streams, runtime.threads)


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    recorded = manifest.get("openvino", {}).get("compile_config", {})
    options = compile_options(runtime, recorded.get("INFERENCE_PRECISION_HINT"))
    return OpenVINORunner(Path(directory) / XML, manifest.get("precision", "fp32"), options).declare(manifest)

