"""The ``upscale`` verb: images through any model (checkpoint or engine), tiled exactly within a memory limit.

Grey images stay grey (run as RGB with equal channels, averaged back); alpha is upscaled separately through the
same model and reattached; 16-bit stays 16-bit (PNG). Every output tile is checked for NaN/Inf, every image for
collapse (constant output); both are reported per image.

A batch (a folder, or several inputs) finishes: a file that cannot be read, run or written is reported (``status:
failed`` and the reason) and the rest go on (one input alone raises its error); ``skip_existing`` resumes an
interrupted batch (outputs are written atomically, so one that exists is complete). The tile size comes from the
memory model (``memory.py``) unless given.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .door import protect_inputs
from .errors import ScnetDeployError
from .imaging.images import (IMAGE_SUFFIXES, WRITE_SUFFIXES, image_size, list_folder, read_image, remove_stale_temporaries,
                     round_to_bits, write_image)
from .memory import limit_bytes
from .options import RuntimeOptions, option
from .progress import FAILED, STEP, Progress, reporter
from .imaging.tiling import run_tiled, tile_for
from .imaging.video import VideoOptions, is_video

DONE, FAILED_STATUS, SKIPPED_STATUS = "done", "failed", "skipped"


@dataclass(frozen=True)
class UpscaleOptions:
    output: Path
    # LR pixels; None: chosen by the memory model within max_memory_mb
    tile: int | None = option(None, "Tile size in LR pixels (default: from --max-memory).", cli=Optional[int])
    # halo in LR pixels; None: the receptive radius (never less)
    overlap: int | None = option(None, "Tile halo in LR pixels (default and minimum: the receptive radius, so tiles "
                                 "are exact).", cli=Optional[int])
    max_memory_mb: int | None = None  # None: the memory model's default limit (a share of what is available)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    # resume: leave outputs that exist (always complete: atomic writes) as they are
    skip_existing: bool = option(False, "Resume a batch: keep outputs that exist (complete: a readable image of the "
                                 "expected size).")
    # images in flight when several are upscaled (a folder): None = the engine's optimal number in its throughput
    # mode (OpenVINO compiled with its throughput hint; 1 for engines without one); 1 = one image at a time
    inflight: int | None = option(None, "Images (or video frames) in flight (default: the engine's optimal number in "
                                  "its throughput mode; 1: one at a time).", cli=Optional[int])
    video: VideoOptions = field(default_factory=VideoOptions)  # a video input: output codec, quality, pixel format


def _inputs(paths: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """The images to upscale, and the other files of the folders given with why each is skipped."""
    files, others = [], {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found, skipped = list_folder(p)
            if not found:
                raise ScnetDeployError(f"folder '{p}' has no images ({', '.join(IMAGE_SUFFIXES)}).")
            files += found
            others.update(skipped)
        elif p.is_file():
            files.append(p)
        else:
            raise ScnetDeployError(f"input '{p}' does not exist.")
    if not files:
        raise ScnetDeployError("upscale needs at least one INPUT image or folder.")
    return files, others


def _destinations(files: list[Path], output: Path, scale: int) -> list[Path]:
    """Where each input goes: ``--output`` itself for one image, else ``STEM_xS.EXT`` in the ``--output`` folder;
    inputs whose names would collide there (a.png, a.bmp) keep their suffix in it (a_png_xS.png, a_bmp_xS.png).
    Collisions left (the same name from two folders) are refused up front, listed."""
    if output.suffix.lower() in WRITE_SUFFIXES and not output.is_dir():
        if len(files) != 1:
            raise ScnetDeployError(f"--output '{output}' is a file but {len(files)} inputs were given; pass a folder.")
        return [output]
    if output.suffix and output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir():
        raise ScnetDeployError(f"cannot write '{output.suffix}'; output formats are {', '.join(WRITE_SUFFIXES)}.")
    if output.exists() and not output.is_dir():
        raise ScnetDeployError(f"--output '{output}' is a file, and {len(files)} inputs need a folder; pass a folder.")

    def name(f: Path, keep_suffix: bool) -> str:
        suffix = f.suffix.lower() if f.suffix.lower() in WRITE_SUFFIXES else ".png"
        stem = f"{f.stem}_{f.suffix.lower().lstrip('.')}" if keep_suffix else f.stem
        return f"{stem}_x{scale}{suffix}"

    plain = [name(f, False) for f in files]
    names = [name(f, plain.count(n) > 1) for f, n in zip(files, plain)]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        which = [f"{n} <- {[str(f) for f, m in zip(files, names) if m == n]}" for n in clashes[:3]]
        raise ScnetDeployError(f"{len(clashes)} output name(s) would be written by several inputs ({'; '.join(which)})"
                               "; upscale those folders into separate --output folders.")
    return [output / n for n in names]


def _complete(src: Path, dst: Path, scale: int) -> bool:
    """An output ``--skip-existing`` may keep: an image of the input's size times the scale that passes its
    format's integrity check (a PNG cut short fails it)."""
    from PIL import Image

    try:
        w, h = image_size(src)
        if image_size(dst) != (w * scale, h * scale):
            return False
        with Image.open(dst) as im:
            im.verify()
        return True
    except Exception:  # unreadable in any of Pillow's ways: not complete, upscaled again
        return False


