"""ONNX Runtime, the runtime side: the verified ONNX model as the engine; CPU provider, CUDA provider where present.
A device imports this module and nothing of the build side."""

from pathlib import Path

import numpy as np

from scnet_deploy.exporters.onnx_facts import ALLOWED_OPS, onnx_facts  # noqa: F401  (graph_guard reads it)
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME
from scnet_deploy.options import RuntimeOptions

MODEL_FILE = "model.onnx"


def check(precision: str) -> str | None:
    return None  # onnxruntime itself is the registry's check; every precision it offers builds and runs on CPU


def providers(use_cuda: bool = True) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = ["CUDAExecutionProvider"] if use_cuda and "CUDAExecutionProvider" in available else []
    return chosen + ["CPUExecutionProvider"]


class OrtRunner(Runner):
    backend = "onnxruntime"
    stoppable = True

    def __init__(self, path: Path, runtime: RuntimeOptions = RuntimeOptions(), precision: str = "fp32",
                 name: str = "") -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: its warnings (FP16 nodes it cannot constant-fold) are not the user's
        if runtime.threads:
            so.intra_op_num_threads = runtime.threads
        self.path, self.session_options, self.providers = Path(path), so, providers(runtime.cuda)
        self.session = ort.InferenceSession(str(path), so, providers=self.providers)
        self._parts = None
        provider = self.session.get_providers()[0].replace("ExecutionProvider", "")
        super().__init__(precision, name=name or f"onnxruntime {provider} {precision}")

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        self._run = ort.RunOptions()  # stop() sets its terminate flag: the run ends at its next node
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: lr}, self._run)[0]

    def stop(self) -> None:
        if getattr(self, "_run", None) is not None:
            self._run.terminate = True

    def profile_ops(self, lr: np.ndarray, runs: int) -> dict:
        """ONNX Runtime's session profiling: each node's kernel time within the timed runs' ``model_run`` spans (the
        warm-up's left out); names are ONNX Runtime's after its fusions (``leaky_relu_nchwc``: a fused conv named
        after the tensor it writes)."""
        import json
        import os
        import tempfile

        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = self.session_options.intra_op_num_threads
        with tempfile.TemporaryDirectory() as tmp:
            so.enable_profiling, so.profile_file_prefix = True, os.path.join(tmp, "profile")
            session = ort.InferenceSession(str(self.path), so, providers=self.providers)
            for _ in range(runs + 1):
                session.run([OUTPUT_NAME], {INPUT_NAME: lr})
            with open(session.end_profiling()) as f:
                events = json.load(f)
        spans = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run"][1:]
        ops: dict[tuple[str, str], float] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and any(a <= e["ts"] <= b for a, b in spans):
                key = (e["name"][:-len("_kernel_time")], e.get("args", {}).get("op_name", "?"))
                ops[key] = ops.get(key, 0.0) + e["dur"] / 1000 / runs
        return {"ops": [{"name": n, "type": t, "ms": ms} for (n, t), ms in ops.items()], "runs": runs,
                "whole_ms": [(b - a) / 1000 for a, b in spans]}

    def parts(self):
        """None without the ``onnx`` package (a device's torch-free install has only onnxruntime): it cuts the graph."""
        if self._parts is None:
            import importlib.util

            import onnxruntime as ort

            if importlib.util.find_spec("onnx") is None:
                return None

            from scnet_deploy.exporters.split import onnx_parts

            cut = onnx_parts(self.path, INPUT_NAME, OUTPUT_NAME)
            if cut is None:
                return None
            name, body, tail = cut
            self._parts = name, *(ort.InferenceSession(m.SerializeToString(), self.session_options,
                                                       providers=self.providers) for m in (body, tail))
        name, body, tail = self._parts
        return (lambda lr: body.run(None, {INPUT_NAME: lr})[0],
                lambda features, lr: tail.run([OUTPUT_NAME], {name: features, INPUT_NAME: lr})[0])

    def close(self) -> None:
        self.session = self._parts = None


def load_errors() -> tuple[type, ...]:
    """What ONNX Runtime raises on a file it cannot load (a malformed graph, external data it refuses)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(getattr(state, n) for n in ("Fail", "InvalidProtobuf", "InvalidGraph", "NoSuchFile",
                                            "InvalidArgument", "NotImplemented") if hasattr(state, n))


def graph_facts(directory: Path, manifest: dict, probe: tuple[int, int]):
    """What ``graph_guard`` checks before the graph is loaded."""
    return onnx_facts(Path(directory) / MODEL_FILE, probe)


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    return OrtRunner(Path(directory) / MODEL_FILE, runtime, manifest.get("precision", "fp32")).declare(manifest)

