"""Issue 27, rows 9-16: upscale never destroys an input and never loses a result; images as viewers show them; every
failure of the user's machine is one line. A checkpoint runs in PyTorch here (no export needed)."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, one_line_error, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.imaging.images import ImageError, read_image
from scnet_deploy.upscale import UpscaleOptions, upscale


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_basicsr(tiny_model(2, "mlp", num_block=1), tmp_path_factory.mktemp("m") / "m_x2.pth")


def rgb(path: Path, size=(20, 14), seed=0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


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
