"""Look, not only read: for the worst image of each model, the same crop side by side (bicubic, FP32 reference,
every model) and, under each model, its error vs FP32 amplified, so a reviewer sees what a drift number means.

One PNG per distinct worst image, written with Pillow; the crop is where the worst model's error is largest.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CROP = 96  # HR pixels
ZOOM = 2  # nearest-neighbour enlargement so single-pixel errors are visible
GAIN = 8  # error amplification: |model - FP32| x GAIN, on grey


def _crop_box(error: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side`` window with the largest summed error (integral image)."""
    h, w = error.shape
    side_h, side_w = min(side, h), min(side, w)
    integral = np.pad(error.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[side_h:, side_w:] - integral[:-side_h, side_w:] - integral[side_h:, :-side_w] + \
        integral[:-side_h, :-side_w]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x)


def _tile(image: np.ndarray, label: str) -> Image.Image:
    tile = Image.fromarray(image).resize((image.shape[1] * ZOOM, image.shape[0] * ZOOM), Image.NEAREST)
    canvas = Image.new("RGB", (tile.width, tile.height + 14), "white")
    canvas.paste(tile, (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), label[: tile.width // 6], fill="black")
    return canvas


def comparison(images: list[tuple[str, np.ndarray]], reference: np.ndarray, errors_for: str, out: Path) -> dict:
    """``images``: (label, HxWx3 uint8) in order, the reference among them; one row of crops, one row of error maps
    (vs ``reference``) under each model. The crop is where model ``errors_for`` differs most."""
    worst = dict(images)[errors_for]
    error = np.abs(worst.astype(np.int16) - reference.astype(np.int16)).sum(axis=2)
    y, x = _crop_box(error, CROP)
    sl = np.s_[y:y + CROP, x:x + CROP]
    crops = [_tile(img[sl], label) for label, img in images]
    maps = []
    for label, img in images:
        diff = np.abs(img[sl].astype(np.int16) - reference[sl].astype(np.int16)) * GAIN
        maps.append(_tile(np.clip(diff, 0, 255).astype(np.uint8), f"|err| x{GAIN}"))
    w, h = crops[0].width, crops[0].height
    sheet = Image.new("RGB", (w * len(crops), h * 2), "white")
    for i, (c, m) in enumerate(zip(crops, maps)):
        sheet.paste(c, (i * w, 0))
        sheet.paste(m, (i * w, h))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return {"file": out.name, "path": str(out), "crop": [y, x, CROP], "gain": GAIN}


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def worst_image_comparisons(result: dict, sets, outputs, scale: int, folder: Path) -> list[dict]:
    """One comparison per distinct worst image among the models with a drift; returns what was written."""
    from .images import to_u8_hwc
    from .resize import imresize_u8

    names = [d["name"] for d in result["datasets"]]
    rows = result["models"]
    ref_i = next(i for i, r in enumerate(rows) if r.get("reference"))
    engines = [i for i, r in enumerate(rows) if not r.get("reference") and r["kind"] != "method"
               and r.get("drift_db") is not None and i < len(outputs) and outputs[i] is not None]
    written, seen = [], {}
    for i in engines:
        w = rows[i]["worst_image"]
        key = (w["dataset"], w["name"])
        if key in seen:
            seen[key]["worst_for"].append(rows[i]["name"])
            continue
        k = names.index(w["dataset"])
        j = next(n for n, p in enumerate(sets[k]) if p.name == w["name"])
        reference = to_u8_hwc(outputs[ref_i][k][j])
        images = [("bicubic", imresize_u8(sets[k][j].lr, scale)), (f"FP32 {rows[ref_i]['name']}", reference)]
        labels = {e: f"{rows[e]['name']} ({rows[e]['precision']})" for e in engines}
        labels = {e: lab if list(labels.values()).count(lab) == 1 else f"{lab} #{e}" for e, lab in labels.items()}
        images += [(labels[e], outputs[e][k][j]) for e in engines]
        label = labels[i]
        entry = comparison(images, reference, label, folder / f"worst_{_safe(w['dataset'])}_{_safe(w['name'])}.png")
        entry.update({"dataset": w["dataset"], "image": w["name"], "worst_for": [rows[i]["name"]]})
        seen[key] = entry
        written.append(entry)
    return written
