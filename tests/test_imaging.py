"""scnet_deploy/imaging/: dataset layouts, image files (16-bit, grey, palette, RGBA, unreadable, bombs), MATLAB-compatible
bicubic and the PSNR/SSIM-Y protocol against MATLAB's Set5 LR and published baselines."""

import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from hypothesis import given, HealthCheck, settings, strategies as st

from conftest import cli, DATASETS, mutate, need
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.imaging.datasets import DatasetError, load_dataset
from scnet_deploy.imaging.images import ImageError, list_images, mod_crop, read_image, read_rgb_u8
from scnet_deploy.imaging.metrics import psnr, psnr_ssim_y, psnr_y, rgb_to_y, ssim
from scnet_deploy.imaging.resize import bicubic_degrade, imresize, imresize_u8


RNG = np.random.default_rng(0)


def rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def png_header_only(path, width, height, bitdepth=8):
    """A PNG whose IHDR declares width x height, with a tiny (invalid) IDAT: never decodable, only its header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, bitdepth, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


SET5 = DATASETS / "Set5"


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


@FAST
@given(data=st.data(), which=st.sampled_from(["PNG", "JPEG"]))
def test_image_loaders_never_traceback(tmp_path_factory, valid_files, data, which):
    path = tmp_path_factory.mktemp("fz") / f"x.{which.lower()}"
    path.write_bytes(mutate(valid_files[which], data.draw))
    for reader in (read_image, read_rgb_u8):
        try:
            reader(path)
        except ScnetDeployError as exc:
            assert "\n" not in str(exc)


def test_decompression_bomb_refused_before_decoding(tiny, tmp_path):
    ckpt, _ = tiny
    bomb = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    t0 = time.perf_counter()
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(bomb)
    assert time.perf_counter() - t0 < 1.0
    out = cli("upscale", ckpt, bomb, "-o", tmp_path / "out")
    assert out.returncode == 2 and "bomb.png" in out.stderr and "Traceback" not in out.stderr
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("bitdepth", [8, 16])
def test_decompression_bomb_guard_is_at_200_megapixels(tmp_path, bitdepth):
    """Just over the limit (210 MP) is refused with our message, before decoding; just under (196 MP) passes the
    guard and fails only because the file holds no pixels (Pillow's own bomb check allows 179 MP, so its message
    could not stand in for ours)."""
    over = png_header_only(tmp_path / "over.png", 15_000, 14_000, bitdepth)
    with pytest.raises(ImageError, match=r"210 MP, over the 200 MP limit"):
        read_image(over)
    under = png_header_only(tmp_path / "under.png", 14_000, 14_000, bitdepth)
    with pytest.raises(ImageError) as info:
        read_image(under)
    assert "MP limit" not in str(info.value) and "decompression" not in str(info.value).split("'")[-1]


def test_broken_images_are_one_line_errors(tiny, tmp_path):
    ckpt, _ = tiny
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    cases = {"zero.png": b"", "trunc.png": data[: len(data) // 2], "junk.jpg": b"\xff\xd8\xffnot a jpeg"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    png_header_only(tmp_path / "zerowidth.png", 0, 10)
    for name in [*cases, "zerowidth.png"]:
        out = cli("upscale", ckpt, tmp_path / name, "-o", tmp_path / f"o_{name}.png")
        assert out.returncode == 2, (name, out.stderr)
        assert name in out.stderr and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert not (tmp_path / f"o_{name}.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_equals_matlab_lr_of_set5(scale):
    for hr_path in list_images(need(SET5 / "HR")):
        hr = mod_crop(read_rgb_u8(hr_path), scale)
        matlab = read_rgb_u8(SET5 / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        mine = bicubic_degrade(hr, scale)
        assert mine.shape == matlab.shape
        assert np.abs(mine.astype(int) - matlab.astype(int)).max() <= 2  # in fact 0: bit-exact here


@pytest.mark.parametrize("scale,psnr_ref,ssim_ref", [(2, 33.66, 0.9299), (3, 30.39, 0.8682), (4, 28.42, 0.8104)])
def test_bicubic_baseline_on_set5(scale, psnr_ref, ssim_ref):
    scores = []
    for hr_path in list_images(need(SET5 / "HR")):
        hr = mod_crop(read_rgb_u8(hr_path), scale)
        lr = read_rgb_u8(SET5 / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        scores.append(psnr_ssim_y(imresize_u8(lr, scale), hr, crop=scale))
    p, s = np.mean(scores, axis=0)
    assert abs(p - psnr_ref) <= 0.02 and abs(s - ssim_ref) <= 0.002


def test_imresize_properties():
    rng = np.random.default_rng(0)
    flat = np.full((12, 9, 3), 77.0)
    assert np.allclose(imresize(flat, 0.25), 77.0) and np.allclose(imresize(flat, 3), 77.0)  # weights sum to 1
    img = rng.random((16, 20))
    assert imresize(img, 0.5).shape == (8, 10) and imresize(img, 1 / 3).shape == (6, 7)
    assert imresize(img, 4).shape == (64, 80)
    assert np.allclose(imresize(img, 1.0), img)  # identity at scale 1 (cubic interpolates)


def test_y_psnr_ssim_basics():
    white = np.full((4, 4, 3), 255, np.uint8)
    assert np.allclose(rgb_to_y(white), 235.0) and np.allclose(rgb_to_y(np.zeros((2, 2, 3), np.uint8)), 16.0)
    a = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(float)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 1) == pytest.approx(10 * np.log10(255**2))
    assert ssim(a, 255 - a) < 0.1
    rgb = np.random.default_rng(2).integers(0, 256, (2, 24, 20, 3), dtype=np.uint8)
    assert psnr_y(rgb[0], rgb[1], crop=2) == psnr_ssim_y(rgb[0], rgb[1], crop=2)[0]  # the INT8 hold-out's score


def test_border_crop_and_ssim_against_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    b = a.copy()
    b[:4], b[:, -4:] = 0, 255  # differ only within the 4-pixel border
    assert psnr_ssim_y(a, b, crop=4)[0] == float("inf") and psnr_ssim_y(a, b, crop=0)[0] < 30
    x = rng.integers(0, 256, (48, 40)).astype(float)
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    ref = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert ssim(x, y) == pytest.approx(ref, abs=1e-6)
