"""The main job, end to end: one checkpoint -> every engine this machine can build, in every precision that makes
sense -> validated against ground truth -> timed -> a report with a recommendation (the fastest engine within the
drift budget).

Defaults need nothing downloaded: the reference checkpoint shipped in the package, and scikit-image's sample
photographs for calibration and for validation (disjoint sets).
"""

import time
from pathlib import Path

from .errors import ScnetDeployError, require_export_stack
from .progress import BUILT, FAILED, SKIPPED, Progress, reporter
from .model.forms import DeployOptions
from .build_options import PipelineOptions  # noqa: F401 (the verb's options)
from .gate import AccuracyGate
from .session import Target

REFERENCE = Path(__file__).parent / "weights" / "scnet_t_x4_reference.safetensors"
# its quantization-aware fine-tuning (scnet-deploy qat; weights/MODEL_CARD.md): the pipeline's INT8 engines start here
REFERENCE_QAT = REFERENCE.with_name("scnet_t_x4_reference_qat.safetensors")


def reference_checkpoint() -> Path:
    if not REFERENCE.exists():
        raise ScnetDeployError(f"the reference checkpoint is missing from this installation ({REFERENCE}); pass a "
                               "checkpoint: scnet-deploy pipeline CKPT.")
    return REFERENCE


# The pipeline's default validation: content types, none of it used by calibration or the INT8 hold-out
# (scikit-image images outside both; generated content at seeds >= 200).
VALIDATION_CONTENT = {
    "photo": [("skimage", "motorcycle"), ("skimage", "camera"), ("skimage", "coins")],
    "line-art": [("line-art", 200), ("line-art", 201), ("skimage", "logo")],
    "text": [("text", 200), ("skimage", "page")],
    "flat-colours": [("flat-colours", 200), ("skimage", "colorwheel")],
    "textures": [("skimage", "brick"), ("skimage", "grass")],
}


def _default_datasets(root: Path) -> list[Path]:
    """One DIR/HR folder per content type of ``VALIDATION_CONTENT``."""
    from PIL import Image

    from scnet_deploy.calibration.content import GENERATORS, skimage_image

    folders = []
    for content, items in VALIDATION_CONTENT.items():
        folder = root / "validation" / content / "HR"
        folder.mkdir(parents=True, exist_ok=True)
        for source, key in items:
            image = skimage_image(key) if source == "skimage" else GENERATORS[source](key)
            Image.fromarray(image).save(folder / f"{source}_{key}.png")
        folders.append(folder.parent)
    return folders


def plan(options: PipelineOptions) -> list[tuple[str, Target, str | None]]:
    """(label, target, reason it is skipped or None) for every engine the pipeline considers: each backend's jobs
    (its pipeline precisions on each of its compute units, ``Backend.pipeline_jobs``). A backend that shows forms
    first builds its FP32 engine in the official slice form, to show what the rewrite choice is worth: that job
    keeps its form."""
    from scnet_deploy.exporters.registry import backends

    jobs = []
    for b in backends():
        if b.shows_forms:
            jobs.append((f"{b.format}-slice-fp32", Target(b.format, form=DeployOptions("slice"), optimize="none")))
        optimize = "none" if b.pipeline_on_request else None  # an emulator's speed is not worth tuning for
        jobs += [(label, Target(b.format, precision, compute=compute, optimize=optimize))
                 for label, precision, compute in b.pipeline_jobs()]
    return [(label, target, _why_not(target, options)) for label, target in jobs]


def _why_not(target: Target, options: PipelineOptions) -> str | None:
    """Why the pipeline does not build ``target`` (None: it does)."""
    from scnet_deploy.exporters.registry import backend_for_format

    backend = backend_for_format(target.format)
    if options.formats is not None and target.format not in options.formats:
        return "not asked for (--formats)"
    if backend.pipeline_on_request and options.formats is None:
        return (f"built only when asked (--formats ...,{target.format}): its engines run on an emulator here, "
                "seconds a frame")
    asked = options.compute or (backend.default_compute,)
    if target.compute is not None and target.compute not in asked:
        return f"{target.compute} not asked for (--compute)"
    return backend.check(target.precision, target.compute) or backend.pipeline_skip(target.precision, target.compute)


