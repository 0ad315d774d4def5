"""The ``validate`` verb: PSNR/SSIM-Y against ground truth (BasicSR/MATLAB protocol) and the drift of every model
from the FP32 PyTorch reference, side by side.

Drift is PSNR-Y(model) - PSNR-Y(reference), in dB (negative = worse); the visible share is the share of an image's
pixels 4+ 8-bit levels off the reference's output (``gate.visible_share``). Several datasets (content types) are
scored in one call, a table each; a model's drift is that of its worst dataset, which is named. ``budget_db`` turns
on the accuracy gate (``gate.AccuracyGate.judge``, on each dataset of ``content`` or on all): the run fails when
any model fails it on any of them. Outputs are clipped to [0, 1] and rounded to 8 bits before
scoring; PSNR vs reference and max abs diff compare the float outputs. Non-finite and collapsed (constant) outputs
are flagged per image. An image that cannot be read is named (``unreadable_images``) and left out of the means; one
whose run would not fit the memory limit (``memory.py``) is run in exact tiles (``tile`` per image). With
``visuals``, the worst image of each model is shown as a crop side by side (bicubic, FP32, every model) with an
amplified error map vs FP32 (scnet_deploy/imaging/visuals.py).
"""

import gc
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .imaging.datasets import load_dataset
from .errors import EXPORT_EXTRA, ScnetDeployError, has_torch
from .imaging.images import to_float_chw, to_u8_hwc
from .gate import VISIBLE_LEVELS, VISIBLE_SHARE, AccuracyGate, flicker, visible_share
from .memory import limit_bytes
from .imaging.metrics import SSIM_WINDOW, psnr_ssim_y
from .build_options import join_list, parse_list
from .options import RuntimeOptions, option
from .progress import Progress, reporter
from .recorded import RecordedOutputs
from .imaging.resize import imresize_u8
from .imaging.tiling import run_within

PROTOCOL = ("HR mod-cropped to the scale; LR shipped or MATLAB bicubic (antialiased); output clipped to [0,1] and "
            "rounded to 8 bits; PSNR and SSIM (11x11 Gaussian, sigma 1.5) on BT.601 Y (16-235), `scale` border "
            "pixels cropped")


@dataclass(frozen=True)
class ValidateOptions:
    datasets: Path | tuple[Path, ...]  # one folder, or several (each a content type with its own table)
    scale: int
    bicubic: bool = False  # add the MATLAB-bicubic baseline row
    budget_db: float | None = None  # the accuracy gate's drift, dB: given, the gate judges (None: it does not)
    # FP32 reference checkpoint; default: the first checkpoint among the models
    reference: Path | None = option(None, "FP32 reference checkpoint (default: first checkpoint among MODELS, else "
                                    "the artifacts' own).", cli=Optional[Path])
    limit: int | None = option(None, "Use only the first N images (of a video file: frames; default 60).",
                               cli=Optional[int])
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    visuals: Path | None = None  # write side-by-side crops of each model's worst image here
    max_memory_mb: int | None = None  # images whose run would pass this are run in exact tiles; None: memory model
    # the datasets (by name) the gate judges; None: every one
    content: tuple[str, ...] | None = option(None, "The datasets the gate judges, by name, comma-separated (default: "
                                             "every one); the others are shown, not judged.", cli=Optional[str],
                                             parse=parse_list, show=join_list)
    # each dataset's images are consecutive frames (in name order): measure flicker against the reference's
    frames: bool = option(False, "Each dataset folder is consecutive frames of a video (in name order): add flicker, "
                          "how differently from FP32 each engine's output changes from frame to frame (a video file "
                          "given as --dataset always gets it).")
    max_visible: float = VISIBLE_SHARE  # the gate's: the share of an image's pixels that may change visibly
    visible_levels: int = VISIBLE_LEVELS  # the gate's: a pixel this many 8-bit levels off FP32 changed visibly

    def gate(self) -> AccuracyGate:
        return AccuracyGate(self.budget_db, self.max_visible, self.visible_levels)

    def folders(self) -> tuple[Path, ...]:
        return (Path(self.datasets),) if isinstance(self.datasets, (str, Path)) else tuple(map(Path, self.datasets))


