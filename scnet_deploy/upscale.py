"""The ``upscale`` verb: images through any model (checkpoint or engine), tiled exactly within a memory limit.

Grey images stay grey (run as RGB with equal channels, averaged back); alpha is upscaled separately through the
same model and reattached; 16-bit stays 16-bit (PNG). Every output tile is checked for NaN/Inf, every image for
collapse (constant output); both are reported per image.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ScnetDeployError
from .images import IMAGE_SUFFIXES, WRITE_SUFFIXES, list_images, read_image, round_to_bits, write_image
from .options import RuntimeOptions
from .progress import Progress, reporter
from .tiling import auto_tile, run_tiled


@dataclass(frozen=True)
class UpscaleOptions:
    output: Path
    tile: int | None = None  # LR pixels; None: chosen from max_memory_mb
    overlap: int | None = None  # halo in LR pixels; None: the receptive radius (never less)
    max_memory_mb: int = 1024
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


def _inputs(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise ScnetDeployError(f"folder '{p}' has no images ({', '.join(IMAGE_SUFFIXES)}).")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ScnetDeployError(f"input '{p}' does not exist.")
    if not files:
        raise ScnetDeployError("upscale needs at least one INPUT image or folder.")
    return files


def _destinations(files: list[Path], output: Path, scale: int) -> list[Path]:
    if output.suffix.lower() in WRITE_SUFFIXES:
        if len(files) != 1:
            raise ScnetDeployError(f"--output '{output}' is a file but {len(files)} inputs were given; pass a folder.")
        return [output]
    if output.suffix and output.suffix.lower() in IMAGE_SUFFIXES:
        raise ScnetDeployError(f"cannot write '{output.suffix}'; output formats are {', '.join(WRITE_SUFFIXES)}.")
    dests = []
    for f in files:
        suffix = f.suffix.lower() if f.suffix.lower() in WRITE_SUFFIXES else ".png"
        dests.append(output / f"{f.stem}_x{scale}{suffix}")
    return dests


def upscale(model: str | Path, inputs: list[str | Path], options: UpscaleOptions, progress=None) -> list[dict]:
    from .runtime import open_model

    say = reporter(progress)
    files = _inputs([Path(p) for p in inputs])
    with open_model(model, options.runtime) as runner:
        arch = runner.arch
        scale, radius, in_ch = arch["scale"], arch["receptive_radius"], arch["num_in_ch"]
        if in_ch != 3:
            raise ScnetDeployError(f"upscale supports 3-channel models; '{model}' takes {in_ch} channels.")
        halo = radius if options.overlap is None else options.overlap
        if halo < radius:
            raise ScnetDeployError(f"--overlap {options.overlap} is smaller than the receptive radius ({radius} LR px),"
                                   f" so tiles would not match the whole-image output; use --overlap {radius} or more.")
        output = Path(options.output)
        dests = _destinations(files, output, scale)
        if output.suffix.lower() not in WRITE_SUFFIXES:
            output.mkdir(parents=True, exist_ok=True)
        max_crop = runner.size_range.max
        results = []
        for src, dst in zip(files, dests):
            image = read_image(src)
            h, w, c = image.pixels.shape
            tile = options.tile if options.tile is not None else auto_tile(
                h, w, arch["num_feat"], scale, halo, options.max_memory_mb, max_crop)
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
            results.append(report)
            say(Progress(f"upscaled {src.name}", done=len(results), total=len(files)))
    return results
