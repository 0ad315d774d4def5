"""One build session: what several engines share is made once.

A session holds one loaded checkpoint and caches, per deploy form, the verified ONNX graph and, per calibration
source, the calibration crops and hold-out, and per form a backend's own model of the graph (OpenVINO's, converted
once for its four precisions). ``export``, the latency
autotuner and ``pipeline`` all build through it, target by target::

    session = BuildSession(checkpoint, options, scratch)
    fields = session.build(Target("openvino", "int8"), workdir)   # files in workdir, manifest fields returned

Every engine is verified here, once, the same way: the backend builds, then the session runs the engine (or, where
this machine cannot, what the backend offers in its place) against PyTorch FP32.
"""

from dataclasses import dataclass, replace
from pathlib import Path

from typing import TYPE_CHECKING

from .build_options import ExportOptions
from .model.forms import DeployOptions
from .options import QUANTIZED
from .progress import Progress, reporter

if TYPE_CHECKING:
    from scnet_deploy.calibration.budget import FirstTry, SpeedLimit

    from .model.checkpoint import Checkpoint


@dataclass(frozen=True)
class Target:
    """One engine to build: a format, a precision, and optionally a fixed deploy form and autotune choice (``None``:
    the export options')."""

    format: str
    precision: str = "fp32"
    form: DeployOptions | None = None
    optimize: str | None = None
    compute: str | None = None  # the unit it is built for and verified on (ncnn: cpu or vulkan); None: the options'


@dataclass
class BuildContext:
    """What a backend's ``build`` reads: the checkpoint, the options as this target asks (its precision and form),
    and the session's shared products."""

    checkpoint: "Checkpoint"
    options: ExportOptions
    session: "BuildSession"
    # The autotuner's calibration.budget.SpeedLimit for an INT8 candidate, honoured by the backends whose engine it
    # times (Backend.int8_speed_limited): their build returns {"abandoned": why} where it stops the budget loop;
    # None: the loop runs to the end. ``first_try``: the candidate's kept all-INT8 try (calibration.budget.FirstTry).
    speed_limit: "SpeedLimit | None" = None
    first_try: "FirstTry | None" = None

    def onnx(self) -> dict:
        """{'path': the verified model.onnx of this form, 'section': its manifest section}; built once a session."""
        return self.session.onnx(self.options.onnx)

    def int8_data(self):
        """Calibration crops, hold-out and FP32 baseline (calibration.budget.Int8Data); built once a session."""
        return self.session.int8_data(self.options.calib)

    def from_onnx(self, kind: str, convert):
        """``convert(path)`` of this form's verified ONNX graph: a backend's own model of it (OpenVINO's ``ov.Model``),
        made once a session per form and ``kind``, shared by every target of that backend; copy it before changing
        it."""
        return self.session.from_onnx(kind, self.options.onnx, convert)

    def deploy_module(self):
        from .model.rewrites import to_deploy_form

        return to_deploy_form(self.checkpoint.model, self.options.onnx.deploy())


