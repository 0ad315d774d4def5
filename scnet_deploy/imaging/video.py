"""Video files in and out, through PyAV (FFmpeg; the ``video`` extra): the checked way in (``probe``: a readable
video stream, frame-size and frame-count limits before a frame is decoded), frames out as RGB arrays (``decode``:
every frame, or one segment between keyframes; a packet FFmpeg cannot decode is reported and skipped), and a writer
that keeps what the input says of itself (``VideoWriter``: timestamps, frame rate, rotation, colour primaries,
transfer, matrix and range; audio and subtitle streams copied without re-encoding) and renames its output into
place only when complete.
"""

import contextlib
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..errors import ScnetDeployError
from ..options import option

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
# decoder name -> the encoder of the same codec (FFmpeg's libraries as PyAV bundles them)
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "ffv1": "ffv1"}
MAX_FRAME_PIXELS = 8192 * 8192  # an upscaled frame; a frame-size bomb is refused before its first frame is decoded
MAX_FRAMES = 1_000_000  # 11.6 hours at 24 fps; a frame-count bomb is refused from its header and while decoding
COLOUR = ("color_primaries", "color_trc", "colorspace", "color_range")
SEGMENT_S = 10.0  # a segment of the output (cut at the input's keyframes) spans at least this much video


def require_av():
    try:
        import av
    except ImportError:
        raise ScnetDeployError("video needs PyAV, which is not installed: pip install 'av>=12'.") from None
    return av


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def quality(codec: str, crf: int | None = None) -> dict:
    """The encoder options for ``crf`` (default 18, visually lossless) where the codec takes one."""
    return {"crf": str(18 if crf is None else crf)} if codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1") else {}


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says of its first video stream, read by ``probe``."""

    path: Path
    width: int
    height: int
    codec: str  # the decoder's name
    pix_fmt: str
    rate: Fraction
    time_base: Fraction
    frames: int | None  # as the container declares it (or duration x rate); None: unknown
    rotation: int = 0  # degrees, from the display matrix
    colour: dict = field(default_factory=dict)  # COLOUR -> FFmpeg's enum value
    metadata: dict = field(default_factory=dict)
    stream: int = 0  # the index of the video stream upscaled (``main_stream``)
    others: tuple[str, ...] = ()  # the file's other video streams, not upscaled: "stream 1: video h264 16x16"
    interlaced: bool = False  # its first frame is interlaced (fields, not a progressive picture)

    @property
    def alpha(self) -> bool:
        """Its frames carry transparency: read and written as RGBA."""
        return has_alpha(self.pix_fmt)

    @property
    def deep(self) -> bool:
        """More than 8 bits a sample: its frames are read and written as 16-bit RGB."""
        return any(tag in self.pix_fmt for tag in ("10", "12", "16"))


def has_alpha(pix_fmt: str) -> bool:
    av = require_av()
    try:
        return any(c.is_alpha for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, AttributeError, TypeError):
        return pix_fmt.startswith(("yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya"))


# Where no --codec is given: the input's codec where it can be encoded into the output's container; else, by the
# output's suffix, what that container holds (with transparency: the codecs that carry it there)
CONTAINER_DEFAULT = {".webm": "libvpx-vp9"}
ALPHA_CODECS = {".mkv": "ffv1", ".mov": "png", ".webm": "libvpx-vp9", ".avi": "ffv1"}


def encoder_formats(av, codec: str) -> list[str]:
    try:
        return [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    except (ValueError, av.error.FFmpegError):
        return []


def choose_encoding(av, info: "VideoInfo", dst: Path, codec: str | None, pix_fmt: str | None) -> tuple[str, str]:
    """(encoder, pixel format) for ``dst``: what was asked, else the input's own where the encoder takes it; a
    transparent input keeps its alpha (an encoder that carries it) or is refused in one line with the fix."""
    suffix = dst.suffix.lower()
    keep_alpha = info.alpha and (pix_fmt is None or has_alpha(pix_fmt))
    if codec is None:
        codec = ENCODERS.get(info.codec, "libx264")
        if suffix in CONTAINER_DEFAULT and codec not in ("libvpx-vp9", "libsvtav1"):  # WebM: VP9 or AV1 only
            codec = CONTAINER_DEFAULT[suffix]
        if keep_alpha and not any(has_alpha(f) for f in encoder_formats(av, codec)):
            codec = ALPHA_CODECS.get(suffix, codec)
    if codec not in av.codecs_available:
        raise ScnetDeployError(f"this FFmpeg cannot encode {codec!r}; pass another --codec.")
    formats = encoder_formats(av, codec)
    if keep_alpha:
        alpha = [f for f in formats if has_alpha(f)]
        if not alpha:
            raise ScnetDeployError(
                f"'{info.path}' has transparency ({info.pix_fmt}) and {codec} cannot carry it into {suffix or dst.name}"
                f"; keep it with -o {dst.with_suffix('.mkv').name} (FFV1), .mov (PNG) or .webm (VP9), or drop it "
                "knowingly with --pix-fmt yuv420p.")
        wanted = pix_fmt or info.pix_fmt
        return codec, wanted if wanted in alpha else alpha[0]
    wanted = pix_fmt or info.pix_fmt
    if formats and wanted not in formats:
        if pix_fmt is not None:
            raise ScnetDeployError(f"{codec} cannot encode --pix-fmt {pix_fmt}; it takes {', '.join(formats[:8])}.")
        preferred = [f for f in (("yuv420p10le", "yuv444p10le") if info.deep else ("yuv420p", "yuv444p", "rgb24"))
                     if f in formats]
        wanted = (preferred or formats)[0]
    return codec, wanted


def make_parent(dst: Path) -> None:
    """The folder ``dst`` goes into, made; a path through a file is one line."""
    try:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ScnetDeployError(f"-o {dst}: a part of that path is a file, not a folder; choose another output "
                               "path.") from None


def main_stream(container, src: Path, wanted: int | None):
    """The video stream to upscale: ``wanted`` (--stream N, the stream's index in the file as ffprobe numbers it),
    else FFmpeg's best video stream (``av_find_best_stream``: not a cover picture, the most frames seen while
    probing, then the highest bit rate)."""
    videos = [v for v in container.streams.video]
    if wanted is not None:
        chosen = [v for v in videos if v.index == wanted]
        if not chosen:
            raise ScnetDeployError(f"'{src}' has no video stream {wanted}; its video streams are "
                                   f"{[v.index for v in videos]} (--stream N).")
        return chosen[0]
    try:
        return container.streams.best("video") or videos[0]
    except (AttributeError, ValueError):
        return videos[0]


def _described(stream) -> str:
    cc = stream.codec_context
    return f"stream {stream.index}: video {cc.name} {cc.width}x{cc.height}"


def _open(av, src: Path):
    try:
        return av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise ScnetDeployError(f"'{src}' is not a video FFmpeg can read ({str(exc).splitlines()[0][:120]}).") from None


def probe(src: Path, scale: int = 1, max_frames: int = MAX_FRAMES, stream: int | None = None) -> VideoInfo:
    """The checked way in: a regular file FFmpeg reads, with a video stream (``main_stream``) whose frames,
    ``scale`` times larger, stay within ``MAX_FRAME_PIXELS``, declaring at most ``max_frames`` frames. The first
    frame is decoded for its rotation (FFmpeg puts the display matrix on frames) and whether it is interlaced."""
    av = require_av()
    src = Path(src)
    if not src.is_file():
        raise ScnetDeployError(f"'{src}' does not exist or is not a file.")
    with _open(av, src) as container:
        if not container.streams.video:
            raise ScnetDeployError(f"'{src}' has no video stream.")
        vin = main_stream(container, src, stream)
        others = tuple(_described(v) for v in container.streams.video if v.index != vin.index)
        if (container.format.name or "").startswith(("png_pipe", "image2", "jpeg_pipe", "webp_pipe", "bmp_pipe")) \
                and (vin.frames or 1) <= 1:
            raise ScnetDeployError(f"'{src}' is a still image ({container.format.name}), not a video, whatever its "
                                   "name says; rename it to its image suffix (.png, .jpg) and upscale it as an image.")
        cc = vin.codec_context
        w, h = cc.width, cc.height
        if not w or not h:
            raise ScnetDeployError(f"'{src}' declares no frame size; it is not a video FFmpeg can read.")
        if w * h * scale * scale > MAX_FRAME_PIXELS:
            raise ScnetDeployError(f"'{src}': {w}x{h} frames upscale to {w * scale}x{h * scale}, over the "
                                   f"{MAX_FRAME_PIXELS} pixel limit.")
        rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
        frames = vin.frames or None
        if frames is None and vin.duration and vin.time_base:
            frames = int(vin.duration * vin.time_base * rate) or None
        if frames is None and container.duration:  # Matroska: the container's duration only, in microseconds
            frames = int(Fraction(container.duration, 1_000_000) * rate) or None
        if frames is not None and frames > max_frames:
            raise ScnetDeployError(f"'{src}' declares {frames} frames, over the {max_frames} frame limit.")
        rotation, interlaced = 0, False
        try:
            first = next(container.decode(vin), None)
            rotation = int(round(first.rotation)) if first is not None else 0
            interlaced = bool(getattr(first, "interlaced_frame", False)) if first is not None else False
        except av.error.FFmpegError:
            pass  # reported by decode, frame by frame
        return VideoInfo(src, w, h, cc.name, cc.pix_fmt or "yuv420p", rate, Fraction(vin.time_base), frames,
                         rotation, {k: getattr(cc, k) for k in COLOUR}, dict(vin.metadata), vin.index, others,
                         interlaced)


def decode(info: VideoInfo, report: dict, start: int | None = None, end: int | None = None,
           max_frames: int = MAX_FRAMES, alpha: bool | None = None) -> Iterator[tuple[np.ndarray, int | None]]:
    """Every frame of the video (``start <= pts < end`` if given: a segment that starts at a keyframe) as
    (HxWx3 RGB, HxWx4 RGBA where it has alpha; uint8, or uint16 for deep video; pts in the stream's time base), in
    presentation order. A packet FFmpeg cannot decode is counted in ``report['corrupt_packets']`` and skipped; more
    than ``max_frames`` frames is refused, and so is a frame whose size is not the stream's (a size change
    mid-stream: its output would be squashed, and the memory model was worked out for the first size)."""
    av = require_av()
    alpha = info.alpha if alpha is None else alpha  # False: an output that drops it knowingly (--pix-fmt)
    fmt = ("rgba64le" if info.deep else "rgba") if alpha else ("rgb48le" if info.deep else "rgb24")
    count = 0
    with _open(av, info.path) as container:
        vin = container.streams[info.stream]
        if start is not None:
            container.seek(start, stream=vin, backward=True, any_frame=False)
        for packet in container.demux(vin):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                report["corrupt_packets"] = report.get("corrupt_packets", 0) + 1
                continue
            for frame in frames:
                if start is not None and (frame.pts is None or frame.pts < start):
                    continue  # before the segment (leading frames of an open GOP): the previous segment's
                if end is not None and frame.pts is not None and frame.pts >= end:
                    return
                count += 1
                if count > max_frames:
                    raise ScnetDeployError(f"'{info.path}' holds more than {max_frames} frames; refused.")
                if (frame.width, frame.height) != (info.width, info.height):
                    raise ScnetDeployError(
                        f"'{info.path}': frame {count} is {frame.width}x{frame.height}, and the video began at "
                        f"{info.width}x{info.height}; a frame size that changes mid-stream is refused (it would be "
                        "squashed into the first size). Split the video where the size changes, or scale it to one "
                        "size first (ffmpeg -vf scale=W:H).")
                yield frame.to_ndarray(format=fmt), frame.pts


def keyframes(info: VideoInfo) -> list[int]:
    """The pts of every keyframe of the video stream, read from its packets without decoding; empty where a
    keyframe has no pts (the video cannot be split)."""
    av = require_av()
    found = []
    with _open(av, info.path) as container:
        for packet in container.demux(container.streams[info.stream]):
            if packet.is_keyframe and packet.size:
                if packet.pts is None:
                    return []
                found.append(packet.pts)
    return sorted(found)


# The audio and subtitle codecs the narrow containers hold (FFmpeg's muxers accept some others at first and fail when
# the header is written: PCM into MP4); .mkv and .mov hold every codec here
CARRIED = {".mp4": {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac", "mov_text"},
           ".webm": {"opus", "vorbis", "webvtt"}}


class _StreamCopier:
    """Audio and subtitle packets of the input, copied into the output without re-encoding, up to the time the
    video has reached (so the output is interleaved whoever produces the frames)."""

    def __init__(self, av, src: Path, sink, report: dict, suffix: str = "") -> None:
        self.container = _open(av, src)
        self.targets = {}
        for other in report.get("other_video", ()):  # one video stream is upscaled; the others are named
            report.setdefault("dropped_streams", []).append(f"{other} (one video stream is upscaled: --stream N)")
        carried = CARRIED.get(suffix.lower())
        for stream in list(self.container.streams.audio) + list(self.container.streams.subtitles):
            if carried is not None and stream.codec_context.name not in carried:
                report.setdefault("dropped_streams", []).append(
                    f"{stream.type} {stream.codec_context.name} (a {suffix} file cannot hold it)")
                continue
            try:
                self.targets[stream.index] = sink.add_stream_from_template(stream)
                report["copied_streams"].append(f"{stream.type} {stream.codec_context.name}")
            except (ValueError, av.error.FFmpegError):
                report.setdefault("dropped_streams", []).append(f"{stream.type} {stream.codec_context.name}")
        streams = [self.container.streams[i] for i in self.targets]
        self.packets = self.container.demux(*streams) if streams else iter(())
        self.pending = None
        self.sink = sink

    def until(self, seconds: float | None) -> None:
        """Copy every packet that starts before ``seconds`` (None: all that is left)."""
        while True:
            packet = self.pending or next(self.packets, None)
            self.pending = None
            if packet is None:
                return
            if packet.dts is None:  # a demuxer's flush packet
                continue
            if seconds is not None and packet.pts is not None and float(packet.pts * packet.time_base) > seconds:
                self.pending = packet
                return
            packet.stream = self.targets[packet.stream.index]
            self.sink.mux(packet)

    def close(self) -> None:
        self.container.close()


@dataclass(frozen=True)
class VideoOptions:
    # FFmpeg encoder name; None: the input's codec where it can be encoded, else libx264
    codec: str | None = option(None, "Video: the FFmpeg encoder (default: the input's codec, else libx264; ffv1 is "
                               "lossless).", cli=Optional[str])
    # quality for x264/x265/VP9/AV1 (default: the encoder's visually lossless 18)
    crf: int | None = option(None, "Video: quality for x264/x265/VP9/AV1 (default 18).", cli=Optional[int])
    # None: the input's (10-bit stays 10-bit)
    pix_fmt: str | None = option(None, "Video: pixel format (default: the input's; 10-bit stays 10-bit).",
                                 cli=Optional[str])
    max_frames: int = MAX_FRAMES  # more is refused (from the header, and while decoding)
    segment_s: float = SEGMENT_S  # a resumable segment of the output spans at least this much video
    # the video stream to upscale, by its index in the file; None: FFmpeg's best (main_stream)
    stream: int | None = option(None, "Video: the index of the video stream to upscale (default: FFmpeg's best: "
                                "not a cover picture, the most frames); the others are named, not copied.",
                                cli=Optional[int])


PARTS_VERSION = 1


def segment_cuts(info: VideoInfo, min_seconds: float = SEGMENT_S) -> list[tuple[int | None, int | None]]:
    """The video cut at its keyframes into segments of at least ``min_seconds``, as (start pts, end pts); None: the
    beginning or the end. One segment where keyframes have no timestamps."""
    keys = keyframes(info)
    cuts, start = [], None
    for key in keys[1:]:
        if float((key - (keys[0] if start is None else start)) * info.time_base) >= min_seconds:
            cuts.append((start, key))
            start = key
    return cuts + [(start, None)]


class VideoWriter:
    """``with VideoWriter(info, dst, scale, options, report) as out: out.write(rgb, pts)`` for every upscaled frame
    in order: encoded with the input's codec, pixel format, timestamps, rotation and colour description (unless
    ``options`` say otherwise), the input's audio and subtitles copied alongside.

    Long jobs resume: the frames are encoded segment by segment (``segment_cuts``: at the input's keyframes), each
    segment a file of its own in ``.NAME.parts/`` beside the output, renamed complete when its last frame is in.
    When every segment is there, their packets are muxed with the copied streams into a temporary file, renamed to
    ``dst``, and the parts removed. A run that ends early keeps the complete segments; the same command run again
    continues from the first missing one (``resume_pts``; ``write`` ignores frames of segments already done), and
    the file it ends with is byte for byte the one an uninterrupted run writes."""

    def __init__(self, info: VideoInfo, dst: Path, scale: int, options: VideoOptions, report: dict) -> None:
        self.av = require_av()
        self.info, self.dst, self.scale, self.report = info, Path(dst), scale, report
        self.codec, self.pix_fmt = choose_encoding(self.av, info, self.dst, options.codec, options.pix_fmt)
        self.alpha = info.alpha and has_alpha(self.pix_fmt)  # frames are written as RGBA
        w, h = info.width * scale, info.height * scale
        if self.pix_fmt.startswith(("yuv420", "yuv422", "yuva420", "yuva422", "nv12")) and (w % 2 or h % 2):
            raise ScnetDeployError(f"{self.pix_fmt} cannot hold {w}x{h} frames (odd sizes); pass --pix-fmt yuv444p "
                                   "(or a lossless --codec ffv1).")
        self.options = options
        self.tmp = self.dst.with_name(f".{self.dst.stem}.tmp-{os.getpid()}{self.dst.suffix}")
        self.parts = self.dst.with_name(f".{self.dst.name}.parts")
        report.setdefault("copied_streams", [])

    # --- the segments -----------------------------------------------------------------------------------------

    def _plan(self) -> dict:
        """What the segments are made of: a segment kept from an earlier run must come from the same input, model
        output size and encoding."""
        st = os.stat(self.info.path)
        return {"version": PARTS_VERSION, "input": str(self.info.path.resolve()), "size": st.st_size,
                "mtime_ns": st.st_mtime_ns, "scale": self.scale, "codec": self.codec, "pix_fmt": self.pix_fmt,
                "crf": self.options.crf, "cuts": [list(c) for c in self.cuts], "model": self.report.get("model"),
                "tile": self.report.get("tile"), "alpha": self.alpha}

    def _segment(self, i: int) -> Path:
        return self.parts / f"segment-{i:05d}.nut"

    def _timestamps(self, i: int) -> Path:
        """The encoder's (pts, dts) of each packet of segment ``i``, in the input's time base: NUT keeps no dts for
        the first packets of a codec with B-frames, and MP4 needs them."""
        return self.parts / f"segment-{i:05d}.json"

    def _open_parts(self) -> None:
        import json
        import shutil

        self.cuts = segment_cuts(self.info, self.options.segment_s)
        plan = self._plan()
        recorded = self.parts / "plan.json"
        try:
            same = json.loads(recorded.read_text()) == plan
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir()
            recorded.write_text(json.dumps(plan))
        for stale in self.parts.glob("*.tmp*"):
            stale.unlink()
        self.done = 0  # segments complete, in order (a later one without an earlier one is not kept)
        while self.done < len(self.cuts) and self._segment(self.done).is_file() and \
                self._timestamps(self.done).is_file():
            self.done += 1
        for later in self.parts.glob("segment-*"):
            if int(later.stem.split("-")[1].split(".")[0]) >= self.done:
                later.unlink()
        self.report["resumed_segments"] = self.done
        self.resume_pts = None if self.done == 0 or self.done == len(self.cuts) else self.cuts[self.done][0]
        self.current, self.seg = None, None  # the segment being written, its index

    def _start_segment(self, i: int) -> None:
        av, info = self.av, self.info
        tmp = self._segment(i).with_suffix(".tmp.nut")
        sink = av.open(str(tmp), "w", format="nut", container_options={"fflags": "+bitexact"})
        stream = sink.add_stream(self.codec, rate=info.rate)
        stream.width, stream.height = info.width * self.scale, info.height * self.scale
        stream.pix_fmt = self.pix_fmt
        stream.time_base = info.time_base
        stream.options = {**quality(self.codec, self.options.crf), "flags": "+bitexact"}
        for key, value in info.colour.items():
            setattr(stream.codec_context, key, value)
        self.current, self.seg, self.seg_stream, self.seg_tmp, self.stamps = sink, i, stream, tmp, []

    def _mux_encoded(self, packets) -> None:
        for packet in packets:
            if packet.size:
                tb = packet.time_base
                self.stamps.append((packet.pts, packet.dts, tb.numerator, tb.denominator))
            self.current.mux(packet)

    def _finish_segment(self) -> None:
        import json

        self._mux_encoded(self.seg_stream.encode(None))
        self.current.close()
        stamps = self._timestamps(self.seg).with_suffix(".tmp.json")
        stamps.write_text(json.dumps(self.stamps))
        os.replace(stamps, self._timestamps(self.seg))
        os.replace(self.seg_tmp, self._segment(self.seg))  # last: a segment file is a complete segment
        self.current = None

    def _index(self, pts: int | None) -> int:
        i = self.seg if self.seg is not None else 0
        while pts is not None and i + 1 < len(self.cuts) and self.cuts[i][1] is not None and pts >= self.cuts[i][1]:
            i += 1
        return i

    # --- frames in ----------------------------------------------------------------------------------------------

    def __enter__(self) -> "VideoWriter":
        make_parent(self.dst)
        self._check_container()
        self._open_parts()
        return self

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        i = self._index(pts)
        if i < self.done:
            return  # a segment an earlier run completed
        if self.current is None or i != self.seg:
            if self.current is not None:
                self._finish_segment()
            self._start_segment(i)
        deep, four = rgb.dtype == np.uint16, rgb.shape[2] == 4
        fmt = ("rgba64le" if deep else "rgba") if four else ("rgb48le" if deep else "rgb24")
        frame = self.av.VideoFrame.from_ndarray(rgb, format=fmt)
        frame.pts, frame.time_base = pts, self.info.time_base
        for key in ("colorspace", "color_range"):  # RGB -> YUV with the matrix the output declares
            if self.info.colour.get(key):
                setattr(frame, key, self.info.colour[key])
        self._mux_encoded(self.seg_stream.encode(frame))
        self.report["frames_encoded"] = self.report.get("frames_encoded", 0) + 1
        self.report["frames"] = self.report.get("frames", 0) + 1  # so far; the muxed count at the end

    def __exit__(self, kind, value, traceback) -> None:
        import shutil

        if kind is not None:  # a run that ends early: its complete segments stay for the next run
            if self.current is not None:
                self.current.close()
                self.seg_tmp.unlink(missing_ok=True)
            for stale in self.parts.glob("*.tmp.*"):
                stale.unlink()
            if not any(self.parts.glob("segment-*.nut")):
                shutil.rmtree(self.parts, ignore_errors=True)
            return
        if self.current is not None:
            self._finish_segment()
        if not all(self._segment(i).is_file() for i in range(len(self.cuts))):
            shutil.rmtree(self.parts, ignore_errors=True)
            raise ScnetDeployError(f"'{self.info.path}' has no frame FFmpeg could decode"
                                   + (" in some of its segments" if self.done or self.report.get("frames_encoded")
                                      else "") + ".")
        self._mux()
        shutil.rmtree(self.parts, ignore_errors=True)

    # --- the file out ---------------------------------------------------------------------------------------------

    def _check_container(self) -> None:
        """The output's container takes this codec: checked before the first frame (a pairing it refuses is one
        line, with the fix), on a throwaway file."""
        av = self.av
        try:
            probe_sink = av.open(str(self.tmp), "w")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise ScnetDeployError(f"-o {self.dst}: cannot write a video there ({str(exc).splitlines()[0][:100]}); "
                                   "choose a writable path whose suffix names a container (.mp4, .mkv, .mov, .webm)."
                                   ) from None
        try:
            probe_sink.add_stream(self.codec, rate=self.info.rate)
        except (ValueError, av.error.FFmpegError) as exc:
            raise ScnetDeployError(
                f"-o {self.dst.name}: a {self.dst.suffix or 'file without a suffix'} container cannot hold "
                f"{self.codec} video ({str(exc).splitlines()[0][:80]}); pass --codec libvpx-vp9 for .webm, or "
                "write .mkv, which holds every codec.") from None
        finally:
            with contextlib.suppress(Exception):
                probe_sink.close()
            self.tmp.unlink(missing_ok=True)

    def _mux(self) -> None:
        """Every segment's packets, in order, with the input's other streams, into ``dst`` (renamed in when
        complete)."""
        import json

        av, info = self.av, self.info
        # bitexact: no random Matroska UIDs or version strings, so the same frames make the same bytes
        sink = av.open(str(self.tmp), "w", container_options={"fflags": "+bitexact"})
        frames = 0
        try:
            with av.open(str(self._segment(0))) as first:
                stream = sink.add_stream_from_template(first.streams.video[0])
            stream.metadata.update(info.metadata)
            for key, value in info.colour.items():  # NUT does not carry the colour description
                setattr(stream.codec_context, key, value)
            stream.codec_context.framerate = info.rate  # the container's average frame rate
            if info.rotation:
                stream.set_display_rotation(info.rotation)
            copier = _StreamCopier(av, info.path, sink, self.report, self.dst.suffix)
            try:
                for i in range(len(self.cuts)):
                    stamps = iter(json.loads(self._timestamps(i).read_text()))
                    with av.open(str(self._segment(i))) as part:
                        for packet in part.demux(part.streams.video[0]):
                            if not packet.size:
                                continue
                            pts, dts, num, den = next(stamps)
                            packet.pts, packet.dts, packet.time_base = pts, dts, Fraction(num, den)
                            if packet.pts is not None:
                                copier.until(float(packet.pts * packet.time_base))
                            packet.stream = stream
                            sink.mux(packet)
                            frames += 1
                copier.until(None)
            finally:
                copier.close()
            sink.close()
            os.replace(self.tmp, self.dst)
        except BaseException:
            with contextlib.suppress(Exception):
                sink.close()
            self.tmp.unlink(missing_ok=True)
            raise
        self.report["frames"] = frames


def synthetic_clip(path: Path, lr: tuple[int, int], rate: float, frames: int = 8) -> Path:
    """An H.264 LR clip (``lr`` = height, width, rounded down to even) of smooth moving content: what
    ``bench --video WxH@FPS`` times the codec on."""
    av = require_av()
    h, w = lr
    h, w = max(h - h % 2, 2), max(w - w % 2, 2)  # 4:2:0
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            rgb = np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], axis=2).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return Path(path)


def codec_ms_per_frame(info: VideoInfo, scale: int, frames: int = 8) -> dict:
    """What decoding a frame of the video and encoding its upscaled frame cost here, ms per frame: the first
    ``frames`` frames decoded to RGB (median), each one's nearest-neighbour upscale encoded as ``upscale`` would
    (``VideoWriter``: the input's codec, pixel format and colour at the default quality; the encoder's lookahead,
    paid at the end, spread over the frames)."""
    import statistics
    import tempfile

    report: dict = {}
    decode_s, encode_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        with VideoWriter(info, Path(tmp) / f"hr{info.path.suffix}", scale, VideoOptions(), report) as sink:
            codec = sink.codec
            source = decode(info, report)
            for _ in range(frames):
                t0 = time.perf_counter()
                item = next(source, None)
                if item is None:
                    break
                decode_s.append(time.perf_counter() - t0)
                rgb, pts = item
                up = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
                t0 = time.perf_counter()
                sink.write(up, pts)
                encode_s.append(time.perf_counter() - t0)
            source.close()
            t0 = time.perf_counter()
        flush = time.perf_counter() - t0  # the encoder's lookahead and the file's trailer
    per_encode = (sum(encode_s) + flush) / max(len(encode_s), 1)
    return {"codec": codec, "decode_ms": statistics.median(decode_s) * 1e3, "encode_ms": per_encode * 1e3,
            "frames": len(encode_s)}