class _Bicubic:
    name = "bicubic (MATLAB)"
    precision = "-"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _reference_path(models: list[Path], options: ValidateOptions) -> Path | None:
    from .runtime import find_checkpoint

    return Path(options.reference) if options.reference else find_checkpoint(models)


def _flags(out: np.ndarray) -> dict:
    finite = bool(np.isfinite(out).all())
    collapsed = finite and float(out.std()) < 1e-6
    return {"nonfinite": not finite, "collapsed": collapsed}


def _score_model(runner, pairs, scale, ref_outputs, progress, limit=None, keep=None,
                 frames: bool = False, levels: int = VISIBLE_LEVELS) -> tuple[dict, list]:
    """Score ``runner`` on ``pairs``, each image against the reference's output (``ref_outputs``) as it comes;
    ``keep(out)`` is what is kept of each float output (None: nothing), so memory does not grow with the dataset.
    ``frames``: the pairs are consecutive frames; each one after the first also gets its flicker (``gate.flicker``)."""
    per_image, kept, previous = [], [], None
    for i, pair in enumerate(pairs):
        tile = None
        if isinstance(runner, _Bicubic):
            sr_u8 = imresize_u8(pair.lr, scale)
            out = sr_u8.transpose(2, 0, 1).astype(np.float32) / 255.0
        else:
            out, tile = run_within(runner, to_float_chw(pair.lr), scale, limit)
            sr_u8 = to_u8_hwc(out)
        if sr_u8.shape != pair.hr.shape:
            raise ScnetDeployError(f"{runner.name}: output {sr_u8.shape[1]}x{sr_u8.shape[0]} for '{pair.name}' does "
                                   f"not match HR {pair.hr.shape[1]}x{pair.hr.shape[0]}; is the model x{scale}?")
        p, s = psnr_ssim_y(sr_u8, pair.hr, crop=scale)
        row = {"name": pair.name, "psnr_y": p, "ssim_y": s, **_flags(out), "tile": tile}
        if ref_outputs is not None:
            row["visible_share"] = visible_share(sr_u8, to_u8_hwc(ref_outputs[i]), scale, levels)
            a, b = np.clip(np.nan_to_num(out), 0, 1), np.clip(ref_outputs[i], 0, 1)
            mse = float(np.mean((a.astype(np.float64) - b) ** 2))
            row["max_abs_diff"] = float(np.abs(a - b).max())
            row["psnr_vs_reference_db"] = float("inf") if mse == 0 else float(10 * np.log10(1 / mse))
            if frames:
                ref_u8 = to_u8_hwc(ref_outputs[i])
                if previous is not None and previous[0].shape == sr_u8.shape:
                    row["flicker_levels"], row["flicker_share"] = flicker(previous[0], sr_u8, previous[1], ref_u8,
                                                                          scale, levels)
                previous = sr_u8, ref_u8
        kept.append(keep(out) if keep else None)
        per_image.append(row)
        progress()
    entry = {"name": runner.name, "precision": runner.precision,
             "psnr_y": float(np.mean([r["psnr_y"] for r in per_image])),
             "ssim_y": float(np.mean([r["ssim_y"] for r in per_image])),
             "nonfinite_images": [r["name"] for r in per_image if r["nonfinite"]],
             "collapsed_images": [r["name"] for r in per_image if r["collapsed"]],
             "per_image": per_image}
    moves = [r for r in per_image if "flicker_share" in r]
    if moves:  # the worst transition decides, as the worst image does for the visible change
        entry["flicker_share"] = max(r["flicker_share"] for r in moves)
        entry["flicker_levels"] = max(r["flicker_levels"] for r in moves)
    return entry, kept


def _spill(folder: Path):
    """Keep float outputs on disk, read back as memory maps: the reference's outputs for a whole dataset of large
    images would otherwise stay resident (44 MB per 2560x1440 image) while every other model runs."""
    count = [0]
    folder.mkdir(parents=True, exist_ok=True)

    def keep(out: np.ndarray) -> np.ndarray:
        count[0] += 1
        path = folder / f"{count[0]}.npy"
        np.save(path, out)
        return np.load(path, mmap_mode="r")
    return keep


