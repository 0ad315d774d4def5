"""Can an engine keep up with a video here, and does ``bench --video`` predict what ``upscale`` does?

``python benchmarks/video_realtime.py ARTIFACT... [--frames N] [--out FILE]`` makes an H.264 clip of N frames
(default 48) at 480x270, 24 fps (scikit-image's astronaut, panned), then for each artifact (x4: 1080p out):
``bench --video CLIP`` (the engine's fps alone and with the clip's decode and 1080p encode counted, and the standard
rates it keeps up with) and ``upscale`` of the clip, timed end to end (decode, inference with frames in flight and
encode overlapped: what a user waits for). Prints a markdown table."""

import argparse
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from scnet_deploy.bench import BenchOptions, bench, rates_text
from scnet_deploy.imaging.video import require_av
from scnet_deploy.upscale import UpscaleOptions, upscale


def make_clip(path: Path, frames: int, size=(480, 270), rate: int = 24) -> Path:
    from PIL import Image
    from skimage import data

    av = require_av()
    w, h = size
    wide = np.asarray(Image.fromarray(data.astronaut()).resize((w * 2, h * 2)))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            x, y = (i * 5) % w, (i * 3) % h
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(wide[y:y + h, x:x + w]), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    from scnet_deploy.doctor import machine, machine_line

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip270p.mp4", args.frames)
        result = bench(args.artifacts, BenchOptions(runs=args.runs, warmup=1, baselines=False, video=clip))
        v = result["video"]
        w, h, fps = v["target"]
        lines += [f"Machine: {machine_line(machine())}", "",
                  f"Clip: {args.frames} frames, 480x270 H.264 at {fps:g} fps -> {w}x{h}; {v['codec']} here: decode "
                  f"{v['decode_ms']:.1f} ms a LR frame, encode {v['encode_ms']:.1f} ms a {w}x{h} frame.", "",
                  "| engine | bench: fps alone | bench: fps with decode+encode | keeps up with (codec counted) "
                  "| upscale: s | upscale: fps |", "|---|---|---|---|---|---|"]
        for path, m in zip(args.artifacts, result["models"]):
            started = time.perf_counter()
            [done] = upscale(path, [clip], UpscaleOptions(Path(tmp) / f"up{len(lines)}.mp4"))
            seconds = time.perf_counter() - started
            assert done["status"] == "done" and done["frames"] == args.frames, done
            r = m["video"]
            lines.append(f"| {m['name']} | {r['fps']:.2f} | {r['fps_with_codec']:.2f} | {rates_text(r)} | "
                         f"{seconds:.1f} | {args.frames / seconds:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
