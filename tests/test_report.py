"""scnet_deploy/report.py: the validation report shows each model's worst crops."""

import json

import numpy as np
from PIL import Image

from conftest import cli


def test_validate_report_shows_the_worst_crops(dataset, second_dataset, models, tmp_path):
    ref, other, artifact = models
    out = cli("validate", ref, artifact, other, "--dataset", dataset, "--dataset", second_dataset, "--scale", "4",
              "--report", tmp_path / "rep", "--json", tmp_path / "v.json")
    assert out.returncode == 0, out.stderr
    assert "worst content" in out.stdout
    data = json.loads((tmp_path / "v.json").read_text())
    visuals = data["visuals"]
    assert visuals and all((tmp_path / "rep" / v["file"]).exists() for v in visuals)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert all(f"![{v['file']}]" in md for v in visuals) and "### Drift by content" in md
    bad = next(m for m in data["models"] if m["path"] == str(other))
    sheet = next(v for v in visuals if bad["name"] in v["worst_for"])
    assert (sheet["dataset"], sheet["image"]) == (bad["worst_image"]["dataset"], bad["worst_image"]["name"])
    image = np.asarray(Image.open(tmp_path / "rep" / sheet["file"]))
    columns = 2 + 2  # bicubic, FP32, then each of the two models
    assert image.shape[1] % columns == 0 and image.shape[0] > image.shape[1] // columns  # two rows of tiles
    # the error map under the FP32 column is black: FP32 minus itself
    tile_w, tile_h = image.shape[1] // columns, image.shape[0] // 2
    assert image[tile_h + 16:, tile_w:2 * tile_w].max() == 0
    assert image[tile_h + 16:, 3 * tile_w:].max() > 0  # the other model differs
