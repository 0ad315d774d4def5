"""The registry of backends, keyed by name: the one place that maps a name to its code and its dependency.

The contract (Polygraphy's loader/runner split): each backend is a subpackage of ``exporters`` with two modules.
Its ``runtime`` module (what a device imports; no build code, no PyTorch) has
- ``check(precision) -> str | None``: why this machine cannot build or run that precision (None: it can), beyond
  the package being installed, which ``Backend.check`` tests first;
- ``load(directory, manifest, runtime) -> Runner``: a Runner that declares its manifest, architecture and size range;
- optionally ``load_errors() -> tuple``: what its runtime raises on a file it cannot load;
- optionally ``check_compute(compute) -> str | None``: why a compute unit it has cannot be reached here;
- optionally ``pipeline_skip(precision, compute) -> str | None``: why the pipeline should not build that engine here
  though it could (ncnn fp16 on a CPU without fp16 arithmetic: the fp32 engine again);
- optionally ``doctor() -> dict``: what ``doctor`` lists for it beyond the record (ncnn: its Vulkan devices);
- optionally ``DEVICE_BUILD``: for an engine built on the device that runs it (TensorRT), the artifact's files
  shipped to it and the files it brings back (``{"ships": (...), "returns": (...), "engine": name}``).
Its optional ``options`` module (no heavy import) has ``Build`` (its export options) and ``Run`` (its runtime
options), dataclasses of ``scnet_deploy.options.option`` fields: the CLI mounts them as the backend's own option
group, and the verbs pass them through by backend name without reading them.
Its ``build`` module (the export side) has
- ``build(ctx: session.BuildContext, workdir) -> dict``: writes its files, returns manifest fields (no verification);
- ``verification_runner(workdir, fields, precision) -> (Runner | None, note)``: what the build session verifies
  against PyTorch: the engine, a stand-in where this machine cannot run it (TensorRT's graph in ONNX Runtime), or
  None with the reason;
- optionally ``candidate_forms(precision) -> tuple``: the deploy forms its latency autotuner builds by default (the
  forms measured ever to win on the hardware it will time on); without it, every ``CANDIDATE_FORMS``.
Modules are imported only when used, so ``import scnet_deploy`` and ``--help`` need only the core dependencies.
"""

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass

from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.schema import Int, ListOf


class BackendUnavailable(ScnetDeployError):
    """A backend's dependency (or hardware) is missing."""