@contextmanager
def _collecting_only_new_objects():
    """Collect once, then freeze what exists (``gc.freeze``) for the duration: the collection after each model
    (``_release_freed_memory``) then scans only the objects made since, its engine's among them, not everything the
    process holds (after the pipeline's builds: 0.4 s a collection, 3 s a validation)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _release_freed_memory() -> None:
    """Hand memory a closed engine freed back to the system (glibc keeps large freed blocks otherwise), so the next
    model's memory limit, measured from what is left, is not eaten by the last one's garbage."""
    import ctypes
    import ctypes.util

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def dataset_name(folder: Path) -> str:
    """What a dataset folder is called in tables: its own name (DIR for DIR/HR)."""
    folder = Path(folder)
    if folder.is_file():  # a video
        return folder.stem
    return folder.parent.name if folder.name == "HR" else folder.name


def _open_and_score(path, options, sets, ref_outputs, is_ref, tick, keep, spill) -> tuple[list[dict], list[list]]:
    from .runtime import open_model

    entries, outputs = [], []
    on_device = isinstance(path, RecordedOutputs)  # an artifact's outputs computed on a device, scored here
    opened = path.open_runner() if on_device else open_model(path, options.runtime, scale=options.scale)
    with opened as runner:
        scale = runner.arch["scale"]
        if scale != options.scale:
            raise ScnetDeployError(f"'{path}' is a x{scale} model but --scale {options.scale} was asked; pass "
                                   f"--scale {scale} or another model.")
        limit = limit_bytes(options.max_memory_mb)  # what is left now, with this engine loaded
        for k, pairs in enumerate(sets):
            entry, outs = _score_model(runner, pairs, options.scale, None if is_ref else ref_outputs[k], tick,
                                       limit, _spill(spill / str(k)) if is_ref else to_u8_hwc if keep else None,
                                       frames=options.frames or pairs.consecutive, levels=options.visible_levels)
            entry.update({"path": str(path), "kind": "artifact" if Path(path).is_dir() else "checkpoint",
                          "backend": runner.backend, "reference": is_ref,
                          "device": path.device if on_device else None,
                          "artifact": str(path.artifact if on_device else path)})
            entries.append(entry)
            outputs.append(outs if is_ref or keep else None)
    _release_freed_memory()
    return entries, outputs


def _drifts(entries: list[dict], ref_entry: dict | None, gate: AccuracyGate, content: str, gated: bool) -> None:
    if ref_entry is None:
        for e in entries:
            e["drift_db"] = None
            worst = min(e["per_image"], key=lambda r: r["psnr_y"])
            e["worst_image"] = {"name": worst["name"], "psnr_y": worst["psnr_y"]}
        return
    ref_by_image = {r["name"]: r["psnr_y"] for r in ref_entry["per_image"]}
    for e in entries:
        for r in e["per_image"]:
            r["drift_db"] = r["psnr_y"] - ref_by_image[r["name"]]
        e["drift_db"] = e["psnr_y"] - ref_entry["psnr_y"]
        worst = min(e["per_image"], key=lambda r: r["drift_db"])
        e["worst_image"] = {"name": worst["name"], "drift_db": worst["drift_db"], "psnr_y": worst["psnr_y"]}
        if "max_abs_diff" in e["per_image"][0]:
            e["max_abs_diff"] = max(r["max_abs_diff"] for r in e["per_image"])
            e["psnr_vs_reference_db"] = min(r["psnr_vs_reference_db"] for r in e["per_image"])
            e["visible_share"] = max(r["visible_share"] for r in e["per_image"])
        if e["kind"] != "method" and gate.on and gated and "visible_share" in e:
            verdict = gate.judge(content, [{**r, "ref_psnr_y": ref_by_image[r["name"]]} for r in e["per_image"]])
            e["gate"] = verdict.to_dict()
            e["within_budget"] = verdict.passed and not e["nonfinite_images"]


def _summary(per_set: list[dict], names: list[str]) -> list[dict]:
    """One row per model over every dataset: the drift of its worst dataset (named), its worst image."""
    rows = []
    for i, first in enumerate(per_set[0]["models"]):
        ms = [r["models"][i] for r in per_set]
        row = {k: first[k] for k in ("name", "precision", "path", "kind", "backend", "reference", "device",
                                     "artifact") if k in first}
        if "implicit" in first:
            row["implicit"] = first["implicit"]
        row["psnr_y"] = float(np.mean([m["psnr_y"] for m in ms]))
        row["ssim_y"] = float(np.mean([m["ssim_y"] for m in ms]))
        row["per_image"] = [{**r, "dataset": n} for n, m in zip(names, ms) for r in m["per_image"]]
        row["nonfinite_images"] = [f"{n}/{x}" if len(names) > 1 else x for n, m in zip(names, ms)
                                   for x in m["nonfinite_images"]]
        row["collapsed_images"] = [f"{n}/{x}" if len(names) > 1 else x for n, m in zip(names, ms)
                                   for x in m["collapsed_images"]]
        row["by_dataset"] = {n: {"psnr_y": m["psnr_y"], "drift_db": m["drift_db"]} for n, m in zip(names, ms)}
        if first["drift_db"] is not None:
            k = min(range(len(ms)), key=lambda j: ms[j]["drift_db"])
            row["drift_db"] = ms[k]["drift_db"]
            row["worst_dataset"] = names[k]
            worst = min(row["per_image"], key=lambda r: r["drift_db"])
            row["worst_image"] = {"dataset": worst["dataset"], "name": worst["name"], "drift_db": worst["drift_db"],
                                  "psnr_y": worst["psnr_y"]}
            if "max_abs_diff" in first:
                row["max_abs_diff"] = max(m["max_abs_diff"] for m in ms)
                row["psnr_vs_reference_db"] = min(m["psnr_vs_reference_db"] for m in ms)
                row["visible_share"] = max(m["visible_share"] for m in ms)
            if any("flicker_share" in m for m in ms):
                row["flicker_share"] = max(m.get("flicker_share", 0.0) for m in ms)
                row["flicker_levels"] = max(m.get("flicker_levels", 0.0) for m in ms)
            judged = [m for m in ms if "within_budget" in m]
            if judged:
                row["within_budget"] = all(m["within_budget"] for m in judged)
                row["gate"] = {m["gate"]["content"]: m["gate"] for m in judged}
                failed = [m["gate"]["reason"] or f"{m['gate']['content']}: non-finite outputs" for m in judged
                          if not m["within_budget"]]
                row["gate_failure"] = "; ".join(failed) or None
        else:
            row["drift_db"] = None
            worst = min(row["per_image"], key=lambda r: r["psnr_y"])
            row["worst_image"] = {"dataset": worst["dataset"], "name": worst["name"], "psnr_y": worst["psnr_y"]}
        rows.append(row)
    return rows


def validate(models: list[str | Path], options: ValidateOptions, progress=None) -> dict:
    """Score each model (checkpoint or artifact directory) on each dataset of ``options``; see the module
    docstring. A model may also be ``RecordedOutputs``: an artifact's outputs computed elsewhere, scored here."""
    with tempfile.TemporaryDirectory(prefix="scnet-deploy-validate-") as spill, _collecting_only_new_objects():
        return _validate(models, options, progress, Path(spill))


