"""scnet_deploy/upscale.py: never destroys an input, never loses a result; grey, alpha and 16-bit kept; exact tiles
under a memory limit; NaN and collapse guards; batches that go on past a bad file and resume."""

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from PIL import Image

from conftest import cli, folder_with_a_corrupt_second_image, one_line_error, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.imaging.images import ImageError, read_image
from scnet_deploy.model.checkpoint import NonFiniteWeightsWarning
from scnet_deploy.runtime import open_model
from scnet_deploy.upscale import upscale, UpscaleOptions


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_basicsr(tiny_model(2, "mlp", num_block=1), tmp_path_factory.mktemp("m") / "m_x2.pth")


def rgb(path: Path, size=(20, 14), seed=0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_upscale_rgb_grey_alpha_16bit(tiny, tmp_path):
    ckpt, artifact = tiny
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    rgb = rng.integers(0, 256, (11, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src / "rgb.png")
    grey = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    Image.fromarray(grey).save(src / "grey.png")
    rgba = np.dstack([rgb, rng.integers(0, 256, (11, 7), dtype=np.uint8)])
    Image.fromarray(rgba).save(src / "alpha.png")
    rgb16 = rng.integers(0, 65536, (5, 8, 3), dtype=np.uint16)
    png.Writer(8, 5, greyscale=False, bitdepth=16).write(open(src / "deep.png", "wb"), rgb16.reshape(5, -1))
    results = upscale(artifact, [src], UpscaleOptions(tmp_path / "out", tile=4))
    assert {r["tiles"] > 1 for r in results} == {True}
    out = {p.name: p for p in (tmp_path / "out").iterdir()}
    assert sorted(out) == ["alpha_x2.png", "deep_x2.png", "grey_x2.png", "rgb_x2.png"]
    assert Image.open(out["grey_x2.png"]).mode == "L" and Image.open(out["grey_x2.png"]).size == (18, 12)
    with Image.open(out["alpha_x2.png"]) as im:
        assert im.mode == "RGBA" and im.size == (14, 22)
        alpha = np.asarray(im)[..., 3]
    with open_model(ckpt) as ref:  # alpha = the model's output for the alpha plane as a grey image
        a = np.repeat(rgba[..., 3:].astype(np.float32).transpose(2, 0, 1) / 255, 3, axis=0)
        expected = np.floor(np.clip(ref.infer(a).mean(axis=0), 0, 1) * 255 + 0.5)
    assert np.abs(alpha.astype(int) - expected).max() <= 1
    w, h, rows, info = png.Reader(filename=str(out["deep_x2.png"])).asDirect()
    assert info["bitdepth"] == 16 and (w, h) == (16, 10) and info["planes"] == 3
    deep = np.vstack([np.asarray(r, np.int64) for r in rows]).reshape(10, 16, 3)
    with open_model(ckpt) as ref:  # 16-bit in, 16-bit out: the pixels, not only the depth, within 2 of 65535
        x = rgb16.astype(np.float32).transpose(2, 0, 1) / 65535
        expected16 = np.floor(np.clip(ref.infer(x), 0, 1) * 65535 + 0.5).transpose(1, 2, 0)
        g = np.repeat(grey[None].astype(np.float32) / 255, 3, axis=0)
        expected_grey = np.floor(np.clip(ref.infer(g).mean(axis=0), 0, 1) * 255 + 0.5)
    assert np.abs(deep - expected16).max() <= 2
    assert np.abs(np.asarray(Image.open(out["grey_x2.png"])).astype(int) - expected_grey).max() <= 1
    with open_model(ckpt) as ref:  # whole-image PyTorch vs tiled ONNX Runtime, at 8 bits
        expected = np.floor(np.clip(ref.infer(rgb.transpose(2, 0, 1).astype(np.float32) / 255), 0, 1) * 255 + 0.5)
    assert np.abs(np.asarray(Image.open(out["rgb_x2.png"])).transpose(2, 0, 1) - expected).max() <= 1


@pytest.mark.parametrize("suffix,mode", [(".jpg", "RGB"), (".webp", "RGB"), (".png", "RGB")])
def test_output_format_from_extension(tiny, tmp_path, suffix, mode):
    ckpt, _ = tiny
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(tmp_path / "a.png")
    out = cli("upscale", ckpt, tmp_path / "a.png", "-o", tmp_path / f"b{suffix}")
    assert out.returncode == 0, out.stderr
    with Image.open(tmp_path / f"b{suffix}") as im:
        assert im.mode == mode and im.size == (16, 16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_max_memory_forces_exact_tiling(tiny, tmp_path):
    ckpt, _ = tiny
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    whole = upscale(ckpt, [tmp_path / "a.png"], UpscaleOptions(tmp_path / "w.png", max_memory_mb=1024))
    tiled = upscale(ckpt, [tmp_path / "a.png"], UpscaleOptions(tmp_path / "t.png", max_memory_mb=1))
    assert whole[0]["tiles"] == 1 and tiled[0]["tiles"] > 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "w.png")), np.asarray(Image.open(tmp_path / "t.png")))


