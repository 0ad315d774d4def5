"""Issue 38, point 3 (rows 1, 8, 10, 11, 12, 16, 19): media checked where bytes become pixels. Frame sizes checked
frame by frame, PNG/TIFF chunks bounded before Pillow, transparency kept, the main stream picked by a stated rule
and every other one named, interlacing named, every container/codec pairing checked before the first frame."""

import json
import os
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import one_line_error, save_basicsr, tiny_model
from scnet_deploy.errors import ImageError, ScnetDeployError
from scnet_deploy.upscale import UpscaleOptions, upscale
from scnet_deploy.video import VideoOptions

av = pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]' in the checkout)")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_basicsr(tiny_model(2, num_block=1), tmp_path_factory.mktemp("media") / "m_x2.pth")


def _frames(count, size, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8) for _ in range(count)]


def _write(path, codec, pix_fmt, frames, fmt="rgb24", container_format=None, interlaced=False, rate=5):
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        if interlaced:
            stream.codec_context.flags |= getattr(av.codec.context.Flags, "interlaced_dct", 0x40000)
            stream.options = {"flags": "+ildct+ilme", "x264-params": "interlaced=1"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format=fmt)):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _h264_raw(path, frames):
    return _write(path, "libx264", "yuv420p", frames, container_format="h264")


def test_a_frame_size_change_mid_stream_is_refused_not_squashed(ckpt, tmp_path):
    """Row 1: a raw H.264 file named .mp4: 30 frames at 32x32, then one at 256x256 (a new SPS). All output frames
    were 64x64, the big one squashed, at 10x the memory. Now: one line, before the big frame is upscaled."""
    raw = tmp_path / "a.h264"
    _h264_raw(raw, _frames(30, (32, 32)))
    big = tmp_path / "b.h264"
    _h264_raw(big, _frames(1, (256, 256), seed=1))
    src = tmp_path / "mixed.mp4"
    src.write_bytes(raw.read_bytes() + big.read_bytes())
    with pytest.raises(ScnetDeployError, match=r"frame 31 is 256x256, and the video began at 32x32"):
        upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "out.mp4", max_memory_mb=100))
    assert not (tmp_path / "out.mp4").exists()


def _sparse_png_bomb(path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    data = path.read_bytes()
    end = 8 + 8 + 13 + 4  # signature, IHDR
    with open(path, "wb") as f:
        f.write(data[:end] + struct.pack(">I4s", 2**31 - 1, b"tEXt"))
        f.seek(end + 8 + 2**31 - 1 + 4)
        f.write(data[end:])
    return path


def test_a_png_metadata_chunk_of_2_gb_is_refused_before_pillow_reads_it(ckpt, tmp_path):
    """Row 8: refused, but after 4.28 GB peak and 5-13 s. Now from the chunk's header: MBs, well under a second."""
    bomb = _sparse_png_bomb(tmp_path / "bomb.png")
    code = ("import json, resource, time\nfrom scnet_deploy.imaging.images import read_image\nt = time.time()\n"
            f"try:\n    read_image({str(bomb)!r})\n    said = 'read'\nexcept Exception as e:\n"
            "    said = f'{type(e).__name__} {e}'\nhwm = [int(line.split()[1]) for line in open('/proc/self/status') "
            "if line.startswith('VmHWM')][0]\nprint(json.dumps([said, time.time() - t, hwm]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    said, seconds, peak_kb = json.loads(proc.stdout.strip().splitlines()[-1])
    assert said.startswith("ImageError") and "'tEXt' declares 2147483647 bytes" in said, (said, proc.stderr)
    assert seconds < 2 and peak_kb < 1_000_000, (seconds, peak_kb)  # was 5-13 s and 4.28 GB


def test_tiff_tags_past_their_cap_are_refused(tmp_path):
    path = tmp_path / "bomb.tif"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    first = struct.unpack("<I", data[4:8])[0]
    # the first tag's count made 2^30 values of its type
    struct.pack_into("<I", data, first + 2 + 4, 2**30)
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="over the 67108864 byte limit|past the end"):
        from scnet_deploy.imaging.images import read_image

        read_image(path)


def test_transparency_in_video_is_kept(ckpt, tmp_path):
    """Row 11: FFV1 yuva420p: exit 0, alpha 255 everywhere in the output. Now the alpha plane is upscaled as images'
    is (through the model, as grey) and written."""
    frames = _frames(3, (16, 12), channels=4)
    for f in frames:
        f[..., 3] = 0
        f[:6, :, 3] = 255  # the top half opaque
    src = _write(tmp_path / "alpha.mkv", "ffv1", "yuva420p", frames, fmt="rgba")
    (result,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "up.mkv"))
    assert result["pix_fmt"].startswith("yuva")
    with av.open(str(tmp_path / "up.mkv")) as c:
        out = [f.to_ndarray(format="rgba") for f in c.decode(video=0)]
    assert len(out) == 3 and all(o.shape == (24, 32, 4) for o in out)
    assert all(o[:10, :, 3].min() > 200 and o[14:, :, 3].max() < 50 for o in out)


