"""Dataset layouts and explicit image conversions (16-bit, grayscale, palette, RGBA), and unreadable images."""

import numpy as np
import pytest
from PIL import Image

from scnet_deploy.imaging.datasets import DatasetError, load_dataset
from scnet_deploy.imaging.images import ImageError, read_rgb_u8
from scnet_deploy.imaging.resize import bicubic_degrade

RNG = np.random.default_rng(0)


def rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_layout_hr_with_shipped_lr(tmp_path):
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR_bicubic" / "X2").mkdir(parents=True)
    hr = rgb(13, 10)
    Image.fromarray(hr).save(tmp_path / "HR" / "a.png")
    shipped = rgb(6, 5)
    Image.fromarray(shipped).save(tmp_path / "LR_bicubic" / "X2" / "ax2.png")
    (pair,) = load_dataset(tmp_path, 2)
    assert pair.lr_source == "shipped" and np.array_equal(pair.lr, shipped)
    assert pair.hr.shape == (12, 10, 3)  # mod-cropped
    Image.fromarray(rgb(7, 5)).save(tmp_path / "LR_bicubic" / "X2" / "ax2.png")
    with pytest.raises(DatasetError, match="not of this HR"):
        load_dataset(tmp_path, 2)


def test_layout_hr_only_and_plain_folder(tmp_path):
    (tmp_path / "set" / "HR").mkdir(parents=True)
    hr = rgb(16, 20)
    Image.fromarray(hr).save(tmp_path / "set" / "HR" / "b.png")
    (pair,) = load_dataset(tmp_path / "set", 4)
    assert pair.lr_source == "bicubic" and np.array_equal(pair.lr, bicubic_degrade(hr, 4))
    (tmp_path / "plain").mkdir()
    Image.fromarray(hr).save(tmp_path / "plain" / "c.png")
    (tmp_path / "plain" / "notes.txt").write_text("ignored")
    assert [p.name for p in load_dataset(tmp_path / "plain", 4)] == ["c"]
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "missing", 4)


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(tmp_path / "e", 2)


def test_explicit_conversions(tmp_path):
    # round(v / 257): 129 -> 1 and 65534 -> 255 (floor gives 0 and 254, v >> 8 gives 0 and 255), 128 -> 0
    g16 = np.array([[0, 257, 65535, 32896, 129, 65534, 128, 385]], dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    assert read_rgb_u8(tmp_path / "g16.png")[0, :, 0].tolist() == [0, 1, 255, 128, 1, 255, 0, 1]
    assert read_rgb_u8(tmp_path / "g16.png").shape == (1, 8, 3)
    gray = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_rgb_u8(tmp_path / "g.png")
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 0], out[..., 2])
    rgba = np.dstack([rgb(4, 4), np.zeros((4, 4), np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(read_rgb_u8(tmp_path / "a.png"), rgba[..., :3])  # alpha dropped, colour kept
    pal = Image.fromarray(rgb(4, 4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(read_rgb_u8(tmp_path / "p.png"), np.array(pal.convert("RGB")))


def test_unreadable_images(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    Image.fromarray(rgb(32, 32)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("not an image")
    for name in ("zero.png", "trunc.png", "text.png"):
        with pytest.raises(ImageError, match=name):
            read_rgb_u8(tmp_path / name)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_huge_pngs_are_written_row_by_row_with_the_same_pixels(tmp_path, monkeypatch, channels):
    """Above STREAM_PNG_PIXELS an 8-bit PNG is streamed by pypng (no Pillow copy of the whole image): it must
    decode to exactly the pixels, in the same mode Pillow would have written."""
    import scnet_deploy.imaging.images as images

    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
    images.write_image(tmp_path / "pillow.png", pixels, 8)
    import png

    streamed = []
    monkeypatch.setattr(png.Writer, "write", lambda self, *a, real=png.Writer.write: streamed.append(1) or real(
        self, *a))
    images.write_image(tmp_path / "pillow.png", pixels, 8)
    monkeypatch.setattr(images, "STREAM_PNG_PIXELS", 100)
    images.write_image(tmp_path / "streamed.png", pixels, 8)
    assert streamed == [1]  # the small one went through Pillow, the "huge" one through pypng
    with Image.open(tmp_path / "pillow.png") as a, Image.open(tmp_path / "streamed.png") as b:
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))
        assert np.array_equal(np.asarray(b).reshape(37, 53, channels), pixels)
