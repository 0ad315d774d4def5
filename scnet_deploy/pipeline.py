"""The main job, end to end: one checkpoint -> every engine this machine can build, in every precision that makes
sense -> validated against ground truth -> timed -> a report with a recommendation (the fastest engine within the
drift budget).

Defaults need nothing downloaded: the reference checkpoint shipped in the package, and scikit-image's sample
photographs for calibration and for validation (disjoint sets).
"""

import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ScnetDeployError, require_export_stack
from .progress import BUILT, FAILED, SKIPPED, Progress, reporter
from .model.forms import DeployOptions
from .gate import DEFAULT_DRIFT_DB, VISIBLE_SHARE, AccuracyGate
from .session import Target

REFERENCE = Path(__file__).parent / "weights" / "scnet_t_x4_reference.safetensors"


@dataclass(frozen=True)
class PipelineOptions:
    output: Path
    # validation images (DIR/HR ... or plain folders, several allowed); default: photos, line art, text, flat colours
    # and textures (VALIDATION_CONTENT), none of them used by calibration or the INT8 hold-out
    dataset: Path | tuple[Path, ...] | None = None
    calib_data: Path | None = None
    calib_count: int = 16
    budget_db: float = DEFAULT_DRIFT_DB
    shapes: tuple[tuple[int, int], ...] = ((90, 160), (180, 320))
    runs: int = 5
    formats: tuple[str, ...] = ("onnx", "openvino", "coreml", "tensorrt", "ncnn")
    optimize: str = "latency"  # each engine in the form measured fastest here, at the largest of ``shapes``
    max_memory_mb: int | None = None  # validation tiles and bench refuses beyond it; None: the memory model's default
    content: tuple[str, ...] | None = None  # the content types the accuracy gate judges; None: every one
    # The compute units engines are built for where a backend has several (ncnn: cpu, vulkan); Vulkan when asked
    compute: tuple[str, ...] = ("cpu",)


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
    """(label, target, reason it is skipped or None) for every engine the pipeline considers. The slice-form job is
    there to show what the rewrite choice is worth: it keeps its form."""
    jobs = [("onnx-slice-fp32", Target("onnx", form=DeployOptions("slice"), optimize="none")),
            ("onnx-fp32", Target("onnx")), ("onnx-int8", Target("onnx", "int8")),
            ("openvino-fp32", Target("openvino")), ("openvino-bf16", Target("openvino", "bf16")),
            ("openvino-fp16", Target("openvino", "fp16")), ("openvino-int8", Target("openvino", "int8")),
            ("coreml-fp16", Target("coreml", "fp16")),
            ("tensorrt-fp16", Target("tensorrt", "fp16")), ("tensorrt-int8", Target("tensorrt", "int8")),
            ("ncnn-fp32", Target("ncnn", compute="cpu")), ("ncnn-fp16", Target("ncnn", "fp16", compute="cpu")),
            ("ncnn-vulkan-fp32", Target("ncnn", compute="vulkan")),
            ("ncnn-vulkan-fp16", Target("ncnn", "fp16", compute="vulkan"))]
    return [(label, target, _why_not(target, options)) for label, target in jobs]


def _why_not(target: Target, options: PipelineOptions) -> str | None:
    """Why the pipeline does not build ``target`` (None: it does)."""
    from scnet_deploy.exporters.registry import backend_for_format

    if target.format not in options.formats:
        return "not asked for (--formats)"
    if target.compute is not None and target.compute not in options.compute:
        return f"{target.compute} not asked for (--compute)"
    reason = backend_for_format(target.format).check(target.precision, target.compute)
    if reason is None and target.format == "ncnn" and target.compute == "cpu" and target.precision == "fp16":
        from scnet_deploy.exporters.ncnn.runtime import fp16_arithmetic_on_cpu

        if not fp16_arithmetic_on_cpu():  # built, it would be the fp32 engine again: not worth the main job's time
            reason = ("ncnn has no fp16 arithmetic on this CPU: its fp16 engine would be the fp32 one with rounded "
                      "weights")
    return reason