def test_transparency_that_the_output_cannot_carry_is_refused_with_the_fix(ckpt, tmp_path):
    frames = _frames(2, (16, 12), channels=4)
    src = _write(tmp_path / "alpha.mov", "png", "rgba", frames, fmt="rgba")  # PNG-in-MOV with alpha (row 10)
    with pytest.raises(ScnetDeployError, match=r"has transparency .* -o up\.mkv \(FFV1\)"):
        upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "up.mp4"))
    (result,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "up.mov"))  # the MOV keeps it, as PNG
    assert result["codec"] == "png" and result["pix_fmt"] == "rgba"
    (dropped,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "flat.mp4",
                                                     video=VideoOptions(pix_fmt="yuv420p")))
    assert dropped["pix_fmt"] == "yuv420p"


def test_container_and_codec_pairings_are_checked_before_the_first_frame(ckpt, tmp_path):
    """Row 10: H.264 in, -o out.webm (ValueError webm/libx264); a PNG named .mp4; -o /proc/self/out.mp4: tracebacks.
    Now .webm gets VP9, the still image and the unwritable path are one line each."""
    src = _write(tmp_path / "in.mp4", "libx264", "yuv420p", _frames(3, (16, 12)))
    (result,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "out.webm"))
    assert result["codec"] == "libvpx-vp9"
    with pytest.raises(ScnetDeployError, match="container cannot hold libx264"):
        upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "x.webm", video=VideoOptions(codec="libx264")))
    still = tmp_path / "still.mp4"
    Image.fromarray(_frames(1, (16, 12))[0]).save(still, format="PNG")
    with pytest.raises(ScnetDeployError, match="is a still image"):
        upscale(ckpt, [still], UpscaleOptions(output=tmp_path / "s.mp4"))
    (tmp_path / "good.mp4").write_bytes(b"a file")
    with pytest.raises(ScnetDeployError, match="is a file, not a folder"):  # row 19
        upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "good.mp4" / "out.mp4"))
    proc = subprocess.run([sys.executable, "-m", "scnet_deploy", "upscale", str(ckpt), str(src), "-o",
                           "/proc/self/out.mp4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot write" in one_line_error(proc)


def test_the_main_stream_is_picked_by_rule_and_the_others_are_named(ckpt, tmp_path):
    """Row 12: an MKV whose stream 0 is a 1-frame 16x16 video and stream 1 the real 5-frame video: "1 frames". Now
    FFmpeg's best stream (most frames) is upscaled, the other named; --stream picks one."""
    src = tmp_path / "two.mkv"
    small, real = _frames(1, (16, 16)), _frames(5, (24, 20), seed=2)
    with av.open(str(src), "w") as out:
        s0 = out.add_stream("ffv1", rate=5)
        s0.width, s0.height, s0.pix_fmt = 16, 16, "yuv420p"
        s1 = out.add_stream("ffv1", rate=5)
        s1.width, s1.height, s1.pix_fmt = 24, 20, "yuv420p"
        for i in range(5):
            if i < 1:
                for p in s0.encode(av.VideoFrame.from_ndarray(small[i], format="rgb24")):
                    out.mux(p)
            for p in s1.encode(av.VideoFrame.from_ndarray(real[i], format="rgb24")):
                out.mux(p)
        for s in (s0, s1):
            for p in s.encode(None):
                out.mux(p)
    (result,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "up.mkv"))
    assert result["frames"] == 5 and result["size"] == [24, 20]
    assert any("stream 0: video ffv1 16x16" in d for d in result["dropped_streams"])
    (first,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "s0.mkv", video=VideoOptions(stream=0)))
    assert first["frames"] == 1 and first["size"] == [16, 16]
    with pytest.raises(ScnetDeployError, match=r"no video stream 7; its video streams are \[0, 1\]"):
        upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "s7.mkv", video=VideoOptions(stream=7)))