def _upscale_one(runner, src: Path, dst: Path, options: UpscaleOptions, halo: int, limit: int | None) -> dict:
    scale = runner.arch["scale"]
    image = read_image(src)
    h, w, c = image.pixels.shape
    tile = options.tile if options.tile is not None else tile_for(runner, h, w, halo, limit)
    colour = image.pixels[..., :3] if c >= 3 else np.repeat(image.pixels[..., :1], 3, axis=2)
    planes = [(colour, slice(0, 3) if c >= 3 else slice(0, 1))]
    if c in (2, 4):  # alpha, upscaled separately through the same model
        planes.append((np.repeat(image.pixels[..., -1:], 3, axis=2), slice(c - 1, c)))
    bits = image.bits if dst.suffix.lower() == ".png" else 8
    # Assembled directly in the output's integer type: an 8K x4 result is 1.6 GB in uint8, 6.4 GB in float.
    out = np.empty((h * scale, w * scale, c), np.uint16 if bits == 16 else np.uint8)
    report = {"input": str(src), "output": str(dst), "size": [w, h], "channels": c, "bits": image.bits,
              "tile": tile, "halo": halo, "nonfinite": False}

    for pixels, target in planes:
        grey_target = target.stop - target.start == 1

        def sink(y, x, block, target=target, grey=grey_target):
            if not np.isfinite(block).all():
                report["nonfinite"] = True
                block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=0.0)
            hwc = block.transpose(1, 2, 0)
            out[y:y + hwc.shape[0], x:x + hwc.shape[1], target] = round_to_bits(
                hwc.mean(axis=2, keepdims=True) if grey else hwc, bits)

        report["tiles"] = run_tiled(runner.infer, np.ascontiguousarray(pixels.transpose(2, 0, 1)), scale,
                                    tile, halo, sink)
    colour_out = out[..., : (3 if c >= 3 else 1)]
    report["collapsed"] = bool(colour_out.max() == colour_out.min())
    write_image(dst, out, bits)
    return report


def _eta(seconds: float, worked: int, remaining: int) -> str:
    if not worked or not remaining:
        return ""
    left = seconds / worked * remaining
    return f", ~{left:.0f} s left" if left < 120 else f", ~{left / 60:.0f} min left"


@dataclass
class Batch:
    """The images of one ``upscale`` call: inputs, where each goes, the other files of the folders (skipped, with
    why) and the indices still to do (``skip_existing`` leaves complete outputs)."""

    files: list[Path]
    dests: list[Path]
    others: dict[Path, str]
    todo: list[int]
    is_batch: bool  # a folder or several inputs: a file's failure is reported, not raised

    def kept(self) -> list[int]:
        """The inputs whose output exists, complete, and is kept (``skip_existing``)."""
        return sorted(set(range(len(self.files))) - set(self.todo))

    def kept_result(self, i: int) -> dict:
        return {"input": str(self.files[i]), "output": str(self.dests[i]), "status": SKIPPED_STATUS,
                "reason": "output exists"}

    def other_results(self) -> list[dict]:
        """A result for every other file of the folders (not an image), with why it was skipped."""
        return [{"input": str(p), "output": None, "status": SKIPPED_STATUS, "reason": why}
                for p, why in self.others.items()]


