"""Video through ``upscale``: every frame upscaled exactly as the same frame saved as an image would be (the same
exact tiling, the same rounding), the frame timestamps and rate kept, audio and subtitle streams copied without
re-encoding, written under a temporary name and renamed into place only when complete.

PyAV (FFmpeg) reads and writes the containers: the ``video`` extra. The output codec is the input's where this
FFmpeg can encode it (H.264, HEVC, VP9, AV1, FFV1), else H.264; its pixel format is the input's, so 10-bit input
stays 10-bit (its frames are upscaled from 16-bit RGB). A packet FFmpeg cannot decode is reported and skipped.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ScnetDeployError
from .imaging.images import round_to_bits
from .imaging.tiling import run_tiled
from .progress import STEP, Progress, reporter

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
# decoder name -> the encoder of the same codec (FFmpeg's libraries as PyAV bundles them)
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "ffv1": "ffv1"}
MAX_FRAME_PIXELS = 8192 * 8192  # a frame-size bomb is refused before its first frame is decoded


@dataclass(frozen=True)
class VideoOptions:
    codec: str | None = None  # FFmpeg encoder name; None: the input's codec where it can be encoded, else libx264
    crf: int | None = None  # quality for x264/x265/VP9/AV1 (default: the encoder's visually lossless 18)
    pix_fmt: str | None = None  # None: the input's (10-bit stays 10-bit)


def _quality(codec: str, crf: int | None = None) -> dict:
    """The encoder options for ``crf`` (default 18, visually lossless) where the codec takes one."""
    return {"crf": str(18 if crf is None else crf)} if codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1") else {}


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _require_av():
    try:
        import av
    except ImportError:
        raise ScnetDeployError("video needs PyAV, which is not installed: pip install 'scnet-deploy[video]'.") from None
    return av


def upscale_frame(infer, rgb: np.ndarray, scale: int, tile: int | None, halo: int, bits: int) -> np.ndarray:
    """One HxWx3 frame (uint8, or uint16 for deep video) upscaled as ``upscale`` does an image: float [0, 1], exact
    tiles, rounded half up to the frame's bit depth."""
    peak = 65535.0 if bits == 16 else 255.0
    chw = np.ascontiguousarray((rgb.astype(np.float32) / np.float32(peak)).transpose(2, 0, 1))
    h, w = rgb.shape[:2]
    out = np.empty((h * scale, w * scale, 3), np.uint16 if bits == 16 else np.uint8)

    def sink(y, x, block):
        block = np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=0.0).transpose(1, 2, 0)
        out[y:y + block.shape[0], x:x + block.shape[1]] = round_to_bits(block, bits)

    run_tiled(infer, chw, scale, tile, halo, sink)
    return out


