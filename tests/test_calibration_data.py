"""calibration/data.py and content.py: calibration crops and hold-out, deterministic and disjoint, generated
content, LR input, and the errors of bad calibration data or weights."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_model
from scnet_deploy.calibration.content import GENERATORS
from scnet_deploy.calibration.data import CalibOptions, calibration_set, content_share, holdout_set
from scnet_deploy.errors import CheckpointError, ScnetDeployError
from scnet_deploy.export import export, ExportOptions


FAST = CalibOptions(count=8, crop=32)


def test_calibration_is_deterministic_and_disjoint(folder):
    a, b = calibration_set(CalibOptions(folder, count=6, crop=16), 2), calibration_set(CalibOptions(folder, 6, 16), 2)
    assert len(a) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(x.shape == (1, 3, 16, 16) and x.dtype == np.float32 for x in a)
    c = calibration_set(CalibOptions(folder, count=6, crop=16, seed=1), 2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    first, second = list(a), list(a)  # re-iterable: the same arrays again, not an exhausted iterator
    assert len(first) == 6 and all(np.array_equal(x, y) for x, y in zip(first, second))
    holdout = holdout_set(CalibOptions(folder), 2)
    photos = [h.name for h in holdout if h.content == "photo"]
    assert set(a.sources).isdisjoint(photos) and len(photos) == 1 and len([s for s in a.sources if "generated" not in s]) == 3
    default = calibration_set(CalibOptions(count=4, crop=16), 4)
    assert default.sources[0].startswith("skimage:")
    assert set(default.sources).isdisjoint(h.name for h in holdout_set(CalibOptions(), 4))


def test_calibration_mixes_generated_content_when_asked(folder):
    mixed = calibration_set(CalibOptions(folder, count=8, crop=16, content_mix=True), 2)
    plain = calibration_set(CalibOptions(folder, count=8, crop=16), 2)  # the default: photos only (measured better)
    assert content_share(CalibOptions(count=8, content_mix=True)) == 2 and content_share(CalibOptions(count=8)) == 0
    assert len(mixed) == len(plain) == 8
    assert any(s.startswith("generated:line-art") for s in mixed.sources)
    assert not any(s.startswith("generated") for s in plain.sources)
    # the folder's crops are smooth mid-tones; generated content reaches pure black and white
    assert max(float(x.max()) for x in mixed) == 1.0 and min(float(x.min()) for x in mixed) == 0.0


def test_default_holdout_mixes_content_types(folder, tmp_path):
    holdout = holdout_set(CalibOptions(), 4)
    assert {"photo", "line-art", "text", "flat-colours", "textures"} <= {h.content for h in holdout}
    assert all(h.lr.shape[0] * 4 == h.hr.shape[0] and h.lr.shape[1] * 4 == h.hr.shape[1] for h in holdout)
    from_folder = holdout_set(CalibOptions(folder), 4)  # a calibration folder's held-out photos, plus the content
    assert [h.content for h in from_folder].count("photo") == 1 and len({h.content for h in from_folder}) >= 5
    # the user's own hold-out replaces ours; sub-folders name content types
    (tmp_path / "own" / "comics").mkdir(parents=True)
    Image.fromarray(GENERATORS["line-art"](7)).save(tmp_path / "own" / "comics" / "a.png")
    Image.fromarray(GENERATORS["text"](7)).save(tmp_path / "own" / "b.png")
    own = holdout_set(CalibOptions(holdout=tmp_path / "own"), 4)
    assert sorted((Path(h.name).name, h.content) for h in own) == [("a.png", "comics"), ("b.png", "holdout")]
    with pytest.raises(ScnetDeployError, match="--holdout"):
        holdout_set(CalibOptions(holdout=tmp_path / "nope"), 4)


def test_generated_content_is_deterministic_and_reaches_the_cube_corners():
    for kind, make in GENERATORS.items():
        a, b, c = make(3), make(3), make(4)
        assert a.dtype == np.uint8 and a.shape[2] == 3 and np.array_equal(a, b) and not np.array_equal(a, c), kind
    assert (GENERATORS["line-art"](0) == 255).all(axis=2).mean() > 0.3  # white paper
    assert (GENERATORS["line-art"](0) == 0).all(axis=2).any()  # black ink
    flat = GENERATORS["flat-colours"](0)
    assert ((flat == [255, 0, 0]).all(axis=2)).any() or ((flat == [0, 0, 255]).all(axis=2)).any()


def test_lr_input_crops_raw_pixels(folder):
    crop = calibration_set(CalibOptions(folder, count=1, crop=8, lr_input=True), 4).arrays[0]
    image = np.asarray(Image.open(folder / "c0.png")).astype(np.float32) / 255
    found = any(np.allclose(image[y:y + 8, x:x + 8].transpose(2, 0, 1), crop[0])
                for y in range(image.shape[0] - 7) for x in range(image.shape[1] - 7))
    assert found


def test_calibration_errors(folder, tmp_path):
    with pytest.raises(ScnetDeployError, match="not a folder"):
        calibration_set(CalibOptions(tmp_path / "nope"), 2)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "only.png")
    with pytest.raises(ScnetDeployError, match="at least 2"):
        calibration_set(CalibOptions(tmp_path), 2)


def test_nonfinite_weights_refuse_calibration(tmp_path):
    sd = tiny_model(4).state_dict()
    sd["conv_first.weight"][0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan_x4.pth")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="refusing to calibrate"):
        export(tmp_path / "nan_x4.pth", ExportOptions(output=tmp_path / "q", precision="int8", keep_slower_int8=True, calib=FAST))
    out = subprocess.run([sys.executable, "-m", "scnet_deploy", "export", str(tmp_path / "nan_x4.pth"), "-o",
                          str(tmp_path / "q"), "--int8", "--calib-count", "4"], capture_output=True, text=True)
    assert out.returncode == 2 and "refusing to calibrate" in out.stderr and not (tmp_path / "q").exists()