def check_pipeline(options: PipelineOptions) -> None:
    """The options' values, before any work: the accuracy gate's, formats and compute units the registry knows."""
    from scnet_deploy.exporters.registry import backends, format_names

    options.gate().check()
    options.tune.check()

    unknown = [f for f in options.formats or () if f not in format_names()]
    if unknown or options.formats == ():
        raise ScnetDeployError(f"--formats {','.join(options.formats or ())!r}: choose among "
                               f"{', '.join(format_names())}, comma-separated.")
    # --compute chooses among the units of the backends that have several (the others build for their one unit)
    several = [b for b in backends() if len(b.compute_units) > 1]
    units = list(dict.fromkeys(u for b in several for u in b.compute_units))
    if options.compute is not None and (not options.compute or any(c not in units for c in options.compute)):
        raise ScnetDeployError(f"--compute {','.join(options.compute)!r}: the pipeline builds for "
                               f"{' or '.join(units)} with {', '.join(b.format for b in several)} (the others on "
                               f"their own unit); write e.g. --compute {','.join(units)}.")


def within_budget(validation: dict, gate: AccuracyGate) -> dict[str, float]:
    """{path: drift} of the engines the accuracy gate passes on every content type it judged (validate with a
    budget records the verdict, ``within_budget``); a result without verdicts is judged on its worst drift alone."""
    return {m["path"]: m["drift_db"] for m in validation["models"]
            if m.get("drift_db") is not None and m.get("kind") != "checkpoint"
            and m.get("within_budget", gate.admits(m["drift_db"]))}


def gate_sentence(validation: dict) -> str:
    """Which content types the gate judged, and which it only showed (``--content``)."""
    judged = validation.get("content") or []
    shown = [d["name"] for d in validation.get("datasets", []) if not d.get("gated", True)]
    return (f"\n\nGated on {', '.join(judged)}" + (f"; shown, not gated: {', '.join(shown)}" if shown else "") + "."
            if judged else "")


def refusals(validation: dict, bench: dict, best: dict | None) -> list[str]:
    """One sentence per engine faster than the recommendation (every engine, without one) that was not recommended:
    which content type, which measure, by how much."""
    rows = {m["path"]: m for m in validation["models"]}
    lines = []
    for m in bench["models"]:
        if not m["shapes"]:  # run on an emulator: not timed
            continue
        last = m["shapes"][-1]
        row = rows.get(m["path"])
        if m.get("baseline") or row is None or row.get("within_budget", True):
            continue
        if best is None or last["median_ms"] < best["median_ms"]:
            why = row.get("gate_failure") or f"PSNR-Y drift {row['drift_db']:+.3f} dB on {row.get('worst_dataset')}"
            lines.append(f"- `{m['name']}` ({m['precision']}, {last['median_ms']:.1f} ms) is faster and not "
                         f"recommended: {why}.")
    return lines


def int8_outrun(validation: dict, bench: dict, best: dict | None) -> list[str]:
    """One sentence per INT8 engine within the accuracy gate that the recommendation (another engine) outruns: INT8 is
    what a user asks the pipeline for first, so it says why one that passes is not the answer here."""
    rows = {m["path"]: m for m in validation["models"]}
    lines = []
    for m in bench["models"]:
        row = rows.get(m["path"])
        if (best is None or m["precision"] != "int8" or not m["shapes"] or m["path"] == best["path"] or row is None
                or not row.get("within_budget", True)):
            continue
        lines.append(f"- `{m['name']}` (int8, {m['shapes'][-1]['median_ms']:.1f} ms) is within the accuracy gate and "
                     f"not recommended: `{best['name']}` ({best['precision']}) is faster on this CPU "
                     f"({best['median_ms']:.1f} ms); where the CPU computes int8 faster than {best['precision']}, "
                     "rerun the pipeline there (or bench --on it).")
    return lines


