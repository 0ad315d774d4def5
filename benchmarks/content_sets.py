"""Evaluation content for INT8 drift that no export tunes on: written as DIR/HR folders for ``validate``.

- line-art: 5 drawings rendered by matplotlib (strokes, outlined and hatched shapes on white; another renderer than
  the calibration generator) and 5 from calibration/content.py's generator at seeds 100-104 (calibration uses 10-11,
  the hold-out 0);
- text: 5 documents and charts rendered by matplotlib (serif, sans and mono type, axes, labels), scikit-image's
  scanned page, and 4 generated text images at seeds 100-103;
- city: 10 photographs of buildings and streets (straight edges) from ../shared/datasets/SunHays80, which no INT8
  export uses for calibration or hold-out.
"""

from pathlib import Path

import numpy as np
from PIL import Image

CITY = ("building_facade", "canal_urban", "skyscraper", "street", "medina", "warehouse", "subway_platform",
        "lift_bridge", "highway", "youth_hostel")
SIDE = 384


def _figure_to_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return rgb


def mpl_drawing(seed: int) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Polygon, Rectangle

    rng = np.random.default_rng(seed)
    fig = plt.figure(figsize=(SIDE / 100, SIDE / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    for _ in range(6):
        kind = rng.integers(0, 3)
        x, y = rng.uniform(0.05, 0.7, 2)
        fill = rng.choice(["none", "white", "0.8", "#ffd0d0", "#d0e8ff"])
        hatch = rng.choice([None, "//", "xx", ".."])
        patch = (Circle((x + 0.1, y + 0.1), rng.uniform(0.05, 0.2)) if kind == 0 else
                 Rectangle((x, y), *rng.uniform(0.1, 0.3, 2)) if kind == 1 else
                 Polygon(rng.uniform(0, 1, (5, 2)), closed=True))
        patch.set(facecolor=fill, edgecolor="black", linewidth=rng.uniform(1, 4), hatch=hatch)
        ax.add_patch(patch)
    for _ in range(10):
        t = np.linspace(0, 1, 50)
        p = rng.uniform(0, 1, (4, 2))
        curve = (1 - t)[:, None] ** 3 * p[0] + 3 * ((1 - t) ** 2 * t)[:, None] * p[1] + \
            3 * ((1 - t) * t ** 2)[:, None] * p[2] + (t ** 3)[:, None] * p[3]
        ax.plot(curve[:, 0], curve[:, 1], color="black", lw=rng.uniform(0.5, 3.5), solid_capstyle="round")
    return _figure_to_rgb(fig)


def mpl_document(seed: int) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig = plt.figure(figsize=(SIDE / 100, SIDE / 100), dpi=100, facecolor="white")
    if seed % 2:  # a chart: axes, ticks, labels, legend
        ax = fig.add_axes([0.15, 0.15, 0.8, 0.75])
        x = np.linspace(0, 10, 40)
        for k in range(3):
            ax.plot(x, np.sin(x * rng.uniform(0.3, 1.5)) + k, marker="os^"[k], ms=3, label=f"series {k}")
        ax.set(xlabel="time (s)", ylabel="value", title=f"Figure {seed}: measured drift")
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.4)
    else:  # a page of text
        ax = fig.add_axes([0, 0, 1, 1])
        ax.axis("off")
        words = "resolution kernel deploy image pixel edge engine latency verified budget drift line text".split()
        family = ["serif", "sans-serif", "monospace"][seed % 3]
        y = 0.95
        while y > 0.05:
            size = rng.uniform(6, 14)
            ax.text(0.03, y, " ".join(rng.choice(words, 7)), fontsize=size, family=family, va="top")
            y -= size / 140
    return _figure_to_rgb(fig)


def write_eval_sets(root: Path, shared: Path) -> dict[str, Path]:
    """Write the line-art, text and city sets under ``root``; returns name -> dataset folder (DIR with HR/)."""
    from scnet_deploy.calibration.content import line_art, skimage_image, text

    sets = {"line-art": [(f"mpl_drawing_{s}", mpl_drawing(s)) for s in range(5)]
            + [(f"generated_line_art_{s}", line_art(s)) for s in range(100, 105)],
            "text": [(f"mpl_document_{s}", mpl_document(s)) for s in range(5)] + [("skimage_page", skimage_image("page"))]
            + [(f"generated_text_{s}", text(s)) for s in range(100, 104)]}
    folders = {}
    for name, images in sets.items():
        folder = root / name / "HR"
        folder.mkdir(parents=True, exist_ok=True)
        for stem, image in images:
            Image.fromarray(image).save(folder / f"{stem}.png")
        folders[name] = folder.parent
    sun = shared / "SunHays80" / "HR"
    if sun.is_dir():
        folder = root / "city" / "HR"
        folder.mkdir(parents=True, exist_ok=True)
        for stem in CITY:
            path = next(sun.glob(f"{stem}_sun_*"))
            image = Image.open(path).convert("RGB")
            image.thumbnail((512, 512), Image.BICUBIC)  # bounded cost; straight edges stay
            image.save(folder / f"{stem}.png")
        folders["city"] = folder.parent
    return folders