def plan_batch(inputs: list[Path], options: UpscaleOptions, scale: int) -> Batch:
    """Check the inputs and outputs of an image batch up front (names, collisions, outputs that are inputs), make
    the output folders (clearing temporaries an interrupted run left) and list what is still to do."""
    files, others = _inputs([Path(p) for p in inputs])
    dests = _destinations(files, Path(options.output), scale)
    protect_inputs(files, dests)
    for folder in {d.parent for d in dests}:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder)
    todo = [i for i, dst in enumerate(dests)
            if not (options.skip_existing and dst.exists() and _complete(files[i], dst, scale))]
    return Batch(files, dests, others, todo, len(files) > 1 or any(Path(p).is_dir() for p in inputs))


def halo_for(arch: dict, options: UpscaleOptions) -> int:
    """The tile halo: ``--overlap``, refused below the receptive radius (tiles would not be exact); 3 channels."""
    radius, in_ch = arch["receptive_radius"], arch["num_in_ch"]
    if in_ch != 3:
        raise ScnetDeployError(f"upscale supports 3-channel models; this one takes {in_ch} channels.")
    halo = radius if options.overlap is None else options.overlap
    if halo < radius:
        raise ScnetDeployError(f"--overlap {options.overlap} is smaller than the receptive radius ({radius} LR px),"
                               f" so tiles would not match the whole-image output; use --overlap {radius} or more.")
    return halo


def upscale_item(engine, src: Path, dst: Path, options: UpscaleOptions, halo: int, limit: int | None,
                 batch: bool) -> tuple[dict, str, str]:
    """One image: its result, the progress kind and line. In a batch a file's own problem (unreadable, unwritable,
    too large) is its result, ``failed`` with the reason; one image alone raises it."""
    try:
        result = {**_upscale_one(engine, src, dst, options, halo, limit), "status": DONE}
        return result, STEP, f"upscaled {src.name}"
    except (ScnetDeployError, OSError) as e:
        if not batch:
            raise  # one image asked for: its error is the answer (exit 2, one line)
        error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ({"input": str(src), "output": str(dst), "status": FAILED_STATUS, "error": error}, FAILED,
                f"{src.name} failed: {error}")


def batch_progress(results: list, started: float, worked: int, say):
    """``finish(i, result, kind, line)``: record result ``i`` and report the batch's counts and ETA."""
    def finish(i: int, result: dict, kind: str, what: str) -> None:
        results[i] = result
        done = [r for r in results if r is not None]
        failed = sum(r["status"] == FAILED_STATUS for r in done)
        remaining = len(results) - len(done)
        say(Progress(f"{what} ({len(done) - failed} done, {failed} failed, {remaining} left"
                     f"{_eta(time.perf_counter() - started, worked[0], remaining)})", kind=kind, done=len(done),
                     total=len(results)))
    return finish