def recommend(validation: dict, bench: dict, gate: AccuracyGate, goal: str = "latency") -> dict | None:
    """The runnable engine (at the largest shape) whose drift is within the budget that is fastest for ``goal``:
    the lowest median latency, or the most images/s with requests in flight (engines measured so)."""
    drift = within_budget(validation, gate)
    visible = {m["path"]: m.get("visible_share") for m in validation["models"]}
    best, best_score = None, None
    for m in bench["models"]:
        if not m["shapes"]:  # run on an emulator: not timed, never recommended for speed
            continue
        last = m["shapes"][-1]
        if m.get("baseline") or m["path"] not in drift or (goal == "throughput" and "throughput" not in last):
            continue
        score = last["median_ms"] if goal == "latency" else -last["throughput"]["images_per_s"]
        if best is None or score < best_score:
            best_score = score
            best = {"name": m["name"], "path": m["path"], "precision": m["precision"], "median_ms": last["median_ms"],
                    "shape": last["shape"], "drift_db": drift[m["path"]], "visible_share": visible.get(m["path"]),
                    "speedup_vs_official_eager": last.get("speedup_vs_official_eager")}
            if "throughput" in last:
                best.update(images_per_s=last["throughput"]["images_per_s"], inflight=last["throughput"]["inflight"])
    return best


def autotune_summary(manifest: dict) -> dict:
    """The chosen form (and tile or split) of one engine, with every candidate's median ms where it was autotuned and
    the whole image's and each way in pieces' ("256": tiles, "split 64": split execution)."""
    tuned = manifest.get("autotune") or {}
    cands = tuned.get("candidates", {})
    return {"form": manifest.get("form"), "tile": tuned.get("tile"), "split": tuned.get("split"),
            "pieces_ms": {name: t.get("median_ms") for name, t in (tuned.get("tiles") or {}).items()},
            "target_lr_size": tuned.get("target_lr_size"),
            "candidates_ms": {name: c.get("median_ms") for name, c in cands.items()},
            "abandoned": {name: c["abandoned"] for name, c in cands.items() if "abandoned" in c},
            "interleaved_ms": {name: c["interleaved_ms"] for name, c in cands.items() if "interleaved_ms" in c},
            "screened": bool(tuned.get("screening_runs"))}  # else every candidate was timed in turn, once


def int8_lines(records: dict) -> list[str]:
    """Each INT8 engine's budget loop, as its manifest records it (the same record for every backend): the accuracy
    gate on the export's hold-out, judged as validation judges it."""
    if not records:
        return []
    lines = ["INT8 on the export's hold-out (photos, line art, text, flat colours, textures; the accuracy gate, the "
             "worst content deciding, as in validation):", ""]
    for label, i in records.items():
        w = i["worst_image"]
        lines.append(f"- `{label}`: mean {i['drift_db']:+.3f} dB, worst image {w['drift_db']:+.3f} dB ({w['content']}: "
                     f"{w['name']}), {len(i['float_layers'])} layer(s) "
                     f"{i.get('quantization', {}).get('refinement', 'kept in float')} after {len(i['tries'])} "
                     f"tr{'y' if len(i['tries']) == 1 else 'ies'}" + (f"; measured on the {i['measured_on']}"
                                                                       if i.get("measured_on") else ""))
        if i.get("gate_by_content") is not None:
            failed = [v["reason"] for v in i["gate_by_content"].values() if not v["passed"]]
            verdict = "fails: " + "; ".join(failed) if failed else "passes"
            lines.append(f"  - the accuracy gate on this hold-out: {verdict}")
    return lines + [""]