@dataclass(frozen=True)
class Backend:
    name: str  # runner name, as in manifest["backend"]
    format: str  # export format name (--format)
    package: str  # the backend's subpackage: its ``runtime`` and ``build`` modules are imported lazily
    requires: str  # Python module whose presence makes the backend available
    distribution: str  # pip distribution name, for the version
    install: str  # the exact command that makes it available
    precisions: tuple[str, ...]
    description: str
    # Builds a useful artifact without its dependency (TensorRT: the ONNX/Q-DQ model and build_engine.sh for the
    # target device); its runner still needs the dependency.
    builds_without_dependency: bool = False
    # "module:function" saying what the installed version means for this code (TensorRT: 10.x or 11.x typing)
    version_note: str | None = None
    # The files of an artifact its runner reads: they must be listed (and so hashed) in its manifest
    reads: tuple[str, ...] = ()
    # The compute units its engine can be built for and verified on here (--compute; the first is the default)
    compute_units: tuple[str, ...] = ("cpu",)
    # The memory model's coefficient (scnet_deploy/memory.py): how many num_feat-channel maps at the output
    # resolution its engine holds at once, measured (benchmarks/memory_model.py); None: unmeasured (as PyTorch)
    live_maps: float | None = None
    # INT8 budget loops the latency autotuner may stop early: the engines it times on this machine
    int8_speed_limited: bool = False
    # A Ray node can run its artifacts (a TensorRT plan runs only on the GPU kind it was built for)
    runs_on_ray: bool = True
    # Its engine's accepted LR size range is fixed at export (a TensorRT profile, a Core ML range): recorded
    sizes_at_export: bool = False
    # The precisions the pipeline builds, in order (FP32 before INT8: an INT8 engine must beat it)
    pipeline_precisions: tuple[str, ...] = ()
    # The pipeline also builds its FP32 engine in the official slice form, to show what the rewrite choice is worth
    shows_forms: bool = False
    # None: the pipeline builds its pipeline precisions by default. An LR side: only when --formats names it (its
    # engines run on an emulator here, seconds a frame: Qualcomm's HTP), at that one size where its engine takes one,
    # not autotuned, validated on centre crops of that size and not timed
    pipeline_on_request: int | None = None
    # Its engine is built on the device that runs it (export --on; the runtime module's DEVICE_BUILD)
    built_on_device: bool = False
    # Its own manifest section's fields that its runtime reads, (name, type) (schema-checked before any load)
    manifest_section: tuple[tuple[str, object], ...] = ()  # (name, its schema: a type or scnet_deploy.schema's)

    @property
    def default_compute(self) -> str:
        return self.compute_units[0]

    def build_options(self):
        """Its export options' defaults (``options.Build()``), or None where it has none."""
        return self._options("Build")

    def run_options(self):
        """Its runtime options' defaults (``options.Run()``), or None where it has none."""
        return self._options("Run")

    def option_types(self) -> dict:
        """{"Build": class, "Run": class} of those it has (its ``options`` module; no heavy import)."""
        module = self._options_module()
        return {k: getattr(module, k) for k in ("Build", "Run") if module is not None and hasattr(module, k)}

    def _options(self, kind: str):
        cls = self.option_types().get(kind)
        return None if cls is None else cls()

    def _options_module(self):
        try:
            return importlib.import_module(f"{self.package}.options")
        except ModuleNotFoundError:
            return None

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):
            return False

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def describe_version(self) -> str | None:
        """The installed version, with what it means where the backend says (``version_note``)."""
        version = self.version()
        if version is None or self.version_note is None:
            return version
        module, function = self.version_note.split(":")
        return f"{version} ({getattr(importlib.import_module(module), function)(version)})"

    def require(self, precision: str | None = None) -> None:
        """Raise BackendUnavailable (one line, with the fix) unless this machine can build ``precision``."""
        if not self.available():
            raise BackendUnavailable(f"backend '{self.name}' needs the Python package '{self.distribution}', which is "
                                     f"not installed. Fix: {self.install}")
        reason = self._module("runtime").check(precision) if precision else None
        if reason:
            raise BackendUnavailable(f"--format {self.format} --precision {precision}: {reason}.")

    def check(self, precision: str, compute: str | None = None) -> str | None:
        """Why this machine cannot build and run ``precision`` (on ``compute``, where given) with this backend (None:
        it can); a runtime module with several units says which it can reach here (``check_compute``)."""
        if not self.available():
            return f"{self.distribution} is not installed ({self.install})"
        module = self._module("runtime")
        reason = module.check(precision)
        if reason is None and compute is not None:
            if compute not in self.compute_units:
                return f"{self.name} computes on {', '.join(self.compute_units)}, not {compute}"
            if hasattr(module, "check_compute"):
                reason = module.check_compute(compute)
        return reason

    def pipeline_jobs(self) -> list[tuple[str, str, str | None]]:
        """(label, precision, compute) of every engine the pipeline builds with this backend: its pipeline
        precisions on each compute unit (a unit named in the label and on the target only where it has several)."""
        several = len(self.compute_units) > 1
        return [(f"{self.format}-{unit + '-' if several and unit != self.default_compute else ''}{precision}",
                 precision, unit if several else None)
                for unit in self.compute_units for precision in self.pipeline_precisions]

    def pipeline_skip(self, precision: str, compute: str | None) -> str | None:
        """Why the pipeline should not build this engine here though it could (None: it should)."""
        module = self._module("runtime")
        return module.pipeline_skip(precision, compute) if hasattr(module, "pipeline_skip") else None

    def doctor(self) -> dict:
        """What ``doctor`` lists for it beyond its record (its runtime module's ``doctor()``, where it has one)."""
        module = self._module("runtime")
        return module.doctor() if hasattr(module, "doctor") else {}

    def device_build(self) -> dict:
        """What an engine built on its device ships there and brings back (``DEVICE_BUILD``)."""
        return self._module("runtime").DEVICE_BUILD

    def build_on_device(self, artifact, verification=None) -> dict:
        """``build-engine`` on the device: its engine built here from the artifact and verified on ``verification``
        (``DEVICE_BUILD["builder"]``, "module:function" of its folder); returns the artifact's manifest."""
        self.require()
        module, function = self.device_build()["builder"].split(":")
        return getattr(importlib.import_module(f"{self.package}.{module}"), function)(artifact, verification)

    def candidate_forms(self, precision: str) -> tuple[str, ...]:
        """The deploy forms ``--optimize latency`` builds for ``precision`` unless ``--candidates`` names others."""
        from scnet_deploy.options import CANDIDATE_FORMS

        module = self._module("build")
        return module.candidate_forms(precision) if hasattr(module, "candidate_forms") else CANDIDATE_FORMS

    def runtime(self, building: bool = False):
        """The runtime module (``check``, ``load``): raises BackendUnavailable, with the fix, without the package
        (unless ``building`` a backend that builds without it: its loader then says what is missing)."""
        if not (building and self.builds_without_dependency):
            self.require()
        return self._module("runtime")

    def builder(self):
        """The build module (``build``, ``verification_runner``): needs the package unless the backend builds
        without it."""
        if not self.builds_without_dependency:
            self.require()
        return self._module("build")

    def _module(self, side: str):
        """The backend's ``runtime`` or ``build`` module, imported the first time it is asked for."""
        return importlib.import_module(f"{self.package}.{side}")


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    if backend.name in _BACKENDS or any(b.format == backend.format for b in _BACKENDS.values()):
        raise ValueError(f"backend {backend.name!r} / format {backend.format!r} is registered twice")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> list[Backend]:
    return list(_BACKENDS.values())


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise ScnetDeployError(f"backend {name!r} is unknown; known backends: {sorted(_BACKENDS)}.")
    return _BACKENDS[name]


