"""scnet_deploy/video.py: a generated video (odd size, audio) upscaled frame by frame exactly as the image path
upscales each frame, timestamps and audio kept, nothing left under the output name when a run is interrupted."""

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from conftest import cli, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.upscale import UpscaleOptions, upscale
from scnet_deploy.video import VideoOptions

av = pytest.importorskip("av", reason="PyAV is not installed (pip install -e '.[video]' in the checkout)")

W, H, FRAMES = 17, 13, 6


def make_video(path, codec="ffv1", pix_fmt="bgr0", audio=True, size=(W, H), pts=None, colour=None, rotation=0,
               frames=FRAMES, gop=None):
    """``frames`` frames of W x H noise at 5 fps (``pts``: their timestamps in 1/5 s, irregular for a variable
    frame rate) with 1.2 s of a sine tone (AAC); ``colour``: the stream's colour description (COLOUR names ->
    FFmpeg's values), ``rotation`` its display rotation, ``gop`` its keyframe interval. Returns the frames as RGB."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(frames)]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=5)
        video.width, video.height, video.pix_fmt = *size, pix_fmt
        for key, value in (colour or {}).items():
            setattr(video.codec_context, key, value)
        if rotation:
            video.set_display_rotation(rotation)
        if gop:
            video.codec_context.gop_size = gop
        sound = out.add_stream("aac", rate=48000) if audio else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for key in ("colorspace", "color_range"):
                if key in (colour or {}):
                    setattr(frame, key, colour[key])
            frame.pts, frame.time_base = (i if pts is None else pts[i]), Fraction(1, 5)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if sound is not None:
            t = np.arange(48000 * 6 // 5) / 48000
            samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, samples.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(samples[:, start:start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
    return frames


def decoded(path):
    with av.open(str(path)) as f:
        v = f.streams.video[0]
        frames = [(frame.pts, frame.to_ndarray(format="rgb24")) for frame in f.decode(v)]
        return frames, v.average_rate, [(s.type, s.codec_context.name) for s in f.streams]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_basicsr(tiny_model(2, "mlp", seed=5), tmp_path_factory.mktemp("v") / "tiny_x2.pth")


def test_every_frame_is_the_image_paths_output_and_audio_is_kept(ckpt, tmp_path):
    src = tmp_path / "in.mkv"
    make_video(src)
    [result] = upscale(ckpt, [src], UpscaleOptions(tmp_path / "out.mkv", tile=8, video=VideoOptions(codec="ffv1")))
    assert result["status"] == "done" and result["frames"] == FRAMES and result["copied_streams"] == ["audio aac"]
    inputs, vin, _ = decoded(src)
    outputs, vout, streams = decoded(tmp_path / "out.mkv")
    assert streams == [("video", "ffv1"), ("audio", "aac")] and vout == vin == 5
    assert [pts for pts, _ in outputs] == [pts for pts, _ in inputs]
    for i, ((_, lr), (_, sr)) in enumerate(zip(inputs, outputs)):  # lossless: the decoded bytes are the frames
        Image.fromarray(lr).save(tmp_path / f"f{i}.png")
        [image] = upscale(ckpt, [tmp_path / f"f{i}.png"], UpscaleOptions(tmp_path / f"f{i}_x2.png"))
        assert np.array_equal(sr, np.asarray(Image.open(tmp_path / f"f{i}_x2.png"))), i
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mkv")) as b:  # audio copied, not re-encoded
        packets = lambda f: [bytes(p) for p in f.demux(f.streams.audio[0]) if p.size]  # noqa: E731
        assert packets(a) == packets(b)


def test_h264_defaults_from_the_input_and_frames_handed_to_the_encoder_match(ckpt, tmp_path):
    from scnet_deploy.runtime import open_model
    from scnet_deploy.video import upscale_frame, upscale_video

    src = tmp_path / "in.mp4"
    make_video(src, codec="libx264", pix_fmt="yuv420p", audio=False, size=(W + 1, H + 1))  # 4:2:0 is even-sized
    handed = []
    with open_model(ckpt) as runner:
        result = upscale_video(runner, src, tmp_path / "out.mp4", lambda h, w: None, 2, frames_out=handed.append)
        inputs, _, _ = decoded(src)
        assert result["codec"] == "libx264" and result["pix_fmt"] == "yuv420p" and len(handed) == FRAMES
        for (_, lr), sr in zip(inputs, handed):
            assert np.array_equal(sr, upscale_frame(runner.infer, lr, 2, None, 2, 8))
            # exact tiles: the same output up to float rounding (a pixel at .5 may round the other way)
            assert np.abs(sr.astype(int) - upscale_frame(runner.infer, lr, 2, 5, 2, 8)).max() <= 1
    assert decoded(tmp_path / "out.mp4")[0][0][1].shape == (2 * H + 2, 2 * W + 2, 3)


def test_an_interrupted_run_leaves_nothing_under_the_output_name(ckpt, tmp_path, monkeypatch):
    import scnet_deploy.video as video

    src = tmp_path / "in.mkv"
    make_video(src, audio=False)
    calls = []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    real = video.upscale_frame
    monkeypatch.setattr(video, "upscale_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upscale(ckpt, [src], UpscaleOptions(tmp_path / "out.mkv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_video_refusals_are_one_line(ckpt, tmp_path):
    (tmp_path / "fake.mp4").write_bytes(b"not a video")
    with pytest.raises(ScnetDeployError, match="not a video FFmpeg can read"):
        upscale(ckpt, [tmp_path / "fake.mp4"], UpscaleOptions(tmp_path / "o.mp4"))
    src = tmp_path / "in.mkv"
    make_video(src, audio=False)
    with pytest.raises(ScnetDeployError, match="overwrite its input"):
        upscale(ckpt, [src], UpscaleOptions(src))
    x3 = save_basicsr(tiny_model(3, "mlp"), tmp_path / "x3.pth")
    with pytest.raises(ScnetDeployError, match="yuv420p cannot hold 51x39 frames .* --pix-fmt yuv444p"):
        upscale(x3, [src], UpscaleOptions(tmp_path / "o.mp4", video=VideoOptions(codec="libx264",
                                                                                  pix_fmt="yuv420p")))
    with pytest.raises(ScnetDeployError, match="one video at a time"):
        upscale(ckpt, [src, src], UpscaleOptions(tmp_path / "o"))
    assert not (tmp_path / "o.mp4").exists()


def test_the_cli_upscales_a_video_and_says_what_it_kept(ckpt, tmp_path):
    src = tmp_path / "clip.mkv"
    make_video(src)
    run = cli("upscale", ckpt, src, "-o", tmp_path / "up", "--codec", "ffv1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "up" / "clip_x2.mkv").is_file() and f"{FRAMES} frames, ffv1" in run.stdout
    assert "kept: audio aac" in run.stdout and "1 upscaled, 0 failed" in run.stdout


def test_bench_video_says_whether_each_engine_keeps_up(ckpt, tmp_path):
    import json

    from scnet_deploy.bench import BenchOptions, bench, rates_text, video_verdict
    from scnet_deploy.video import parse_video_target

    result = bench([ckpt], BenchOptions(runs=2, warmup=0, baselines=False, video=(48, 64, 30)))
    assert result["options"]["shapes"] == [[24, 32]]  # the LR frame: 48x64 over the scale 2
    v = result["video"]
    assert v["codec"] == "libx264" and v["decode_ms"] > 0 and v["encode_ms"] > 0
    m = result["models"][0]
    ms = m["shapes"][0]["median_ms"]
    assert m["video"] == video_verdict(ms, v, 30.0) and m["video"]["fps"] == pytest.approx(1000 / ms)
    assert m["video"]["fps_with_codec"] < m["video"]["fps"]
    slow = video_verdict(50.0, {"decode_ms": 1.0, "encode_ms": 2.0}, 24)  # 20 fps alone: not real time at 24
    assert not slow["real_time"] and not slow["real_time_with_codec"]
    fast = video_verdict(10.0, {"decode_ms": 10.0, "encode_ms": 20.0}, 30)  # 100 fps alone, 25 with the codec
    assert fast["real_time"] and not fast["real_time_with_codec"]
    assert fast["keeps_up_with"] == [24, 25, 30, 50, 60] and fast["keeps_up_with_codec"] == [24, 25]
    assert slow["keeps_up_with_codec"] == [] and rates_text(slow) == "none" and rates_text(fast) == "24 fps, 25 fps"
    assert parse_video_target("1080x1920@29.97") == (1080, 1920, 29.97)
    with pytest.raises(ScnetDeployError, match="HEIGHTxWIDTH@FPS"):
        parse_video_target("1080p")
    with pytest.raises(ScnetDeployError, match="not a multiple of the models' scale 2"):
        bench([ckpt], BenchOptions(runs=1, baselines=False, video=(48, 65, 30)))
    run = cli("bench", ckpt, "--video", "48x64@24", "--runs", "1", "--no-baselines", "--json", tmp_path / "b.json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "keeping up with 48x64 at 24 fps" in run.stdout
    assert json.loads((tmp_path / "b.json").read_text())["models"][0]["video"]["target_fps"] == 24
    from scnet_deploy.report import report

    page = report([json.loads((tmp_path / "b.json").read_text())], tmp_path / "r").read_text()
    assert "### Keeping up with 48x64 at 24 fps" in page and "| fps with decode+encode |" in page


def test_bench_video_file_times_its_frame_size_rate_and_codec(ckpt, tmp_path):
    """A video file: the LR shape is its frame size, the target its size times the scale at its frame rate, and
    the codec timed is its own (decoded from the file, encoded as upscale would encode it)."""
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.video import parse_video_target

    src = tmp_path / "clip.mp4"
    make_video(src, codec="libx264", pix_fmt="yuv420p", size=(32, 24))
    assert parse_video_target(str(src)) == src
    result = bench([ckpt], BenchOptions(runs=1, warmup=0, baselines=False, video=src))
    assert result["options"]["shapes"] == [[24, 32]]
    v = result["video"]
    assert v["target"] == [48, 64, 5.0] and v["source"] == str(src) and v["codec"] == "libx264"
    assert v["frames"] == FRAMES and v["decode_ms"] > 0 and v["encode_ms"] > 0
    assert result["models"][0]["video"]["target_fps"] == 5.0
    ffv1 = tmp_path / "clip.mkv"
    make_video(ffv1, size=(32, 24))
    assert bench([ckpt], BenchOptions(runs=1, warmup=0, baselines=False, video=ffv1))["video"]["codec"] == "ffv1"
    run = cli("bench", ckpt, "--video", src, "--runs", "1", "--no-baselines")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "keeping up with 48x64 at 5 fps (clip.mp4 upscaled)" in " ".join(run.stdout.split())
    run = cli("bench", ckpt, "--video", tmp_path / "missing.mp4", "--runs", "1", "--no-baselines")
    assert run.returncode != 0 and "does not exist" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_a_1080p_from_270p_x4_clip_keeps_its_audio_and_every_frame_is_the_image_paths(tmp_path):
    """The shipped reference SCNet-T x4 as an ONNX Runtime engine; 6 frames of 480x270 with audio -> 1920x1080
    (FFV1: the decoded bytes are the frames handed to the encoder)."""
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.pipeline import reference_checkpoint

    engine = export(reference_checkpoint(), ExportOptions(output=tmp_path / "onnx")).directory
    src = tmp_path / "clip.mkv"
    make_video(src, size=(480, 270))
    [result] = upscale(engine, [src], UpscaleOptions(tmp_path / "clip_x4.mkv", video=VideoOptions("ffv1")))
    inputs, _, _ = decoded(src)
    outputs, rate, streams = decoded(tmp_path / "clip_x4.mkv")
    assert result["frames"] == FRAMES and streams == [("video", "ffv1"), ("audio", "aac")] and rate == 5
    assert [pts for pts, _ in outputs] == [pts for pts, _ in inputs] and outputs[0][1].shape == (1080, 1920, 3)
    for i, ((_, lr), (_, sr)) in enumerate(zip(inputs, outputs)):
        Image.fromarray(lr).save(tmp_path / f"f{i}.png")
        upscale(engine, [tmp_path / f"f{i}.png"], UpscaleOptions(tmp_path / f"f{i}_x4.png"))
        assert np.array_equal(sr, np.asarray(Image.open(tmp_path / f"f{i}_x4.png"))), i


def test_ten_bit_video_stays_ten_bit(ckpt, tmp_path):
    from scnet_deploy.runtime import open_model
    from scnet_deploy.video import upscale_video

    src = tmp_path / "deep.mkv"
    make_video(src, codec="libx265", pix_fmt="yuv420p10le", audio=False, size=(64, 48))
    handed = []
    with open_model(ckpt) as runner:
        result = upscale_video(runner, src, tmp_path / "out.mkv", lambda h, w: None, 2, frames_out=handed.append)
    assert result["codec"] == "libx265" and result["pix_fmt"] == "yuv420p10le" and result["frames"] == FRAMES
    assert {f.dtype for f in handed} == {np.dtype(np.uint16)}  # upscaled from 16-bit RGB, not 8
    with av.open(str(tmp_path / "out.mkv")) as f:
        assert f.streams.video[0].codec_context.pix_fmt == "yuv420p10le"


def test_flicker_is_how_differently_from_the_reference_an_engine_changes_between_frames():
    from scnet_deploy.gate import flicker

    rng = np.random.default_rng(0)
    still = rng.integers(20, 230, (16, 16, 3)).astype(np.uint8)
    assert flicker(still, still, still, still, 2) == (0.0, 0.0)
    shifted = (still.astype(int) + 3).astype(np.uint8)  # off the reference, steadily: no flicker
    assert flicker(shifted, shifted, still, still, 2) == (0.0, 0.0)
    shimmer = [(still.astype(int) + d).astype(np.uint8) for d in (-3, 3)]  # a static scene moving 6 levels
    levels, share = flicker(shimmer[0], shimmer[1], still, still, 2)
    assert levels == pytest.approx(6.0) and share == 1.0
    moving = (still.astype(int) + 10).clip(0, 255).astype(np.uint8)  # the scene itself changes: followed, no flicker
    assert flicker(still, moving, still, moving, 2) == (0.0, 0.0)


def test_validate_frames_reports_flicker(tiny, tmp_path):
    import json

    from conftest import smooth_hr_folder
    from scnet_deploy.validate import ValidateOptions, validate

    ckpt, onnx = tiny
    frames = smooth_hr_folder(tmp_path / "clip", 3, (24, 20))
    result = validate([ckpt, onnx], ValidateOptions(frames, 2, frames=True))
    engine = next(m for m in result["models"] if m["kind"] == "artifact")
    assert engine["flicker_share"] == 0.0 and engine["flicker_levels"] < 0.01  # FP32 ONNX follows PyTorch
    assert sum("flicker_share" in r for r in engine["per_image"]) == 2  # two transitions between three frames
    run = cli("validate", ckpt, onnx, "--dataset", frames, "--scale", "2", "--frames", "--json", tmp_path / "v.json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "flicker (consecutive frames" in run.stdout and "0.00% of pixels" in run.stdout
    assert "flicker_share" in json.loads((tmp_path / "v.json").read_text())["models"][1]


def test_validate_on_a_video_file_scores_its_frames_and_gates_flicker(tiny, tmp_path):
    """A video as --dataset: its frames (the first --limit) are the HR images, LR made by MATLAB bicubic, flicker
    measured between consecutive frames and held to the gate's visible share."""
    from scnet_deploy.gate import AccuracyGate
    from scnet_deploy.imaging.datasets import load_dataset
    from scnet_deploy.validate import ValidateOptions, validate

    ckpt, onnx = tiny
    src = tmp_path / "street.mkv"
    frames = make_video(src, size=(24, 20))
    data = load_dataset(src, 2, limit=4)
    assert data.consecutive and [p.name for p in data] == [f"frame{i:05d}" for i in range(4)]
    assert np.array_equal(data[1].hr, frames[1][:20, :24]) and data[1].lr.shape == (10, 12, 3)
    result = validate([ckpt, onnx], ValidateOptions(src, 2, budget_db=0.1))
    engine = next(m for m in result["models"] if m["kind"] == "artifact")
    assert result["images"] == FRAMES and engine["within_budget"]
    assert engine["gate"]["street"]["flicker_share"] == 0.0 and engine["flicker_levels"] < 0.01
    run = cli("validate", ckpt, onnx, "--dataset", src, "--scale", "2", "--limit", "3")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "street x2: 3 images" in " ".join(run.stdout.split()) and "flicker (consecutive frames" in run.stdout

    def still(name, share=0.0):
        return {"name": name, "drift_db": 0.0, "ref_psnr_y": 30.0, "visible_share": 0.0, "flicker_share": share}

    assert AccuracyGate().judge("clip", [still("frame00001"), still("frame00002", 0.0009)]).passed
    shimmer = AccuracyGate().judge("clip", [still("frame00001"), still("frame00002", 0.02)])
    assert not shimmer.passed and "2.00% of the pixels of frame00002 change from the frame before" in shimmer.reason
    assert "visible_share" in AccuracyGate().judge("photo", [{**still("a"), "flicker_share": 0.0}]).to_dict()