def test_dropped_streams_and_interlacing_are_printed(ckpt, tmp_path):
    """Row 16: a stream the output container cannot hold was dropped (`dropped_streams` never printed; PCM into MP4
    was even a traceback at the header), and interlaced H.264 was upscaled without a word. Both are now lines of
    the CLI's output; the MKV keeps the stream."""
    src = tmp_path / "pcm.mkv"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=5)
        video.width, video.height, video.pix_fmt = 16, 12, "yuv420p"
        video.options = {"x264-params": "interlaced=1"}
        audio = out.add_stream("pcm_s16le", rate=8000)
        for i, rgb in enumerate(_frames(5, (16, 12))):
            for p in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.int16), format="s16", layout="mono")
        sound.sample_rate, sound.pts = 8000, 0
        for s in (audio, video):
            for p in (list(s.encode(sound)) if s is audio else []) + list(s.encode(None)):
                out.mux(p)
    proc = subprocess.run([sys.executable, "-m", "scnet_deploy", "upscale", str(ckpt), str(src), "-o",
                           str(tmp_path / "up.mp4")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "not copied" in proc.stdout and "audio pcm_s16le" in proc.stdout, proc.stdout
    assert "interlaced" in proc.stdout, proc.stdout
    (kept,) = upscale(ckpt, [src], UpscaleOptions(output=tmp_path / "up.mkv"))
    assert kept["copied_streams"] == ["audio pcm_s16le"] and not kept.get("dropped_streams")


def test_two_upscales_to_one_output_at_once_stop_the_second(ckpt, tmp_path):
    """Row 19: the later rename won silently."""
    src = _write(tmp_path / "in.mkv", "ffv1", "yuv420p", _frames(40, (64, 48)))
    first = subprocess.Popen([sys.executable, "-m", "scnet_deploy", "upscale", str(ckpt), str(src), "-o",
                              str(tmp_path / "out.mkv")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(".out.mkv.parts/segment-*")):
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "scnet_deploy", "upscale", str(ckpt), str(src), "-o",
                             str(tmp_path / "out.mkv")], capture_output=True, text=True, timeout=120)
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode == 2 and "is writing" in one_line_error(second)


def _gop_video(path, frames=30, gop=5):
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 24, 16, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"keyint": str(gop), "min-keyint": str(gop), "sc_threshold": "0"}
        for _ in range(frames):
            rgb = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
            for p in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


def test_a_video_killed_halfway_resumes_and_ends_byte_identical(ckpt, tmp_path, monkeypatch):
    """Row 20 (point 5): a 10-hour upscale killed at 90% kept nothing. Segments (cut at keyframes) are kept as they
    complete; the same command continues from the first missing one and the file it ends with is byte for byte an
    uninterrupted run's (FFV1, lossless). The output name appears only when complete."""
    import scnet_deploy.video as video

    src = _gop_video(tmp_path / "in.mp4")
    options = lambda out: UpscaleOptions(out, video=VideoOptions(codec="ffv1", segment_s=1.0))  # noqa: E731
    (tmp_path / "whole").mkdir()
    (whole,) = upscale(ckpt, [src], options(tmp_path / "whole" / "out.mkv"))
    assert whole["frames"] == 30 and whole["resumed_segments"] == 0

    real, calls = video.upscale_frame, []

    def killed_at_half(*args, **kw):
        calls.append(1)
        if len(calls) == 17:  # frames 0-15 upscaled: the 16th opened the fourth segment, closing the third
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(video, "upscale_frame", killed_at_half)
    (tmp_path / "resumed").mkdir()
    out = tmp_path / "resumed" / "out.mkv"
    with pytest.raises(KeyboardInterrupt):
        upscale(ckpt, [src], options(out))
    assert not out.exists()
    kept = sorted(p.name for p in (tmp_path / "resumed" / ".out.mkv.parts").glob("segment-*.nut"))
    assert kept == [f"segment-{i:05d}.nut" for i in range(3)], kept  # frames 0-14: three complete 1 s segments
    monkeypatch.setattr(video, "upscale_frame", real)
    (resumed,) = upscale(ckpt, [src], options(out))
    assert resumed["resumed_segments"] == 3 and resumed["frames_encoded"] == 15 and resumed["frames"] == 30
    assert out.read_bytes() == (tmp_path / "whole" / "out.mkv").read_bytes()
    assert not (tmp_path / "resumed" / ".out.mkv.parts").exists()


def test_segments_of_another_model_or_input_are_not_reused(ckpt, tmp_path, monkeypatch):
    import scnet_deploy.video as video

    src = _gop_video(tmp_path / "in.mp4")
    options = UpscaleOptions(tmp_path / "out.mkv", video=VideoOptions(codec="ffv1", segment_s=1.0))
    real, calls = video.upscale_frame, []

    def killed(*args, **kw):
        calls.append(1)
        if len(calls) == 12:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(video, "upscale_frame", killed)
    with pytest.raises(KeyboardInterrupt):
        upscale(ckpt, [src], options)
    monkeypatch.setattr(video, "upscale_frame", real)
    other = save_basicsr(tiny_model(2, num_block=2), tmp_path / "other_x2.pth")
    (result,) = upscale(other, [src], options)
    assert result["resumed_segments"] == 0 and result["frames_encoded"] == 30