def within_budget(validation: dict, budget_db: float) -> dict[str, float]:
    """{path: drift} of the engines the accuracy gate passes on every content type it judged (validate with a
    budget records the verdict, ``within_budget``); a result without verdicts is judged on its worst drift alone."""
    gate = AccuracyGate(budget_db)
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
        last = m["shapes"][-1]
        row = rows.get(m["path"])
        if m.get("baseline") or row is None or row.get("within_budget", True):
            continue
        if best is None or last["median_ms"] < best["median_ms"]:
            why = row.get("gate_failure") or f"PSNR-Y drift {row['drift_db']:+.3f} dB on {row.get('worst_dataset')}"
            lines.append(f"- `{m['name']}` ({m['precision']}, {last['median_ms']:.1f} ms) is faster and not "
                         f"recommended: {why}.")
    return lines


def recommend(validation: dict, bench: dict, budget_db: float, goal: str = "latency") -> dict | None:
    """The runnable engine (at the largest shape) whose drift is within the budget that is fastest for ``goal``:
    the lowest median latency, or the most images/s with requests in flight (engines measured so)."""
    drift = within_budget(validation, budget_db)
    visible = {m["path"]: m.get("visible_share") for m in validation["models"]}
    best, best_score = None, None
    for m in bench["models"]:
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
                     f"{w['name']}), {len(i['float_layers'])} layer(s) kept in float after {len(i['tries'])} "
                     f"tr{'y' if len(i['tries']) == 1 else 'ies'}")
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
    from scnet_deploy.calibration.data import CalibOptions

    from .autotune import TuneOptions
    from .bench import BenchOptions, bench
    from .model.checkpoint import load_checkpoint
    from .export import ExportOptions, build_session, write_artifact
    from .manifest import write_json_atomic
    from .memory import limit_bytes, require_fits
    from .report import report
    from .validate import ValidateOptions, validate

    require_export_stack("pipeline (it exports)")
    unknown = [c for c in options.compute if c not in ("cpu", "vulkan")]
    if unknown or not options.compute:
        raise ScnetDeployError(f"--compute {','.join(options.compute)!r}: the pipeline builds for cpu and, with ncnn, "
                               "vulkan; write e.g. --compute cpu,vulkan.")
    t_start = time.perf_counter()
    say = reporter(progress)
    ckpt_path = Path(checkpoint) if checkpoint else reference_checkpoint()
    ckpt = load_checkpoint(ckpt_path)
    scale = ckpt.spec.scale
    limit = limit_bytes(options.max_memory_mb)
    for h, w in options.shapes:  # refuse a bench shape that cannot fit now, not after minutes of building
        require_fits(ckpt.spec.to_dict(), "pytorch", "the PyTorch baseline of the benchmark", h, w, limit)
    out = Path(options.output)
    engines = out / "engines"
    engines.mkdir(parents=True, exist_ok=True)
    if options.dataset is None:
        datasets = _default_datasets(out)
    else:
        datasets = [Path(options.dataset)] if isinstance(options.dataset, (str, Path)) else list(options.dataset)
    # What every engine shares; each target adds its format, precision and (for the slice job) its form.
    calib = CalibOptions(options.calib_data, count=options.calib_count, content=options.content)
    shared = ExportOptions(output=engines, calib=calib,
                           budget_db=options.budget_db,
                           tune=TuneOptions(options.optimize, size=max(options.shapes), runs=options.runs))
    built, skipped, failed, forms, int8 = {}, {}, {}, {}, {}
    with build_session(ckpt, shared, engines) as session:  # its progress is set per engine below
        for label, target, reason in plan(options):
            if reason:
                skipped[label] = reason
                say(Progress(f"{label}: {reason}", SKIPPED))
                continue
            say(Progress(f"export {label}"))
            session.progress = lambda event, label=label: say(event.prefixed(label))
            try:
                result = write_artifact(session, [target], engines / label)
            except ScnetDeployError as exc:
                failed[label] = str(exc)
                say(Progress(f"{label}: {exc}", FAILED))
                continue
            verification = result.manifest["verification"]
            forms[label] = autotune_summary(result.manifest)
            if result.manifest.get("int8", {}).get("worst_image"):
                int8[label] = result.manifest["int8"]
            if verification.get("passed") is None:  # built, cannot run here (Core ML off macOS, TensorRT w/o GPU)
                skipped[label] = f"built, not run here: {verification.get('skipped') or result.manifest.get('tensorrt', {}).get('engine_note')}"
                say(Progress(f"{label} ({skipped[label]})", BUILT))
            else:
                built[label] = result.directory
                say(Progress(label, BUILT))
    runnable = list(built.values())
    validation = validate([ckpt_path, *runnable], ValidateOptions(tuple(datasets), scale, bicubic=True,
                                                                  content=options.content,
                                                                  budget_db=options.budget_db, visuals=out,
                                                                  max_memory_mb=options.max_memory_mb),
                          progress=say)
    # One PyTorch baseline, the official eager model every speed-up is against (bench alone also times the
    # deploy form in eager: it runs no faster, README's bench table shows, and costs ~20 s here), timed 3 times: at
    # ~3 s a run it is the slowest model by far, and it is only the denominator of the speed-ups. Every model's
    # first inference is untimed (reported apart), the warm-up.
    # Throughput (several requests in flight) too, for the engines within the drift budget (the candidates of a
    # recommendation) at the largest shape: the report recommends per goal.
    within = within_budget(validation, options.budget_db)
    candidates = tuple(p for p in map(str, runnable) if p in within)
    timing = bench(runnable, BenchOptions(shapes=options.shapes, runs=options.runs, warmup=0, reference=ckpt_path,
                                          baseline_forms=("official",), baseline_runs=min(3, options.runs),
                                          max_memory_mb=options.max_memory_mb, mode="throughput",
                                          throughput_shapes=(options.shapes[-1],), throughput_models=candidates,
                                          throughput_rounds=2),
                   progress=lambda event: say(event.prefixed("bench")))
    best = recommend(validation, timing, options.budget_db)
    best_throughput = recommend(validation, timing, options.budget_db, "throughput")
    not_recommended = refusals(validation, timing, best)
    elapsed = time.perf_counter() - t_start
    summary = {"int8": {k: {f: v.get(f) for f in ("budget_db", "drift_db", "worst_image", "by_content", "float_layers",
                                                   "tries", "gate_by_content")} for k, v in int8.items()},
               "checkpoint": str(ckpt_path), "arch": ckpt.spec.to_dict(), "datasets": [str(d) for d in datasets],
               "budget_db": options.budget_db, "built": {k: str(v) for k, v in built.items()}, "skipped": skipped,
               "failed": failed, "forms": forms, "recommendation": best, "recommendation_throughput": best_throughput,
               "not_recommended": not_recommended, "gate": validation.get("gate"),
               "content": validation.get("content"), "seconds": elapsed}
    rec = (f"**Recommendation:** `{best['name']}` ({best['precision']}): {best['median_ms']:.1f} ms at LR "
           f"{best['shape'][0]}x{best['shape'][1]}, drift {best['drift_db']:+.3f} dB on its worst content"
           + (f", {100 * best['visible_share']:.2f}% of an image's pixels visibly changed at most"
              if best.get("visible_share") is not None else "")
           + f": within the accuracy gate (budget {options.budget_db} dB, {100 * VISIBLE_SHARE:g}% visible)"
           + (f", {best['speedup_vs_official_eager']:.1f}x official eager" if best.get("speedup_vs_official_eager")
              else "") if best else f"**Recommendation:** no engine is within the accuracy gate "
           f"({options.budget_db} dB budget).")
    rec += gate_sentence(validation)
    if not_recommended:
        rec += "\n\n" + "\n".join(not_recommended)
    if best_throughput:
        t = best_throughput
        rec += (f"\n\n**Recommendation for throughput** (several images in flight): `{t['name']}` ({t['precision']}): "
                f"{t['images_per_s']:.2f} images/s at LR {t['shape'][0]}x{t['shape'][1]} with {t['inflight']} in flight, "
                f"drift {t['drift_db']:+.3f} dB")
    notes = [rec, ""] + [f"- skipped `{k}`: {v}" for k, v in skipped.items()] + \
            [f"- failed `{k}`: {v}" for k, v in failed.items()] + ["", *int8_lines(int8), *form_lines(forms), "",
                                                                   f"Pipeline time: {elapsed:.0f} s.", ""]
    md = report([validation, timing], out, title="scnet-deploy pipeline report", sections=notes)
    summary["report"] = str(md)
    write_json_atomic(summary, out / "summary.json")
    return summary