def test_frames_in_flight_give_the_same_video_and_decoding_runs_apart(ckpt, tmp_path, monkeypatch):
    import threading

    import scnet_deploy.video as video

    src = tmp_path / "in.mkv"
    make_video(src, audio=False)
    threads = set()
    real = video.decode

    def decode(*args, **kw):
        for item in real(*args, **kw):
            threads.add(("decode", threading.current_thread().name))
            yield item

    monkeypatch.setattr(video, "decode", decode)
    one = upscale(ckpt, [src], UpscaleOptions(tmp_path / "one.mkv", inflight=1, video=VideoOptions("ffv1")))[0]
    three = upscale(ckpt, [src], UpscaleOptions(tmp_path / "three.mkv", inflight=3, video=VideoOptions("ffv1")))[0]
    assert one["inflight"] == 1 and three["inflight"] == 3 and three["frames"] == FRAMES
    assert {name for _, name in threads} == {"decode"}  # never on the thread that encodes
    a, b = decoded(tmp_path / "one.mkv")[0], decoded(tmp_path / "three.mkv")[0]
    assert [p for p, _ in a] == [p for p, _ in b] and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_variable_frame_rate_rotation_and_colour_are_kept(ckpt, tmp_path):
    from scnet_deploy.runtime import open_model
    from scnet_deploy.video import upscale_video

    bt709 = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}
    src = tmp_path / "in.mkv"
    pts = [0, 1, 3, 4, 7, 8]
    make_video(src, codec="ffv1", pix_fmt="yuv444p", audio=False, pts=pts, colour=bt709, rotation=90)
    handed = []
    with open_model(ckpt) as runner:
        upscale_video(runner, src, tmp_path / "out.mkv", lambda h, w: None, 2, frames_out=handed.append)
    with av.open(str(tmp_path / "out.mkv")) as f:
        v = f.streams.video[0]
        assert {k: getattr(v.codec_context, k) for k in bt709} == bt709
        frames = list(f.decode(v))
    assert [fr.pts * fr.time_base for fr in frames] == [Fraction(p, 5) for p in pts] and frames[0].rotation == 90
    # RGB -> YUV with the declared BT.709 matrix and back: rounding only (BT.601 would move red by 14 levels)
    worst = max(np.abs(fr.to_ndarray(format="rgb24").astype(int) - h).max() for fr, h in zip(frames, handed))
    assert worst <= 3