def _checked(models: list, options: ValidateOptions) -> tuple[list, list[Path], list[str]]:
    """The models, dataset folders and their names, checked before any work (the gate's options included)."""
    from .runtime import require_models_exist

    options.gate().check()
    models = [m if isinstance(m, RecordedOutputs) else Path(m) for m in models]
    require_models_exist([*models, *([options.reference] if options.reference else [])])
    if not models and not options.bicubic:
        raise ScnetDeployError("validate needs at least one MODEL (checkpoint or artifact directory) or --method "
                               "bicubic.")
    folders = options.folders()
    if not folders:
        raise ScnetDeployError("validate needs at least one --dataset folder.")
    names = [dataset_name(f) for f in folders]
    if len(set(names)) != len(names):
        raise ScnetDeployError(f"--dataset folders must have different names (they label the tables): {names}.")
    unknown = sorted(set(options.content or ()) - set(names))
    if unknown:
        raise ScnetDeployError(f"--content {','.join(unknown)}: no dataset of that name; the datasets are "
                               f"{','.join(names)}.")
    return models, list(folders), names


def _reference(models: list, options: ValidateOptions) -> tuple[Path | None, str | None]:
    """The FP32 reference checkpoint, and why there is none where one was implied but cannot run here."""
    ref_path, skipped = _reference_path(models, options), None
    if ref_path is not None and ref_path not in models and options.reference is None and not has_torch():
        # found through an artifact's manifest, on a machine without PyTorch (a device): scored against ground truth
        ref_path, skipped = None, f"PyTorch is not installed here ({EXPORT_EXTRA} adds it)"
    if options.gate().on and ref_path is None:
        raise ScnetDeployError("--budget needs an FP32 reference: pass the checkpoint as a MODEL or with --reference.")
    return ref_path, skipped