def upscale_video(runner, src: Path, dst: Path, tile_for, halo: int, options: VideoOptions = VideoOptions(),
                  progress=None, frames_out=None) -> dict:
    """Upscale the video ``src`` into ``dst`` with ``runner``; ``tile_for(h, w)`` gives the tile size for a frame.
    ``frames_out(rgb)``, if given, receives every upscaled frame as it is handed to the encoder."""
    av = _require_av()
    say = reporter(progress)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ScnetDeployError(f"'{src}' does not exist.")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ScnetDeployError(f"upscale would overwrite its input '{src}'; choose another --output.")
    scale = runner.arch["scale"]
    tmp = dst.with_name(f".{dst.stem}.tmp-{os.getpid()}{dst.suffix}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    report = {"input": str(src), "output": str(dst), "frames": 0, "corrupt_packets": 0, "copied_streams": []}
    try:
        try:
            source = av.open(str(src))
        except (av.error.FFmpegError, OSError) as exc:
            raise ScnetDeployError(f"'{src}' is not a video FFmpeg can read ({str(exc).splitlines()[0][:120]}).") from None
        with source, av.open(str(tmp), "w") as sink:
            if not source.streams.video:
                raise ScnetDeployError(f"'{src}' has no video stream.")
            vin = source.streams.video[0]
            w, h = vin.codec_context.width, vin.codec_context.height
            if w * h * scale * scale > MAX_FRAME_PIXELS:
                raise ScnetDeployError(f"'{src}': {w}x{h} frames upscale to {w * scale}x{h * scale}, over the "
                                       f"{MAX_FRAME_PIXELS} pixel limit.")
            deep = any(tag in (vin.codec_context.pix_fmt or "") for tag in ("10", "12", "16"))
            codec = options.codec or ENCODERS.get(vin.codec_context.name, "libx264")
            if codec not in av.codecs_available:
                raise ScnetDeployError(f"this FFmpeg cannot encode {codec!r}; pass another codec.")
            rate = vin.average_rate or vin.guessed_rate or 25
            vout = sink.add_stream(codec, rate=rate)
            vout.width, vout.height = w * scale, h * scale
            vout.pix_fmt = options.pix_fmt or vin.codec_context.pix_fmt or "yuv420p"
            vout.time_base = vin.time_base
            if vout.pix_fmt.startswith(("yuv420", "yuv422", "nv12")) and (w * scale % 2 or h * scale % 2):
                raise ScnetDeployError(f"{vout.pix_fmt} cannot hold {w * scale}x{h * scale} frames (odd sizes); pass "
                                       "--pix-fmt yuv444p (or a lossless --codec ffv1).")
            vout.options = _quality(codec, options.crf)
            vout.metadata.update(dict(vin.metadata))  # rotation and the like
            copied = {}
            for stream in list(source.streams.audio) + list(source.streams.subtitles):
                try:
                    copied[stream.index] = sink.add_stream_from_template(stream)
                    report["copied_streams"].append(f"{stream.type} {stream.codec_context.name}")
                except (ValueError, av.error.FFmpegError):
                    report.setdefault("dropped_streams", []).append(f"{stream.type} {stream.codec_context.name}")
            total = vin.frames or None
            started = time.perf_counter()

            def encode(frame) -> None:
                fmt = "rgb48le" if deep else "rgb24"
                rgb = frame.to_ndarray(format=fmt)
                up = upscale_frame(runner.infer, rgb, scale, tile_for(h, w), halo, 16 if deep else 8)
                if frames_out is not None:
                    frames_out(up)
                out = av.VideoFrame.from_ndarray(up, format=fmt)
                out.pts, out.time_base = frame.pts, frame.time_base
                for packet in vout.encode(out):
                    sink.mux(packet)
                report["frames"] += 1
                fps = report["frames"] / (time.perf_counter() - started)
                left = f", ~{(total - report['frames']) / fps:.0f} s left" if total else ""
                say(Progress(f"{src.name}: frame {report['frames']}{f'/{total}' if total else ''}, {fps:.2f} fps{left}",
                             STEP, report["frames"], total))

            for packet in source.demux(vin, *(source.streams[i] for i in copied)):
                if packet.stream.index in copied:
                    if packet.dts is not None:
                        packet.stream = copied[packet.stream.index]
                        sink.mux(packet)
                    continue
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    report["corrupt_packets"] += 1
                    say(Progress(f"{src.name}: a corrupt packet at pts {packet.pts} skipped", STEP))
                    continue
                for frame in frames:
                    encode(frame)
            for packet in vout.encode(None):
                sink.mux(packet)
        if report["frames"] == 0:
            raise ScnetDeployError(f"'{src}' has no frame FFmpeg could decode.")
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    report.update(codec=codec, pix_fmt=vout.pix_fmt, size=[w, h], scale=scale)
    return report


def parse_video_target(text: str) -> tuple[int, int, float]:
    """``WxH@FPS`` (the output video: 1920x1080@30) as (width, height, fps)."""
    try:
        size, fps = text.lower().split("@")
        w, h = (int(v) for v in size.split("x"))
        rate = float(fps)
        if w < 1 or h < 1 or not rate > 0:
            raise ValueError
        return w, h, rate
    except ValueError:
        raise ScnetDeployError(f"--video {text!r} is not WIDTHxHEIGHT@FPS of the output video; write e.g. "
                               "1920x1080@30.") from None


def codec_ms_per_frame(lr: tuple[int, int], scale: int, codec: str = "libx264", frames: int = 8) -> dict:
    """What decoding a frame of the LR video and encoding its upscaled frame costs here, ms per frame (median of
    ``frames``): an H.264 LR clip of smooth moving content is made, decoded, and each frame's nearest-neighbour
    upscale encoded with ``codec`` at its default quality."""
    import statistics
    import tempfile

    av = _require_av()
    h, w = lr
    h, w = h - h % 2, w - w % 2  # 4:2:0
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    clips = [np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], axis=2).astype(np.uint8)
             for i in range(frames)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lr.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            for frame in clips:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        decode, encode = [], []
        with av.open(str(path)) as source, av.open(str(Path(tmp) / "hr.mp4"), "w") as sink:
            vout = sink.add_stream(codec, rate=30)
            vout.width, vout.height, vout.pix_fmt = w * scale, h * scale, "yuv420p"
            vout.options = _quality(codec)
            frames_in = source.decode(video=0)
            while True:
                t0 = time.perf_counter()
                frame = next(frames_in, None)
                if frame is None:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                decode.append(time.perf_counter() - t0)
                up = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
                t0 = time.perf_counter()
                for packet in vout.encode(av.VideoFrame.from_ndarray(up, format="rgb24")):
                    sink.mux(packet)
                encode.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for packet in vout.encode(None):
                sink.mux(packet)
            flush = time.perf_counter() - t0
    per_encode = (sum(encode) + flush) / max(len(encode), 1)  # the encoder's lookahead is paid at the flush
    return {"codec": codec, "decode_ms": statistics.median(decode) * 1e3, "encode_ms": per_encode * 1e3,
            "frames": len(encode)}