def test_a_corrupt_packet_is_reported_and_the_run_goes_on(ckpt, tmp_path):
    src = tmp_path / "in.mp4"
    make_video(src, codec="libx264", pix_fmt="yuv420p", audio=False, size=(W + 1, H + 1))
    with av.open(str(src)) as f:
        packets = [(p.pos, p.size) for p in f.demux(f.streams.video[0]) if p.size]
    data = bytearray(src.read_bytes())
    pos, size = packets[3]
    data[pos + 4:pos + size] = np.random.default_rng(1).integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    src.write_bytes(bytes(data))
    [result] = upscale(ckpt, [src], UpscaleOptions(tmp_path / "out.mp4"))
    assert result["status"] == "done" and result["corrupt_packets"] == 1 and result["frames"] == FRAMES - 1
    assert len(decoded(tmp_path / "out.mp4")[0]) == FRAMES - 1


def test_frame_count_bombs_are_refused_from_the_header_and_while_decoding(ckpt, tmp_path):
    from scnet_deploy.imaging.video import decode, probe

    src = tmp_path / "in.mp4"
    make_video(src, codec="libx264", pix_fmt="yuv420p", audio=False, size=(W + 1, H + 1))
    with pytest.raises(ScnetDeployError, match="declares 6 frames, over the 5 frame limit"):
        upscale(ckpt, [src], UpscaleOptions(tmp_path / "o.mp4", video=VideoOptions(max_frames=5)))
    with pytest.raises(ScnetDeployError, match="more than 4 frames; refused"):
        list(decode(probe(src), {}, max_frames=4))
    assert not (tmp_path / "o.mp4").exists()