def _score_all(models: list, ref_path: Path | None, options: ValidateOptions, sets: list, progress, spill: Path):
    """Every model's entries per dataset (the reference first, then the bicubic baseline where asked), and the
    outputs kept of each."""
    order = ([ref_path] if ref_path is not None and ref_path not in models else []) + models
    total = sum(len(p) for p in sets) * (len(order) + int(options.bicubic))
    say, done = reporter(progress), [0]

    def tick():
        done[0] += 1
        say(Progress("validating", done=done[0], total=total))
    keep = options.visuals is not None
    per_model, outputs, ref_outputs = [], [], [None] * len(sets)
    for path in order:
        is_ref = ref_path is not None and path == ref_path
        entries, outs = _open_and_score(path, options, sets, ref_outputs, is_ref, tick, keep,
                                        spill / str(len(per_model)))
        if is_ref:
            ref_outputs = outs
            for e in entries:
                e["implicit"] = path not in models
        per_model.append(entries)
        outputs.append(outs)
    if options.bicubic:
        entries = []
        for pairs in sets:
            entry, _ = _score_model(_Bicubic(), pairs, options.scale, None, tick)
            entry.update({"path": None, "kind": "method", "backend": "bicubic", "reference": False})
            entries.append(entry)
        per_model.append(entries)
    return per_model, outputs


def _validate(models: list[str | Path], options: ValidateOptions, progress, spill: Path) -> dict:
    from .doctor import machine

    models, folders, names = _checked(models, options)
    sets = [load_dataset(f, options.scale, options.limit).scorable(options.scale, SSIM_WINDOW) for f in folders]
    ref_path, reference_skipped = _reference(models, options)
    per_model, outputs = _score_all(models, ref_path, options, sets, progress, spill)
    gate, per_set = options.gate(), []
    for k, (folder, pairs) in enumerate(zip(folders, sets)):
        entries = [m[k] for m in per_model]
        ref_entry = next((e for e in entries if e["reference"]), None)
        _drifts(entries, ref_entry, gate, names[k], options.content is None or names[k] in options.content)
        failed = [e["name"] for e in entries if e.get("within_budget") is False]
        per_set.append({"dataset": str(folder), "name": names[k], "scale": options.scale, "images": len(pairs),
                        "lr_source": sorted({p.lr_source for p in pairs}), "budget_db": options.budget_db,
                        "gated": options.content is None or names[k] in options.content,
                        "passed": not failed, "over_budget": failed, "models": entries,
                        "unreadable": pairs.unreadable})
    rows = _summary(per_set, names)
    failed = [r["name"] for r in rows if r.get("within_budget") is False]
    result = {"dataset": ", ".join(str(f) for f in folders), "datasets": per_set, "scale": options.scale,
              "images": sum(len(p) for p in sets), "lr_source": sorted({p.lr_source for s in sets for p in s}),
              "protocol": PROTOCOL, "reference": str(ref_path) if ref_path else None, "budget_db": options.budget_db,
              "gate": gate.record(), "content": list(options.content) if options.content else names,
              "passed": not failed, "over_budget": failed, "models": rows, "machine": machine(),
              "unreadable_images": [u for s in sets for u in s.unreadable], "reference_skipped": reference_skipped}
    if options.visuals is not None and ref_path is not None:
        from .imaging.visuals import worst_image_comparisons

        result["visuals"] = worst_image_comparisons(result, sets, outputs, options.scale, Path(options.visuals))
    return result