def form_lines(forms: dict) -> list[str]:
    lines = ["Graph form per engine (autotuned: every candidate's median ms at the target size, on this machine; "
             "two candidates are timed in turn, more are screened first):", ""]
    for label, f in forms.items():
        line = f"- `{label}`: {f['form']}" + (f", tiles of {f['tile']} LR px" if f.get("tile") else "") + (
            f", split: the tail on tiles of {f['split']} LR px" if f.get("split") else "")
        if f["candidates_ms"]:
            line += (" (tried: " if f.get("screened", True) else " (tried in turn: ") + ", ".join(
                f"{n} {ms:.1f}" if ms is not None else f"{n} over budget, stopped" if n in f.get("abandoned", {})
                else f"{n} not timed" for n, ms in f["candidates_ms"].items())
            if f["interleaved_ms"] and f.get("screened", True):
                line += "; the two fastest again, interleaved: " + ", ".join(
                    f"{n} {ms:.1f}" for n, ms in f["interleaved_ms"].items())
            line += ")"
        pieces = {n: ms for n, ms in (f.get("pieces_ms") or {}).items() if n != "none" and ms is not None}
        if pieces:  # the whole image against tiles and split execution, screened (a faster one timed in turn)
            line += f"; whole image {f['pieces_ms'].get('none', 0):.1f} ms vs " + ", ".join(
                f"{'tiles of ' + n if not n.startswith('split') else n} {ms:.1f}" for n, ms in pieces.items())
        lines.append(line)
    return lines


def pipeline(checkpoint: str | Path | None, options: PipelineOptions, progress=None) -> dict:
    """Export ``checkpoint`` (default: the shipped reference) to every engine this machine can build, validate,
    time, report and recommend; returns the summary written to ``summary.json``."""
    from .manifest import write_results_json
    from .model.checkpoint import load_checkpoint
    from .report import report

    require_export_stack("pipeline (it exports)")
    check_pipeline(options)
    t_start, say = time.perf_counter(), reporter(progress)
    ckpt_path = Path(checkpoint) if checkpoint else reference_checkpoint()
    ckpt = load_checkpoint(ckpt_path)
    _require_bench_fits(ckpt, options)
    out = Path(options.output)
    (out / "engines").mkdir(parents=True, exist_ok=True)
    datasets = _default_datasets(out) if options.dataset is None else (
        [Path(options.dataset)] if isinstance(options.dataset, (str, Path)) else list(options.dataset))
    qat = quantization_aware(ckpt, ckpt_path, options)
    engines = _build_engines(ckpt, options, out / "engines", say, qat)
    validation, timing = _measure(ckpt_path, ckpt.spec.scale, engines, datasets, options, out, say)
    crops = _measure_crops(ckpt_path, ckpt.spec.scale, engines["crops"], datasets, options, out, say)
    summary = _summary(ckpt_path, ckpt, datasets, engines, validation, timing, options)
    summary["no_faster_than_fp32"] = no_faster_than_fp32(timing, say)
    summary["under_load"] = under_load(timing)
    summary["on_crops"] = crops and {"engines": {k: str(v) for k, v in engines["crops"].items()},
                                     "models": crops["models"]}
    summary["int8_from"] = {"checkpoint": str(qat.path), "quantization_aware": qat.quant.info} if qat else \
        {"calibrated": True}
    summary["seconds"] = time.perf_counter() - t_start
    notes = [recommendation_text(summary, validation, options), ""]
    notes += [f"- skipped `{k}`: {v}" for k, v in engines["skipped"].items()]
    notes += [f"- failed `{k}`: {v}" for k, v in engines["failed"].items()]
    notes += [f"- `{k}`: built on request, validated on LR centre crops of the validation images at its one size "
              "(below, 'validation-crops'), not timed: it runs on an emulator here" for k in engines["crops"]]
    if qat is not None:
        notes.append(f"- INT8 engines are built from `{qat.path.name}`, the quantization-aware fine-tuning of this "
                     f"checkpoint ({qat.quant.info.get('steps')} steps of `scnet-deploy qat`): its ranges, no "
                     "calibration")
    notes += ["", *int8_lines(engines["int8"]), *form_lines(engines["forms"]), "",
              f"Pipeline time: {summary['seconds']:.0f} s.", ""]
    summary["report"] = str(report([validation, timing, *([crops] if crops else [])], out,
                                   title="scnet-deploy pipeline report", sections=notes))
    write_results_json(summary, out / "summary.json")
    return summary