class BuildSession:
    def __init__(self, checkpoint: "Checkpoint", options, scratch: Path, progress=None) -> None:
        self.checkpoint = checkpoint
        self.options = options  # ExportOptions: what every target shares (sizes, calibration, budget, tuning)
        self.scratch = Path(scratch)
        self.progress = reporter(progress)  # receives Progress events
        self._onnx: dict = {}
        self._exports: dict = {}  # the exporter's raw graphs (onnx_graph.build_onnx)
        self._int8: dict = {}
        self._converted: dict = {}  # (kind, ONNX options) -> a backend's model of that graph (BuildContext.from_onnx)
        self._reference = None
        # (format, precision, LR size) -> the median ms of the form autotuning chose in this session: an INT8
        # engine must beat its backend's FP32 engine (autotune.build_fastest)
        self.tuned_ms: dict = {}

    @property
    def reference(self):
        """The checkpoint's PyTorch FP32 outputs, each computed once a session (``ReferenceOutputs``)."""
        if self._reference is None:
            from scnet_deploy.exporters.torch_runner import ReferenceOutputs

            self._reference = ReferenceOutputs(self.checkpoint.model)
        return self._reference

    def options_for(self, target: Target, form: DeployOptions | None = None):
        """The export options as ``target`` asks: its format, precision, autotuning and form."""
        options = self.options
        form = form or target.form
        return replace(options, format=target.format, precision=target.precision,
                       compute=target.compute or options.compute,
                       tune=replace(options.tune, optimize=target.optimize or options.tune.optimize),
                       onnx=options.onnx.with_form(form) if form else options.onnx)

    def onnx(self, onnx_options) -> dict:
        if onnx_options not in self._onnx:
            from scnet_deploy.exporters.onnx_graph import build_onnx, options_dict

            self.progress(Progress(f"ONNX graph, form {onnx_options.deploy().name}: export, simplify, verify"))
            path = self.scratch / f"form-{len(self._onnx)}.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            r = build_onnx(self.checkpoint.model, onnx_options, path, self.checkpoint.spec.num_in_ch,
                           reference_outputs=self.reference, exports=self._exports)
            self._onnx[onnx_options] = {"path": path, "section": {
                "options": options_dict(onnx_options), "simplifier": r.simplifier,
                "nodes_before_simplify": r.nodes_before, "nodes_after_simplify": r.nodes_after,
                "node_count": sum(r.nodes_after.values()), "seconds": r.seconds, "verification": r.verification,
                "stages": r.stages}}
        return self._onnx[onnx_options]

    def from_onnx(self, kind: str, onnx_options, convert):
        if (kind, onnx_options) not in self._converted:
            self._converted[kind, onnx_options] = convert(self.onnx(onnx_options)["path"])
        return self._converted[kind, onnx_options]

    def int8_data(self, calib_options):
        if calib_options not in self._int8:
            from scnet_deploy.calibration.budget import int8_data

            self.progress(Progress("calibration crops and hold-out"))
            self._int8[calib_options] = int8_data(calib_options, self.checkpoint.spec.scale)
        return self._int8[calib_options]

    def build(self, target: Target, workdir: Path) -> dict:
        """Build ``target`` into ``workdir`` (autotuned over forms where asked); returns its verified manifest fields,
        ``form`` included."""
        if target.precision in QUANTIZED:  # before anything is built: NaN weights would fail verification first
            self.checkpoint.require_finite("calibrate")
        options = self.options_for(target)
        if options.tune.optimize == "latency":
            from .autotune import TuneJob, build_fastest

            size = tuple(options.tune.size or options.sizes.opt)
            job = TuneJob(target.format, target.precision, options, self.checkpoint.spec,
                          lambda name, directory, limit, first: self.build_form(
                              target, DeployOptions.from_name(name), directory, limit, first),
                          self.progress, self.tuned_ms.get((target.format, "fp32", size)))
            fields, ms = build_fastest(job, workdir, self.scratch / f"{target.format}-{target.precision}")
            if ms is not None:
                self.tuned_ms[target.format, target.precision, size] = ms
        else:
            fields = self.build_form(target, options.onnx.deploy(), workdir)
        if target.precision == "int8" and "abandoned" not in fields:
            fields["int8_speed"] = self.int8_speed(target, workdir, fields).to_dict()
        return fields

    def int8_speed(self, target: Target, workdir: Path, fields: dict):
        """The INT8 engine just built against its backend's FP32 engine, at the size the autotuner times (``--opt-size``
        unless told): both autotuned medians of this session where both were timed, else the two engines in turns (the
        FP32 one built now, in the INT8 engine's form, where this session has none). Raises ``Int8NotFaster``."""
        from scnet_deploy.exporters.registry import backend_for_format

        from .int8_speed import check_faster

        options = self.options_for(target)
        size = tuple(options.tune.size or options.sizes.opt)
        runtime = backend_for_format(target.format).runtime(building=True)

        def fp32():
            tuned = self.tuned_ms.get((target.format, "fp32", size))
            if tuned is not None:
                return tuned, None
            directory = self.scratch / f"{target.format}-fp32-for-int8-speed"
            directory.mkdir(parents=True, exist_ok=True)
            form = DeployOptions.from_name(fields["form"]) if fields.get("form") else options.onnx.deploy()
            built = self.build_form(Target(target.format, "fp32", compute=target.compute), form, directory)
            return None, lambda: runtime.load(directory, {"precision": "fp32", **built})

        return check_faster(lambda f: runtime.load(workdir, {"precision": target.precision, **f}), fields, fp32, size,
                            self.checkpoint.spec.num_in_ch, target.format, options.keep_slower_int8,
                            self.tuned_ms.get((target.format, target.precision, size)))

    def build_form(self, target: Target, form: DeployOptions, workdir: Path, speed_limit=None,
                   first_try=None) -> dict:
        """Build ``target`` in one deploy ``form``, then verify it (``speed_limit``, ``first_try``: see
        ``BuildContext``); ``{"abandoned": why}`` where the speed limit stopped its INT8 budget loop."""
        from scnet_deploy.exporters.registry import backend_for_format

        backend = backend_for_format(target.format)
        module = backend.builder()
        fields = module.build(BuildContext(self.checkpoint, self.options_for(target, form), self, speed_limit,
                                           first_try), workdir)
        if "abandoned" in fields:  # nothing was written: nothing to verify
            return fields
        if "verification" not in fields:  # ONNX Runtime FP32 is the hub graph, verified when it was built
            fields["verification"] = self.verify(module, target.precision, workdir, fields)
        return {**fields, "form": form.name}

    def verify(self, module, precision: str, workdir: Path, fields: dict) -> dict:
        """Run the built engine against PyTorch FP32 (the backend's ``verification_runner``: the engine, or what
        stands in for it here); INT8 also on its budget record; raises VerificationError when out of tolerance."""
        from scnet_deploy.exporters.runner import verify_runner

        runner, note = module.verification_runner(workdir, fields, precision)
        int8 = fields.get("int8")
        if runner is None:
            if int8 is not None and "drift_db" not in int8:
                int8.update({"budget_db": self.options.budget_db, "gate": self.options.gate().record(),
                             "within_budget": None, "budget": f"not measured: {note}"})
            return {"skipped": note, "passed": None}
        spec = self.checkpoint.spec
        with runner:
            if int8 is not None and "drift_db" not in int8:  # weight-only INT8 calibrates nothing: measure it once
                int8.update(self._weight_only_budget(runner, self.int8_data(self.options.calib)))
            report = verify_runner(runner, self.reference, [], precision, spec.num_in_ch,
                                   inputs=self.verification_inputs(fields), int8=int8)
        if note:
            report["note"] = note
        return report

    def verification_inputs(self, fields: dict) -> list:
        """What an engine with these manifest ``fields`` is verified on: INT8 (an ``int8`` section), image crops of
        the hold-out (its ranges are those of images); else random inputs at the engine's min and opt sizes (or the
        ONNX verify shapes where it has no fixed range)."""
        from scnet_deploy.exporters.runner import random_inputs

        size_range = fields.get("size_range") or {}
        # an engine compiled for one size (larger inputs in exact tiles of it: Qualcomm's HTP)
        fixed = (tuple(size_range["min"]) if size_range.get("min") and size_range.get("opt") == size_range["min"]
                 and not size_range.get("max") else None)
        if fields.get("int8") is not None:
            # a larger crop too, run in exact tiles, where the size leaves something exact inside each tile
            tiles = fixed is not None and min(fixed) > 2 * self.checkpoint.spec.receptive_radius
            return self.int8_data(self.options.calib).verification_inputs(fixed, tiles)
        shapes = ([(1, *size_range["min"]), (1, *size_range["opt"])] if size_range.get("min") else
                  self.options.onnx.verify_shapes)
        return random_inputs(shapes, self.checkpoint.spec.num_in_ch)

    def _weight_only_budget(self, runner, data) -> dict:
        from scnet_deploy.calibration.budget import check_within_budget, int8_section
        from scnet_deploy.exporters.torch_runner import TorchRunner

        gate = self.options.gate()
        baseline = data.baseline(TorchRunner(self.checkpoint.model).infer, gate.visible_levels)  # no FP32 engine here
        result = check_within_budget(runner, lambda r: baseline.measure(r.infer), gate)
        return int8_section(None, data.options, baseline, result, {"method": "weights only"}).to_dict()
