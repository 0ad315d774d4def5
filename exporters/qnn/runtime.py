"""Qualcomm's HTP (Hexagon NPU), the runtime side: ``model.onnx``, an EPContext graph whose one node holds the
context compiled for a SoC (``model_qnn.bin``), run by ONNX Runtime's QNN provider on its HTP backend, CPU fallback
off. On x86-64 the HTP is the QNN SDK's emulation: bit-true to the NPU's arithmetic, not to its speed.

HTP graphs have static shapes: an artifact is compiled for one LR size (``manifest["qnn"]["size"]``). An input of
that size is one run; a larger one is run in exact crops of that size (``imaging.tiling.run_fixed``); a smaller one
is refused in one line. A device imports this module and nothing of the build side."""

from pathlib import Path

import numpy as np

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.exporters.qnn import provider
from scnet_deploy.exporters.qnn.options import DEFAULT_SOC
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.manifest import INPUT_NAME, OUTPUT_NAME
from scnet_deploy.options import RuntimeOptions, SizeRange

MODEL_FILE, CONTEXT_FILE = "model.onnx", "model_qnn.bin"
ALLOWED_OPS = frozenset({"EPContext"})  # graph_guard: the context graph holds its one node and nothing else
NOT_TIMED = "emulated HTP: accuracy only"  # what bench says instead of milliseconds on x86-64


def check(precision: str) -> str | None:
    """fp16 is built only where the provider compiles it for the chosen SoC (the build says so); the quantized
    precisions run everywhere the plugin does."""
    return None


def doctor() -> dict:
    """The plugin, its QNN SDK, its backends, emulated or real, and the SoCs ``--soc`` accepts (asked of the
    provider; about 9 s the first time)."""
    try:
        found = {**provider.versions(), "backends": provider.backend_libraries(), "htp": provider.where(),
                 "socs": provider.accepted_socs()}
    except Exception as exc:  # a broken plugin is something to report, not a reason for doctor to fail
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return {"qnn": f"the QNN provider could not be loaded: {why}",
                "notes": [f"QNN: the provider could not be loaded: {why}"]}
    backends = ", ".join(name for name, present in found["backends"].items() if present)
    return {"qnn": found, "notes": [
        f"onnxruntime-qnn {found['onnxruntime-qnn']}, QNN SDK {found['qnn_sdk']}, backends {backends}; the HTP "
        f"here is {'the x86-64 emulation (accuracy only, no latency)' if provider.emulated() else 'a Hexagon NPU'}",
        f"--soc accepts: {', '.join(found['socs'])} (default {DEFAULT_SOC})"]}