def quantization_aware(ckpt, ckpt_path: Path, options: PipelineOptions):
    """The quantization-aware checkpoint the INT8 engines are built from (None: they are calibrated): ``--qat``, or
    the one shipped beside the reference when the checkpoint is the reference. It must be fine-tuned from
    ``ckpt``."""
    from .model.checkpoint import load_checkpoint

    path = options.qat or (REFERENCE_QAT if ckpt_path.resolve() == REFERENCE.resolve() and REFERENCE_QAT.exists()
                           else None)
    if path is None:
        return None
    qat = load_checkpoint(path)
    if qat.quant is None:
        raise ScnetDeployError(f"--qat '{path}' carries no quantizer ranges; pass a checkpoint written by "
                               "scnet-deploy qat.")
    teacher = qat.quant.info.get("teacher_sha256")
    def arch(c) -> dict:
        return {k: v for k, v in c.spec.to_dict().items() if k != "scale_source"}

    if teacher != ckpt.sha256 or arch(qat) != arch(ckpt):
        raise ScnetDeployError(f"--qat '{path}' was fine-tuned from another checkpoint (sha256 {str(teacher)[:12]}..., "
                               f"not {ckpt.sha256[:12]}...); pass the one scnet-deploy qat made from '{ckpt_path}'.")
    return qat


def _require_bench_fits(ckpt, options: PipelineOptions) -> None:
    """Refuse a bench shape that cannot fit now, not after minutes of building."""
    from .memory import limit_bytes, require_fits

    limit = limit_bytes(options.max_memory_mb)
    for h, w in options.shapes:
        require_fits(ckpt.spec.to_dict(), "pytorch", "the PyTorch baseline of the benchmark", h, w, limit)


def _build_engines(ckpt, options: PipelineOptions, engines: Path, say, qat=None) -> dict:
    """Every engine of the plan, built in one session (INT8 ones in a second, from the quantization-aware checkpoint
    ``qat`` where there is one, with the first session's FP32 times to beat): {"built": {label: directory},
    "skipped", "failed": {label: why}, "forms": {label: autotune summary}, "int8": {label: its int8 section}}."""
    import contextlib
    from dataclasses import replace

    from .export import ExportOptions, build_session, write_artifact

    # What every engine shares; each target adds its format, precision and (for the slice job) its form. A backend
    # built on request takes its one size (``Backend.pipeline_on_request``).
    from scnet_deploy.exporters.registry import backend_for_format, backends

    fixed = {b.name: replace(b.build_options(), size=(b.pipeline_on_request,) * 2) for b in backends()
             if b.pipeline_on_request and b.build_options() is not None}
    shared = ExportOptions(output=engines, calib=options.calib, budget_db=options.budget_db,
                           max_visible=options.max_visible, visible_levels=options.visible_levels,
                           tune=replace(options.tune, size=max(options.shapes)), backends=fixed)
    found = {"built": {}, "skipped": {}, "failed": {}, "forms": {}, "int8": {}, "crops": {}}
    with contextlib.ExitStack() as stack:
        session = stack.enter_context(build_session(ckpt, shared, engines))  # its progress is set per engine below
        int8_session = None
        for label, target, reason in plan(options):
            if reason:
                found["skipped"][label] = reason
                say(Progress(f"{label}: {reason}", SKIPPED))
                continue
            say(Progress(f"export {label}"))
            building = session
            if qat is not None and target.precision == "int8":
                if int8_session is None:
                    int8_session = stack.enter_context(build_session(qat, shared, engines / ".quantization-aware"))
                int8_session.tuned_ms.update(session.tuned_ms)  # the FP32 engines to beat: the same architecture
                building = int8_session
            building.progress = lambda event, label=label: say(event.prefixed(label))
            try:
                result = write_artifact(building, [target], engines / label)
            except ScnetDeployError as exc:
                found["failed"][label] = str(exc)
                say(Progress(f"{label}: {exc}", FAILED))
                continue
            verification = result.manifest["verification"]
            found["forms"][label] = autotune_summary(result.manifest)
            if result.manifest.get("int8", {}).get("worst_image"):
                found["int8"][label] = result.manifest["int8"]
            if verification.get("passed") is None:  # built, cannot run here (Core ML off macOS, TensorRT w/o GPU)
                found["skipped"][label] = f"built, not run here: {verification.get('skipped') or verification.get('note')}"
                say(Progress(f"{label} ({found['skipped'][label]})", BUILT))
            elif backend_for_format(target.format).pipeline_on_request:
                found["crops"][label] = result.directory  # validated on crops, not timed (``_measure_crops``)
                say(Progress(label, BUILT))
            else:
                found["built"][label] = result.directory
                say(Progress(label, BUILT))
    return found