def test_overlap_below_receptive_radius_is_refused(tiny, tmp_path):
    ckpt, _ = tiny
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    out = cli("upscale", ckpt, tmp_path / "a.png", "-o", tmp_path / "o", "--tile", "4", "--overlap", "1")
    assert out.returncode == 2 and "receptive radius" in out.stderr and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_8k_input_upscales_x4_within_memory(tmp_path):
    """SCNet-T (64 features, 16 blocks) at 8K -> x4: the 30720x17280 output is 6.4 GB as float, 1.6 GB as uint8;
    a 4 GiB peak is possible only if the output is assembled in its integer type, tile by tile."""
    from scnet_deploy.pipeline import reference_checkpoint  # SCNet-T x4, trained: random 16-block weights blow up

    artifact = export(reference_checkpoint(), ExportOptions(output=tmp_path / "a")).directory
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4320, 7680, 3), dtype=np.uint8)).save(tmp_path / "8k.png")
    code = (f"import resource; from scnet_deploy.upscale import upscale, UpscaleOptions; "
            f"r = upscale({str(artifact)!r}, [{str(tmp_path / '8k.png')!r}], UpscaleOptions({str(tmp_path / 'o.png')!r}, "
            f"max_memory_mb=512)); print(r[0]['tiles'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3000)
    assert out.returncode == 0, out.stderr
    tiles, rss_kb = map(int, out.stdout.split())
    assert tiles > 1 and rss_kb < 4 * 2**20
    header = (tmp_path / "o.png").read_bytes()[:33]  # Pillow itself refuses to open a 531 MP image
    assert struct.unpack(">II", header[16:24]) == (30720, 17280)


def test_nan_and_collapse_guards_in_upscale(tmp_path):
    sd = tiny_model(2, "pixelshuffle").state_dict()
    sd["conv_last.bias"][:] = float("nan")
    torch.save(sd, tmp_path / "nan.pth")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.warns(NonFiniteWeightsWarning):
        (r,) = upscale(tmp_path / "nan.pth", [tmp_path / "a.png"], UpscaleOptions(tmp_path / "o.png"))
    assert r["nonfinite"]
    flat = tiny_model(2, "pixelshuffle").state_dict()
    for k in flat:
        flat[k] = torch.zeros_like(flat[k])
    torch.save(flat, tmp_path / "flat.pth")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "black.png")
    (r,) = upscale(tmp_path / "flat.pth", [tmp_path / "black.png"], UpscaleOptions(tmp_path / "o2.png"))
    assert r["collapsed"] and not r["nonfinite"]
    out = cli("upscale", tmp_path / "flat.pth", tmp_path / "black.png", "-o", tmp_path / "o3.png")
    assert out.returncode == 0 and "collapsed" in out.stdout