def backend_for_format(fmt: str) -> Backend:
    for backend in _BACKENDS.values():
        if backend.format == fmt:
            return backend
    raise ScnetDeployError(f"--format {fmt!r} is not available; choose one of "
                           f"{sorted(b.format for b in _BACKENDS.values())} (comma-separated for several).")


def format_names() -> list[str]:
    return sorted(b.format for b in _BACKENDS.values())


_PKG = "scnet_deploy.exporters"
# Install hints name the dependency as this project's extras require it (pyproject.toml; a test holds them equal):
# scnet-deploy itself is installed from its checkout or wheel, never from the index (README, Install).
register(Backend("onnxruntime", "onnx", f"{_PKG}.onnxruntime", "onnxruntime", "onnxruntime",
                 "pip install 'onnxruntime>=1.24.1'", ("fp32", "int8"),
                 "ONNX model run by ONNX Runtime (CPU; CUDA where present)", reads=("model.onnx",), live_maps=3.0,
                 int8_speed_limited=True, pipeline_precisions=("fp32", "int8"), shows_forms=True))
register(Backend("openvino", "openvino", f"{_PKG}.openvino", "openvino", "openvino",
                 "pip install 'openvino>=2024.4'", ("fp32", "fp16", "bf16", "int8"), "OpenVINO IR (model.xml + model.bin)",
                 reads=("model.xml", "model.bin"), live_maps=2.5, int8_speed_limited=True,
                 manifest_section=(("compile_config", dict),),
                 pipeline_precisions=("fp32", "bf16", "fp16", "int8")))
register(Backend("coreml", "coreml", f"{_PKG}.coreml", "coremltools", "coremltools",
                 "pip install 'coremltools>=8'", ("fp32", "fp16", "int8"),
                 "Core ML ML Program (model.mlpackage); prediction needs macOS",
                 reads=("model.mlpackage/Manifest.json",), compute_units=("all",),  # Core ML picks CPU/GPU/ANE
                 sizes_at_export=True, pipeline_precisions=("fp16",)))
register(Backend("tensorrt", "tensorrt", f"{_PKG}.tensorrt", "tensorrt", "tensorrt",
                 "pip install 'tensorrt>=10,<12' (NVIDIA GPU and driver required)", ("fp32", "fp16", "int8"),
                 "TensorRT 10.x/11.x engine (model.plan, strongly typed); without TensorRT: its ONNX and "
                 "build_engine.sh", builds_without_dependency=True,
                 version_note=f"{_PKG}.tensorrt.graph:tensorrt_generation", compute_units=("gpu",),
                 runs_on_ray=False, sizes_at_export=True, pipeline_precisions=("fp16", "int8"), built_on_device=True,
                 manifest_section=(("engine", str), ("version", str), ("engine_note", str))))
register(Backend("ncnn", "ncnn", f"{_PKG}.ncnn", "ncnn", "ncnn", "pip install 'ncnn>=1.0.20250503'", ("fp32", "fp16"),
                 "ncnn param + bin (converted by pnnx) on the CPU or a Vulkan device (Android, ARM, any Vulkan GPU)",
                 reads=("model.ncnn.param", "model.ncnn.bin"), compute_units=("cpu", "vulkan"),
                 pipeline_precisions=("fp32", "fp16")))
register(Backend("qnn", "qnn", f"{_PKG}.qnn", "onnxruntime_qnn", "onnxruntime-qnn", "pip install 'onnxruntime-qnn>=2.7'",
                 ("a16w8", "int8", "fp16"),
                 "Qualcomm Hexagon NPU (HTP): an EPContext compiled for a Snapdragon SoC, run by ONNX Runtime's QNN "
                 "provider (on x86-64: the HTP's emulation, accuracy only)",
                 reads=("model.onnx", "model_qnn.bin"), compute_units=("htp",), runs_on_ray=False,
                 pipeline_precisions=("a16w8",), pipeline_on_request=48, manifest_section=(("soc", str), ("size", ListOf(Int(1, 2**16), length=2)), ("context", str),
                                   ("scale", Int(1, 16)), ("halo", Int(0, 4096)))))