def _measure(ckpt_path: Path, scale: int, engines: dict, datasets: list, options: PipelineOptions, out: Path, say):
    """Validation of the reference and every runnable engine, then their timing: one PyTorch baseline, the official
    eager model every speed-up is against (bench alone also times the deploy form in eager: it runs no faster, README's
    bench table shows, and costs ~20 s here), timed 3 times: at ~3 s a run it is the slowest model by far, and it is
    only the denominator of the speed-ups. Every model's first inference is untimed (reported apart), the warm-up.
    Throughput (several requests in flight) too, for the engines within the gate (the candidates of a
    recommendation) at the largest shape: the report recommends per goal."""
    from .bench import BenchOptions, bench
    from .validate import ValidateOptions, validate

    runnable = list(engines["built"].values())
    validation = validate([ckpt_path, *runnable], ValidateOptions(
        tuple(datasets), scale, bicubic=True, content=options.calib.content, budget_db=options.budget_db,
        max_visible=options.max_visible, visible_levels=options.visible_levels, visuals=out,
        max_memory_mb=options.max_memory_mb), progress=say)
    within = within_budget(validation, options.gate())
    candidates = tuple(p for p in map(str, runnable) if p in within)
    timing = bench(runnable, BenchOptions(shapes=options.shapes, runs=options.runs, warmup=0, reference=ckpt_path,
                                          baselines=True, baseline_forms=("official",),
                                          baseline_runs=min(3, options.runs), max_memory_mb=options.max_memory_mb,
                                          mode="throughput", throughput_shapes=(options.shapes[-1],),
                                          throughput_models=candidates, throughput_rounds=2),
                   progress=lambda event: say(event.prefixed("bench")))
    return validation, timing


def _measure_crops(ckpt_path: Path, scale: int, engines: dict, datasets: list, options: PipelineOptions, out: Path,
                   say) -> dict | None:
    """The engines built on request (``Backend.pipeline_on_request``: an emulator here), validated with the reference
    on centre crops of each validation image at their one LR size (one run an image), on the same gate; None
    without such engines."""
    from .manifest import read_manifest
    from .validate import ValidateOptions, validate

    if not engines:
        return None
    side = max(read_manifest(Path(d))["size_range"]["min"][0] for d in engines.values())
    validation = validate([ckpt_path, *engines.values()], ValidateOptions(
        tuple(_crop_datasets(datasets, side * scale, scale, out / "validation-crops")), scale, bicubic=True,
        content=options.calib.content, budget_db=options.budget_db, max_visible=options.max_visible,
        visible_levels=options.visible_levels, max_memory_mb=options.max_memory_mb),
        progress=lambda event: say(event.prefixed("on crops")))
    return validation