def test_a_corrupt_file_does_not_stop_the_batch_and_skip_existing_resumes(tiny_ckpt_module, tmp_path):
    names = folder_with_a_corrupt_second_image(tmp_path / "in")
    out = cli("upscale", tiny_ckpt_module, tmp_path / "in", "-o", tmp_path / "out")
    assert out.returncode == 1, out.stderr[-2000:]
    assert "5 upscaled, 1 failed, 0 skipped" in out.stdout and "failed" in out.stdout and "1.png" in out.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{Path(n).stem}_x2.png" for n in names if n != "1.png")
    assert "1 failed" in out.stderr and "left" in out.stderr  # progress: done, failed, remaining
    # resume: two outputs lost, the rest are complete and left alone
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    for lost in ("3_x2.png", "5_x2.png"):
        (tmp_path / "out" / lost).unlink()
    again = cli("upscale", tiny_ckpt_module, tmp_path / "in", "-o", tmp_path / "out", "--skip-existing")
    assert again.returncode == 1 and "2 upscaled, 1 failed, 3 skipped" in again.stdout
    for name, mtime in kept.items():
        assert (tmp_path / "out" / name).exists()
        if name not in ("3_x2.png", "5_x2.png"):
            assert (tmp_path / "out" / name).stat().st_mtime_ns == mtime


@pytest.mark.openvino
def test_a_folder_runs_several_images_in_flight_with_the_same_outputs(tiny_ckpt_module, tmp_path):
    """upscale of a folder uses the throughput mode: OpenVINO compiled with its throughput hint, as many images in
    flight as it serves best, each thread with its own request; the pixels are those of one image at a time, and a
    bad file among them is still reported, not fatal."""
    from scnet_deploy.upscale import UpscaleOptions, upscale

    artifact = export(tiny_ckpt_module, ExportOptions(output=tmp_path / "ov", format="openvino")).directory
    rng = np.random.default_rng(5)
    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i}.png")
    (tmp_path / "in" / "5.png").write_bytes(b"not an image")
    one = upscale(artifact, [tmp_path / "in"], UpscaleOptions(tmp_path / "one", inflight=1))
    many = upscale(artifact, [tmp_path / "in"], UpscaleOptions(tmp_path / "many", inflight=3))
    auto = upscale(artifact, [tmp_path / "in"], UpscaleOptions(tmp_path / "auto"))
    assert [r["status"] for r in many] == [r["status"] for r in one] == ["done"] * 5 + ["failed"]
    assert {r.get("inflight") for r in many if r["status"] == "done"} == {3}
    assert {r.get("inflight") for r in one if r["status"] == "done"} == {1}
    assert all(r.get("inflight", 1) >= 1 for r in auto)
    for i in range(5):
        a = np.asarray(Image.open(tmp_path / "one" / f"{i}_x2.png"))
        for other in ("many", "auto"):
            np.testing.assert_array_equal(a, np.asarray(Image.open(tmp_path / other / f"{i}_x2.png")))