class QnnRunner(Runner):
    profile_note = "QNN's profiler wrote nothing readable"
    backend = "qnn"
    stoppable = True

    def __init__(self, directory: Path, precision: str, section: dict, threads: int = 0) -> None:
        self.path = Path(directory) / MODEL_FILE
        self.session = provider.open_session(self.path, f"QNN artifact '{directory}'", threads=threads)
        # the size it was compiled for; larger inputs in exact crops of it, overlapping by the receptive radius
        self.size, self.scale, self.halo, self._run = tuple(section["size"]), section["scale"], section["halo"], None
        self.timing_note = NOT_TIMED if provider.emulated() else None
        super().__init__(precision, SizeRange(self.size, self.size, None), name=f"qnn {provider.where()} {precision}")

    def _infer(self, lr: np.ndarray) -> np.ndarray:
        import onnxruntime as ort

        from scnet_deploy.imaging.tiling import run_fixed

        self._run = run = ort.RunOptions()  # stop() sets its terminate flag: the crop in progress is the last

        def one(crop: np.ndarray) -> np.ndarray:
            if run.terminate:
                raise KeyboardInterrupt
            return np.concatenate([self.session.run([OUTPUT_NAME], {INPUT_NAME: crop[i:i + 1]}, run)[0]
                                   for i in range(crop.shape[0])])

        return run_fixed(one, lr, self.size, self.scale, self.halo)

    def stop(self) -> None:
        if self._run is not None:
            self._run.terminate = True

    def profile_ops(self, lr: np.ndarray, runs: int) -> dict | None:
        """QNN's own profiler (``profiling_level=detailed``): each HTP operator's cycles per run, in milliseconds
        at the accelerator's measured cycles per microsecond (on the emulator: its cycles are the HTP's modelled
        ones, its microseconds the emulator's, so bench keeps only the shares). One crop of the compiled size."""
        import csv
        import tempfile

        x = np.ascontiguousarray(lr[:1, :, :self.size[0], :self.size[1]], dtype=np.float32)
        if x.shape[2:] != self.size:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "qnn_profile.csv"
            session = provider.open_session(self.path, f"QNN artifact '{self.path.parent}'", {
                "profiling_level": "detailed", "profiling_file_path": str(path)})
            for _ in range(runs + 1):
                session.run([OUTPUT_NAME], {INPUT_NAME: x})
            del session  # the provider writes its profile when the session ends
            rows = list(csv.reader(path.open())) if path.exists() else []
        cycles: dict[str, float] = {}
        exec_us, exec_cycles = [], []
        for row in rows[1:]:
            if len(row) < 7:
                continue
            kind, value, unit, name = row[1], row[2], row[3], row[6]
            if name == "Accelerator (execute) time":
                exec_us.append(float(value))
            elif name == "Accelerator (execute) time (cycles)":
                exec_cycles.append(float(value))
            elif kind == "NODE" and unit == "CYCLES" and ":OpId" in name:
                cycles[name.split(":OpId")[0]] = cycles.get(name.split(":OpId")[0], 0.0) + float(value)
        if not cycles or not exec_us or not sum(exec_cycles):
            return None
        ms_per_cycle = sum(exec_us[1:] or exec_us) / 1000 / sum(exec_cycles[1:] or exec_cycles)
        counted = len(exec_cycles)
        return {"ops": [{"name": n, "type": "HTP op", "ms": c * ms_per_cycle / counted} for n, c in cycles.items()],
                "runs": runs, "whole_ms": [u / 1000 for u in (exec_us[1:] or exec_us)]}

    def close(self) -> None:
        self.session = None


def load_errors() -> tuple[type, ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(getattr(state, n) for n in ("Fail", "InvalidProtobuf", "InvalidGraph", "NoSuchFile",
                                            "InvalidArgument") if hasattr(state, n))


def graph_facts(directory: Path, manifest: dict, probe: tuple[int, int]):
    """What ``graph_guard`` checks: the context graph's operators (one EPContext), its static I/O shapes (the size
    it was compiled for, whatever the probe) and the context file its node names, which must be the artifact's own
    (a path elsewhere would make the provider read a file no hash covers)."""
    import onnx

    from scnet_deploy.graph_guard import GraphFacts, elements

    model = onnx.load(str(Path(directory) / MODEL_FILE), load_external_data=False)
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        own_file = attrs.get("embed_mode") == 0 and attrs.get("ep_cache_context") == CONTEXT_FILE.encode()
        if node.op_type == "EPContext" and not own_file:
            ops["EPContext(not the artifact's own context file)"] = 1
    shapes, unknown = [], []
    for value in [*model.graph.input, *model.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        (unknown if None in dims or not dims else shapes).append(value.name if None in dims or not dims else dims)
    size = tuple(shapes[0][2:]) if shapes and len(shapes[0]) == 4 else tuple(probe)
    return GraphFacts(ops, size, max((elements(s) for s in shapes), default=0), unknown)


def load(directory: Path, manifest: dict, runtime: RuntimeOptions = RuntimeOptions()) -> Runner:
    # their types and bounds are the door's (the registry's manifest_section); here, that they are there at all
    missing = [k for k in ("size", "scale", "halo") if k not in manifest.get("qnn", {})]
    if missing:
        raise ScnetDeployError(f"QNN artifact '{directory}': its manifest's qnn section lacks {missing}; re-export it.")
    return QnnRunner(Path(directory), manifest.get("precision", "a16w8"), manifest["qnn"],
                     runtime.threads).declare(manifest)