def _crop_datasets(datasets: list, side: int, scale: int, root: Path) -> list[Path]:
    """Each dataset's HR images cut to their centre ``side`` x ``side`` (a multiple of ``scale``), as DIR/HR folders
    of the same names; images smaller than that are left out."""
    from PIL import Image

    from .imaging.images import centre_crop, list_images, mod_crop, read_rgb_u8

    folders = []
    for dataset in map(Path, datasets):
        hr = dataset / "HR" if (dataset / "HR").is_dir() else dataset
        target = root / dataset.name / "HR"
        target.mkdir(parents=True, exist_ok=True)
        for path in list_images(hr):
            image = mod_crop(read_rgb_u8(path), scale)
            if min(image.shape[:2]) >= side:
                Image.fromarray(centre_crop(image, side, side, scale)).save(target / f"{path.stem}.png")
        folders.append(target.parent)
    return folders


def _summary(ckpt_path: Path, ckpt, datasets: list, engines: dict, validation: dict, timing: dict,
             options: PipelineOptions) -> dict:
    """``summary.json``: what was built, skipped and failed, the recommendations and what they rest on."""
    from .doctor import machine

    gate = options.gate()
    best = recommend(validation, timing, gate)
    int8 = {k: {f: v.get(f) for f in ("budget_db", "drift_db", "worst_image", "by_content", "float_layers", "tries",
                                     "gate_by_content")} for k, v in engines["int8"].items()}
    return {"int8": int8, "checkpoint": str(ckpt_path), "arch": ckpt.spec.to_dict(),
            "datasets": [str(d) for d in datasets], "budget_db": options.budget_db, "gate": gate.record(),
            "built": {k: str(v) for k, v in engines["built"].items()}, "skipped": engines["skipped"],
            "failed": engines["failed"], "forms": engines["forms"], "recommendation": best,
            "recommendation_throughput": recommend(validation, timing, gate, "throughput"),
            "not_recommended": refusals(validation, timing, best), "int8_outrun": int8_outrun(validation, timing, best),
            "content": validation.get("content"), "machine": machine(), "shapes": [list(s) for s in options.shapes]}


NO_FASTER = 0.95  # a reduced precision whose median is over this share of its backend's FP32 engine's: no faster


def no_faster_than_fp32(timing: dict, say=None) -> list[str]:
    """One sentence per reduced-precision engine no faster than its backend's FP32 engine at the largest size (bf16
    on a CPU that computes it no faster), with the stage that makes it so: both engines profiled here, the stage
    that loses most named."""
    from .profile import grouped, profile, rooflines
    from .runtime import open_model

    timed = [m for m in timing["models"] if not m.get("baseline") and m["shapes"]]
    sentences, roof = [], None

    def stages(path: str, shape) -> dict[str, float]:  # profiled alone: two runs after a warm-up, no timing again
        with open_model(Path(path)) as runner:
            found = profile(runner, shape, 2, roof)
        return {r["stage"]: r["ms"] for r in grouped(found.get("stages", []))}

    for slow in timed:
        fp32 = next((m for m in timed if m["backend"] == slow["backend"] and m["precision"] == "fp32"
                     and Path(m["path"]).name.endswith("-fp32") and "-slice-" not in Path(m["path"]).name), None)
        if fp32 is None or slow is fp32 or slow["precision"] == "fp32":
            continue
        a, b = fp32["shapes"][-1], slow["shapes"][-1]
        if b["median_ms"] < NO_FASTER * a["median_ms"]:
            continue
        shape = tuple(b["shape"])
        if say is not None:
            say(Progress(f"profiling {Path(slow['path']).name} beside {Path(fp32['path']).name}: no faster"))
        roof = roof or rooflines(0.2)
        base, other = stages(fp32["path"], shape), stages(slow["path"], shape)
        worst = max(other, key=lambda k: other[k] - base.get(k, 0.0), default=None)
        why = (f": its {worst} takes {other[worst]:.1f} ms against {base.get(worst, 0.0):.1f} ms in "
               f"{Path(fp32['path']).name}, the stage where it loses most (`bench --profile`)" if worst else "")
        sentences.append(f"- `{Path(slow['path']).name}` ({slow['precision']}) is no faster than "
                         f"`{Path(fp32['path']).name}` on this machine ({b['median_ms']:.1f} against "
                         f"{a['median_ms']:.1f} ms at {shape[0]}x{shape[1]}){why}.")
    return sentences