def test_one_input_alone_still_fails_in_one_line(tiny_ckpt_module, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    out = cli("upscale", tiny_ckpt_module, tmp_path / "bad.png", "-o", tmp_path / "o.png")
    assert out.returncode == 2 and "bad.png" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_an_output_that_is_an_input_is_refused(model, tmp_path):
    """Row 9: `upscale m self.png -o self.png`, through a link too; a folder into itself where an output name is
    an input."""
    src = rgb(tmp_path / "self.png")
    before = src.read_bytes()
    with pytest.raises(ScnetDeployError, match="overwrite its input"):
        upscale(model, [src], UpscaleOptions(src))
    (tmp_path / "link.png").symlink_to(src)
    with pytest.raises(ScnetDeployError, match="overwrite its input"):
        upscale(model, [src], UpscaleOptions(tmp_path / "link.png"))
    folder = tmp_path / "in"
    folder.mkdir()
    rgb(folder / "a.png")
    rgb(folder / "a_x2.png", (40, 28), 1)
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    line = one_line_error(cli("upscale", model, folder, "-o", folder))
    assert "a_x2.png" in line and {p.name: p.read_bytes() for p in folder.iterdir()} == kept
    assert src.read_bytes() == before


@pytest.mark.parametrize("inflight", [1, 4])
def test_inputs_that_share_a_stem_keep_their_own_outputs(model, tmp_path, inflight):
    """Rows 10 and 11: a.png, a.bmp, a.tif in one folder (in flight too): three outputs, each its own input's."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, suffix in enumerate((".png", ".bmp", ".tif")):
        rgb(folder / f"a{suffix}", (20 + 2 * i, 14), i)
    results = upscale(model, [folder], UpscaleOptions(tmp_path / "out", inflight=inflight))
    assert sorted(Path(r["output"]).name for r in results) == ["a_bmp_x2.png", "a_png_x2.png", "a_tif_x2.png"]
    for r in results:
        w, h = Image.open(r["input"]).size
        assert r["status"] == "done" and Image.open(r["output"]).size == (2 * w, 2 * h)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_bmp_x2.png", "a_png_x2.png", "a_tif_x2.png"]
    twice = tmp_path / "twice"
    (twice / "one").mkdir(parents=True)
    (twice / "two").mkdir()
    rgb(twice / "one" / "b.png")
    rgb(twice / "two" / "b.png")
    with pytest.raises(ScnetDeployError, match="written by several inputs"):
        upscale(model, [twice / "one", twice / "two"], UpscaleOptions(tmp_path / "o2"))


def test_grey_16_bit_and_float_images_upscale(model, tmp_path):
    """Row 12: a 16-bit greyscale PNG, mode I and F TIFFs."""
    ramp = (np.arange(16 * 12).reshape(12, 16) * 300).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "i.tif")
    Image.fromarray(ramp.astype(np.float32) / 65535).save(tmp_path / "f.tif")
    for name in ("g16.png", "i.tif", "f.tif"):
        out = tmp_path / f"{name}.png"
        [r] = upscale(model, [tmp_path / name], UpscaleOptions(out))
        assert r["status"] == "done"
        image = read_image(out)
        assert image.pixels.shape == (24, 32, 1) and image.bits == 16


def test_exif_orientation_is_applied_and_the_output_is_upright(model, tmp_path):
    """Row 13: orientation 6 (rotate 90 clockwise to view): the output is the upright image, upscaled."""
    pixels = np.random.default_rng(0).integers(0, 256, (14, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[274] = 6
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=100)
    upright = np.rot90(np.asarray(Image.open(tmp_path / "r.jpg")), -1)
    Image.fromarray(np.ascontiguousarray(upright)).save(tmp_path / "upright.png")
    upscale(model, [tmp_path / "r.jpg"], UpscaleOptions(tmp_path / "r_out.png"))
    upscale(model, [tmp_path / "upright.png"], UpscaleOptions(tmp_path / "u_out.png"))
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("r_out.png", "u_out.png"))
    assert a.shape == (40, 28, 3) and np.array_equal(a, b)


def test_animated_and_multi_page_images_are_refused_in_one_line_and_named_in_a_batch(model, tmp_path):
    """Row 13: an animated GIF, an APNG and a multi-page TIFF: refused (which frame was meant cannot be guessed);
    in a folder each is a failure with its reason, .gif included, and other files are named as skipped."""
    frames = [Image.fromarray(np.full((10, 12, 3), v, np.uint8)) for v in (0, 128, 255)]
    folder = tmp_path / "in"
    folder.mkdir()
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "anim.png", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "still.gif")
    (folder / "notes.txt").write_text("not an image")
    for name in ("anim.gif", "anim.png", "pages.tif"):
        with pytest.raises(ImageError, match="3 frames"):
            read_image(folder / name)
    proc = cli("upscale", model, folder, "-o", tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "1 upscaled, 3 failed" in proc.stdout and "3 frames" in proc.stdout
    assert "skipped" in proc.stdout and "notes.txt" in proc.stdout and "not an image" in proc.stdout
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["still_x2.png"]


def test_a_killed_upscales_temporary_is_never_an_input_and_is_removed(model, tmp_path):
    """Row 15: the hidden temporary of an upscale killed at its rename (its process gone) in the input and output
    folders: not taken as an input, named as skipped, removed from the output folder."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    rgb(folder / "a.png")
    stale = ".a_x2.png.99999999-k1ll3d.scnet-tmp.png"  # no such process: pid_max is at most 2^22
    rgb(folder / stale)
    rgb(out / stale)
    results = upscale(model, [folder], UpscaleOptions(out))
    assert [r["status"] for r in results] == ["done", "skipped"] and "temporary" in results[1]["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png"]


def test_skip_existing_keeps_only_complete_outputs(model, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        rgb(folder / name)
    upscale(model, [folder], UpscaleOptions(out))
    (out / "b_x2.png").write_bytes((out / "b_x2.png").read_bytes()[:100])  # cut short by something else
    results = upscale(model, [folder], UpscaleOptions(out, skip_existing=True))
    assert [r["status"] for r in results] == ["skipped", "done"]
    assert Image.open(out / "b_x2.png").size == (40, 28)


def test_outputs_that_cannot_be_written_are_one_line(model, tmp_path):
    """Row 16: -o a folder named out.png (written into, as a folder); -o a read-only place; export -o a file."""
    from scnet_deploy.export import ExportOptions, export

    src = rgb(tmp_path / "a.png")
    (tmp_path / "out.png").mkdir()
    [r] = upscale(model, [src], UpscaleOptions(tmp_path / "out.png"))
    assert r["output"] == str(tmp_path / "out.png" / "a_x2.png") and Path(r["output"]).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScnetDeployError, match="is a file"):
        export(model, ExportOptions(output=tmp_path / "file"))
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        line = one_line_error(cli("upscale", model, src, "-o", ro / "a.png"))
        assert "Read-only file system" in line and str(ro) in line
    finally:
        subprocess.run(["umount", str(ro)])


def test_a_full_disk_during_export_is_one_line(model, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    from scnet_deploy.cli import environment_error
    from scnet_deploy.export import ExportOptions, export

    try:
        for fmt in ("onnx", "openvino"):  # the CLI prints OSErrors as environment_error does (the read-only test)
            with pytest.raises((ScnetDeployError, OSError)) as info:
                export(model, ExportOptions(output=small / "eng", format=fmt))
            said = environment_error(info.value) if isinstance(info.value, OSError) else str(info.value)
            assert "space" in said and "\n" not in said
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_the_previous_artifact_survives_a_kill_between_the_renames(model, tmp_path, monkeypatch):
    """Row 14: an export killed after moving the previous artifact aside (``.old-PID``) and before moving the new
    one in; the next export fails before its own swap: the previous artifact is back, not deleted."""
    from scnet_deploy.export import ExportOptions, export
    from scnet_deploy.session import BuildSession

    out = tmp_path / "eng"
    export(model, ExportOptions(output=out))
    previous = (out / "model.onnx").read_bytes()
    os.replace(out, tmp_path / ".eng.old-4242")  # the state a SIGKILL between the two renames leaves

    def broken(*a, **k):
        raise ScnetDeployError("a build that fails")

    monkeypatch.setattr(BuildSession, "build", broken)
    with pytest.raises(ScnetDeployError, match="fails"):
        export(model, ExportOptions(output=out))
    assert (out / "model.onnx").read_bytes() == previous
    assert not list(tmp_path.glob(".eng.old-*"))
    shutil.rmtree(out)
