"""Video through ``upscale``: every frame upscaled exactly as the same frame saved as an image would be (the same
exact tiling, the same rounding), written by ``imaging.video.VideoWriter`` (timestamps, rate, rotation, colour
description, audio and subtitles kept; renamed into place only when complete).

Decoding, inference and encoding overlap: frames are decoded in a thread of their own, ``inflight`` of them are
upscaled at a time (each worker with its own engine request, the engine's throughput mode), and they are encoded in
order as they come back.
"""

import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from .door import protect_inputs
from .errors import ScnetDeployError
from .imaging.images import round_to_bits
from .imaging.tiling import run_tiled
from .imaging.video import VideoOptions, VideoWriter, decode, is_video, probe  # noqa: F401 (the video API)
from .progress import STEP, Progress, reporter


def upscale_frame(infer, rgb: np.ndarray, scale: int, tile: int | None, halo: int, bits: int) -> np.ndarray:
    """One HxWx3 frame (HxWx4 with alpha; uint8, or uint16 for deep video) upscaled as ``upscale`` does an image:
    float [0, 1], exact tiles, rounded half up to the frame's bit depth; alpha through the same model, as a grey
    image."""
    peak = 65535.0 if bits == 16 else 255.0
    h, w, c = rgb.shape
    out = np.empty((h * scale, w * scale, c), np.uint16 if bits == 16 else np.uint8)
    planes = [(rgb[..., :3], slice(0, 3))] + ([(np.repeat(rgb[..., 3:], 3, axis=2), slice(3, 4))] if c == 4 else [])
    for pixels, target in planes:
        chw = np.ascontiguousarray((pixels.astype(np.float32) / np.float32(peak)).transpose(2, 0, 1))

        def sink(y, x, block, target=target):
            block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=0.0).transpose(1, 2, 0)
            if target.stop - target.start == 1:
                block = block.mean(axis=2, keepdims=True)
            out[y:y + block.shape[0], x:x + block.shape[1], target] = round_to_bits(block, bits)

        run_tiled(infer, chw, scale, tile, halo, sink)
    return out


def in_background(items, depth: int):
    """``items`` produced by a thread of their own, at most ``depth`` ahead of the consumer; an error there is
    raised here, and the thread stops when the consumer does."""
    import queue

    ahead: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()
    end = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(end)
        except BaseException as exc:  # handed to the consumer
            offer(exc)

    thread = threading.Thread(target=produce, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def in_order(work, items, inflight: int, runner):
    """``work(engine, item)`` for every item, ``inflight`` at a time (each thread with its own ``runner.worker()``),
    results yielded in the items' order."""
    if inflight <= 1:
        for item in items:
            yield work(runner, item)
        return
    from concurrent.futures import ThreadPoolExecutor

    local = threading.local()

    def run(item):
        if not hasattr(local, "engine"):
            local.engine = runner.worker()
        return work(local.engine, item)

    pool = ThreadPoolExecutor(inflight, thread_name_prefix="upscale")
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(run, item))
            if len(pending) >= inflight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def upscale_video(runner, src: Path, dst: Path, tile_for, halo: int, options: VideoOptions = VideoOptions(),
                  progress=None, frames_out=None, inflight: int = 1) -> dict:
    """Upscale the video ``src`` into ``dst`` with ``runner``, ``inflight`` frames at a time; ``tile_for(h, w)``
    gives the tile size for a frame. ``frames_out(rgb)``, if given, receives every upscaled frame as it is handed to
    the encoder."""
    say = reporter(progress)
    src, dst = Path(src), Path(dst)
    scale = runner.arch["scale"]
    info = probe(src, scale, options.max_frames, options.stream)
    protect_inputs([src], [dst])
    tile, bits = tile_for(info.height, info.width), 16 if info.deep else 8
    report = {"input": str(src), "output": str(dst), "frames": 0, "corrupt_packets": 0, "copied_streams": [],
              "inflight": inflight, "other_video": list(info.others), "interlaced": info.interlaced,
              "model": model_identity(runner), "tile": tile}

    def work(engine, item):
        rgb, pts = item
        return upscale_frame(engine.infer, rgb, scale, tile, halo, bits), pts

    started = time.perf_counter()
    with VideoWriter(info, dst, scale, options, report) as out:
        _say_what_is_not_kept(say, src.name, info, out, report)
        if out.done:
            say(Progress(f"{src.name}: resuming after {out.done} complete segment(s) of {len(out.cuts)}", STEP))
        if out.done < len(out.cuts):
            frames = in_background(decode(info, report, start=out.resume_pts, max_frames=options.max_frames,
                                          alpha=out.alpha), depth=inflight + 1)
            for up, pts in in_order(work, frames, inflight, runner):
                if frames_out is not None:
                    frames_out(up)
                out.write(up, pts)
                say(frame_progress(src.name, report["frames"], info.frames, time.perf_counter() - started))
    if report["corrupt_packets"]:
        say(Progress(f"{src.name}: {report['corrupt_packets']} corrupt packet(s) skipped", STEP))
    report.update(codec=out.codec, pix_fmt=out.pix_fmt, size=[info.width, info.height], scale=scale,
                  rotation=info.rotation, seconds=time.perf_counter() - started)
    return report


def model_identity(runner) -> str:
    """What identifies the model a video's segments were made with (a resumed run must use the same): the
    artifact's file hashes, or the checkpoint's."""
    import hashlib
    import json

    manifest = getattr(runner, "manifest", None) or {}
    files = manifest.get("files") or {"name": runner.name}
    return hashlib.sha256(json.dumps([files, manifest.get("precision")], sort_keys=True).encode()).hexdigest()


def _say_what_is_not_kept(say, name: str, info, out, report: dict) -> None:
    """An interlaced input or a pixel format changed: said before the first frame, and kept in the report (the
    streams the output cannot carry are known when the file is muxed, at the end: the CLI's last lines name them)."""
    if info.interlaced:
        say(Progress(f"{name}: interlaced: its frames are upscaled as progressive pictures, combing included; "
                     "deinterlace it first for a clean result (ffmpeg -vf bwdif)", STEP))
    if out.pix_fmt != info.pix_fmt:
        report["pix_fmt_changed"] = [info.pix_fmt, out.pix_fmt]
        say(Progress(f"{name}: written as {out.codec} {out.pix_fmt} ({info.pix_fmt} in: {out.codec} does not take "
                     "it)", STEP))


def frame_progress(name: str, done: int, total: int | None, seconds: float) -> Progress:
    """'NAME: frame 12/240, 1.93 fps, ~118 s left'."""
    fps = done / seconds if seconds > 0 else 0.0
    left = f", ~{(total - done) / fps:.0f} s left" if total and fps and total > done else ""
    return Progress(f"{name}: frame {done}{f'/{total}' if total else ''}, {fps:.2f} fps{left}", STEP, done, total)


def parse_video_target(text: str) -> tuple[int, int, float] | Path:
    """``HxW@FPS`` (the output video: 1080x1920@30; every size here is HEIGHTxWIDTH) as (height, width, fps), or the
    path of a video file."""
    if "@" not in text and (is_video(Path(text)) or Path(text).is_file()):
        return Path(text)
    try:
        size, fps = text.lower().split("@")
        h, w = (int(v) for v in size.split("x"))
        rate = float(fps)
        if w < 1 or h < 1 or not rate > 0:
            raise ValueError
        return h, w, rate
    except ValueError:
        raise ScnetDeployError(f"--video {text!r} is not HEIGHTxWIDTH@FPS of the output video; write e.g. "
                               "1080x1920@30, or give a video file.") from None