def under_load(timing: dict) -> list[str]:
    """One sentence per engine whose timing was taken while other processes kept the CPUs busy."""
    return [f"- timing of `{Path(m['path']).name}` at {s['shape'][0]}x{s['shape'][1]} {s['load']['flag']}: its "
            "milliseconds are not this machine's; run the pipeline again on a quiet machine"
            for m in timing["models"] for s in m["shapes"][-1:] if (s.get("load") or {}).get("flag")]


def recommendation_text(summary: dict, validation: dict, options: PipelineOptions) -> str:
    """The report's recommendation: the fastest engine within the accuracy gate (and for throughput), the content it
    was gated on, the faster engines it was not, and the machine facts it rests on."""
    gate, best = options.gate(), summary["recommendation"]
    if best:
        rec = (f"**Recommendation:** `{best['name']}` ({best['precision']}): {best['median_ms']:.1f} ms at LR "
               f"{best['shape'][0]}x{best['shape'][1]}, drift {best['drift_db']:+.3f} dB on its worst content"
               + (f", {100 * best['visible_share']:.2f}% of an image's pixels visibly changed at most"
                  if best.get("visible_share") is not None else "")
               + f": within the accuracy gate ({gate.describe()})"
               + (f", {best['speedup_vs_official_eager']:.1f}x official eager"
                  if best.get("speedup_vs_official_eager") else ""))
    else:
        rec = f"**Recommendation:** no engine is within the accuracy gate ({gate.describe()})."
    rec += gate_sentence(validation) + machine_sentence(summary["machine"])
    for line in [*summary.get("no_faster_than_fp32", []), *summary.get("under_load", [])]:
        rec += "\n\n" + line
    if summary["not_recommended"] or summary.get("int8_outrun"):
        rec += "\n\n" + "\n".join([*summary["not_recommended"], *summary.get("int8_outrun", [])])
    t = summary["recommendation_throughput"]
    if t:
        rec += (f"\n\n**Recommendation for throughput** (several images in flight): `{t['name']}` ({t['precision']}): "
                f"{t['images_per_s']:.2f} images/s at LR {t['shape'][0]}x{t['shape'][1]} with {t['inflight']} in "
                f"flight, drift {t['drift_db']:+.3f} dB")
    return rec


# The CPU features a reduced precision's speed rests on: a precision is fast only where the CPU computes in it.
SPEED_FEATURES = ("avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx512_fp16", "amx_fp16", "asimd")


def machine_sentence(m: dict) -> str:
    """Which machine facts the recommendation rests on: the ranking of precisions is this CPU's."""
    cpu = m["cpu"]
    has = [f for f in SPEED_FEATURES if cpu["features"].get(f)]
    lacks = [f for f in SPEED_FEATURES if f not in has]
    return (f"\n\nMeasured on {cpu['model']} ({cpu['cores']} cores; with {', '.join(has) or 'none of ours'}; "
            f"without {', '.join(lacks) or 'none'}): which precision is fastest depends on the CPU (bf16 pays only "
            "with AVX512-BF16 or AMX, INT8 with VNNI or AMX), so rerun the pipeline on the machine you deploy to "
            "(or time its engines there: bench --on).")