def upscale(model: str | Path, inputs: list[str | Path], options: UpscaleOptions, progress=None) -> list[dict]:
    """Upscale every input image; one result per input with ``status`` done, failed (with ``error``) or skipped.
    Several inputs run several at a time where the engine serves requests in parallel (``options.inflight``)."""
    from .runtime import open_model

    say = reporter(progress)
    if any(is_video(Path(p)) for p in inputs):
        return [_upscale_video(model, [Path(p) for p in inputs], options, progress)]
    if options.inflight is not None and options.inflight < 1:
        raise ScnetDeployError(f"--inflight must be at least 1, got {options.inflight}.")
    many = len(inputs) > 1 or any(Path(p).is_dir() for p in inputs)
    throughput = many and options.inflight != 1
    with open_model(model, options.runtime.for_throughput() if throughput else options.runtime) as runner:
        halo = halo_for(runner.arch, options)
        plan = plan_batch([Path(p) for p in inputs], options, runner.arch["scale"])
        throughput = plan.is_batch and throughput
        inflight = max(1, min(options.inflight or runner.optimal_requests(), len(plan.todo))) if throughput else 1
        limit = limit_bytes(options.max_memory_mb)
        if limit is not None:
            limit //= inflight  # every image in flight holds its own maps
        results: list = [None] * len(plan.files)
        worked = [0]
        finish = batch_progress(results, time.perf_counter(), worked, say)
        for i in plan.kept():  # counted, not a line each: resumes are long
            finish(i, plan.kept_result(i), STEP, f"{plan.files[i].name}: output exists, skipped")

        def one(i: int, engine) -> tuple[dict, str, str]:
            result, kind, line = upscale_item(engine, plan.files[i], plan.dests[i], options, halo, limit,
                                              plan.is_batch)
            if result["status"] == DONE:
                result["inflight"] = inflight
            return result, kind, line

        if inflight == 1:
            for i in plan.todo:
                worked[0] += 1
                finish(i, *one(i, runner))
        else:
            _in_flight(runner, plan.todo, inflight, one, finish, worked)
    return results + plan.other_results()


def _upscale_video(model, inputs: list[Path], options: UpscaleOptions, progress) -> dict:
    """One video file through ``video.upscale_video``: into ``--output`` if it names a video file, else
    ``STEM_xS.SUFFIX`` in the ``--output`` folder; ``options.inflight`` frames at a time (default: the engine's
    optimal number in its throughput mode)."""
    from .imaging.video import make_parent
    from .locks import exclusive
    from .runtime import open_model
    from .video import upscale_video

    if len(inputs) != 1:
        raise ScnetDeployError(f"upscale takes one video at a time ({len(inputs)} inputs given); run it per video.")
    if options.inflight is not None and options.inflight < 1:
        raise ScnetDeployError(f"--inflight must be at least 1, got {options.inflight}.")
    src = inputs[0]
    throughput = options.inflight != 1
    with open_model(model, options.runtime.for_throughput() if throughput else options.runtime) as runner:
        halo = halo_for(runner.arch, options)
        inflight = max(1, options.inflight or runner.optimal_requests()) if throughput else 1
        dst = video_destination(src, Path(options.output), runner.arch["scale"])
        limit = limit_bytes(options.max_memory_mb)
        if limit is not None:
            limit //= inflight  # every frame in flight holds its own maps

        def tile(h: int, w: int) -> int | None:
            return options.tile if options.tile is not None else tile_for(runner, h, w, halo, limit)

        make_parent(dst)  # before its lock, which lives beside it
        with exclusive(dst, "upscale"):  # a second upscale to the same output stops at once, in one line
            return {**upscale_video(runner, src, dst, tile, halo, options.video, progress, inflight=inflight),
                    "status": DONE}


def video_destination(src: Path, output: Path, scale: int) -> Path:
    """``--output`` itself if it names a video file, else ``STEM_xS.SUFFIX`` in that folder."""
    return output if is_video(output) else output / f"{src.stem}_x{scale}{src.suffix.lower()}"


def _in_flight(runner, todo: list[int], inflight: int, one, finish, worked: list) -> None:
    """``one(i, engine)`` for every index of ``todo``, ``inflight`` at a time, each thread with its own
    ``runner.worker()``; results handed to ``finish`` as they complete. An interrupt cancels what has not started
    (outputs are written atomically: nothing half-written is left)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor, as_completed

    local = threading.local()

    def run(i: int):
        if not hasattr(local, "engine"):
            local.engine = runner.worker()
        return one(i, local.engine)

    pool = ThreadPoolExecutor(inflight, thread_name_prefix="upscale")
    try:
        futures = {pool.submit(run, i): i for i in todo}
        for future in as_completed(futures):
            worked[0] += 1
            finish(futures[future], *future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
