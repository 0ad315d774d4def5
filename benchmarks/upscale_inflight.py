"""upscale of a folder, one image at a time vs the throughput mode (several in flight), in turn:
``python benchmarks/upscale_inflight.py ARTIFACT [N]`` makes N copies (default 8) of scikit-image's astronaut at
320x180 (slightly rotated each), upscales the folder twice each way, alternating, and prints the seconds and the
best-of ratio (reading and writing PNGs included: what a user waits for)."""

import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from skimage import data

from scnet_deploy.upscale import UpscaleOptions, upscale


def main(argv=None) -> int:
    argv = argv or sys.argv[1:]
    artifact, count = argv[0], int(argv[1]) if len(argv) > 1 else 8
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        image = Image.fromarray(data.astronaut()).resize((320, 180))
        for i in range(count):
            image.rotate(i * 3).save(folder / f"{i}.png")
        seconds, inflight = {"one at a time": [], "in flight": []}, None
        for _ in range(2):
            for way in seconds:
                shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
                t0 = time.perf_counter()
                results = upscale(artifact, [folder], UpscaleOptions(Path(tmp) / "out",
                                                                     inflight=1 if way == "one at a time" else None))
                seconds[way].append(time.perf_counter() - t0)
                inflight = inflight or (results[0]["inflight"] if way == "in flight" else None)
    best = {way: min(s) for way, s in seconds.items()}
    print(f"{artifact}: {count} images; " + ", ".join(f"{w} {[round(s, 2) for s in ss]} s" for w, ss in seconds.items())
          + f"; {inflight} in flight; best {best['one at a time']:.2f} -> {best['in flight']:.2f} s "
          f"({best['one at a time'] / best['in flight']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
