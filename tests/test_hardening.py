"""Hostile and broken inputs, exact tiled upscaling, atomic and reproducible artifacts, NaN/collapse guards."""

import json
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import png
import pytest
import torch
from PIL import Image

from conftest import save_basicsr, tiny_model
from scnet_deploy.model.checkpoint import NonFiniteWeightsWarning, load_checkpoint
from scnet_deploy.errors import CheckpointError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.imaging.images import read_image
from scnet_deploy.imaging.images import ImageError
from scnet_deploy.runtime import open_model
from scnet_deploy.imaging.tiling import auto_tile, plan_tiles, upscale_float
from scnet_deploy.upscale import UpscaleOptions, upscale


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def png_header_only(path, width, height, bitdepth=8):
    """A PNG whose IHDR declares width x height, with a tiny (invalid) IDAT: never decodable, only its header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, bitdepth, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    ckpt = save_basicsr(tiny_model(2, "mlp", num_block=2), d / "tiny_x2.pth")
    artifact = export(ckpt, ExportOptions(output=d / "onnx")).directory
    return ckpt, artifact


# -- exact tiling ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(1, 1), (1, 13), (9, 1), (7, 5), (23, 31)])
@pytest.mark.parametrize("tile", [1, 3, 8, 64])
def test_tiled_equals_whole(h, w, tile):
    model = tiny_model(4, "mlp", num_block=3)
    radius = load_radius(model)
    infer = lambda x: model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    img = np.random.default_rng(h * 100 + w).random((3, h, w), dtype=np.float32)
    whole = infer(img[None])[0]
    assert np.abs(upscale_float(infer, img, 4, tile, radius) - whole).max() <= 1e-5


def load_radius(model):
    from scnet_deploy.model.arch import detect_arch

    return detect_arch(model.state_dict()).receptive_radius


def test_a_halo_below_the_receptive_field_is_not_exact():
    model = tiny_model(4, "mlp", num_block=3)
    infer = lambda x: model(torch.from_numpy(x)).detach().numpy()  # noqa: E731
    img = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)
    assert np.abs(upscale_float(infer, img, 4, 8, 2) - infer(img[None])[0]).max() > 1e-3


def test_tile_plan_covers_every_pixel_once():
    tiles = plan_tiles(17, 10, 4, 3)
    cover = np.zeros((17, 10), int)
    for t in tiles:
        cover[t.y0:t.y1, t.x0:t.x1] += 1
        assert t.cy0 == max(0, t.y0 - 3) and t.cx1 == min(10, t.x1 + 3)
    assert (cover == 1).all()


def test_auto_tile_from_memory_and_engine_limit():
    from scnet_deploy.memory import bytes_per_lr_pixel

    per_px = bytes_per_lr_pixel({"num_feat": 64, "scale": 4, "num_in_ch": 3, "num_out_ch": 3}, "onnxruntime")
    gib = 2**30
    assert auto_tile(100, 100, per_px, 21, gib) is None  # fits whole
    tile = auto_tile(4320, 7680, per_px, 21, gib)
    crop = tile + 42
    assert crop * crop * per_px <= gib < (crop + 1) ** 2 * per_px
    assert auto_tile(200, 200, per_px, 10, gib, max_crop=(64, 64)) == 44
    assert auto_tile(4320, 7680, per_px, 21, None) is None  # no budget known: whole


# -- upscale: formats, bit depth, grey, alpha ---------------------------------------------------------------------


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


def test_engine_built_for_another_range(tiny, tmp_path):
    import shutil

    _, artifact = tiny
    limited = tmp_path / "limited"
    shutil.copytree(artifact, limited)
    manifest = json.loads((limited / "manifest.json").read_text())
    manifest["size_range"] = {"min": [16, 16], "opt": [32, 32], "max": [48, 48]}  # as a TensorRT/Core ML engine
    (limited / "manifest.json").write_text(json.dumps(manifest))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "small.png")
    out = cli("upscale", limited, tmp_path / "small.png", "-o", tmp_path / "o")
    assert out.returncode == 2 and "outside the range this engine was built for" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not list((tmp_path / "o").glob("*.png"))
    Image.fromarray(np.zeros((100, 90, 3), np.uint8)).save(tmp_path / "big.png")  # tiled to fit the engine
    results = upscale(limited, [tmp_path / "big.png"], UpscaleOptions(tmp_path / "o2"))
    assert results[0]["tiles"] > 1


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


# -- hostile inputs -------------------------------------------------------------------------------------------------


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


def test_nonfinite_weights_warn_and_refuse_a_finite_only_purpose(tmp_path):
    sd = tiny_model(2, "pixelshuffle").state_dict()
    sd["body.0.conv1.weight"][0, 0] = float("nan")
    sd["conv_last.bias"][0] = float("inf")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.warns(NonFiniteWeightsWarning, match="NaN/Inf"):
        ckpt = load_checkpoint(tmp_path / "nan.pth")
    assert ckpt.nonfinite == ["body.0.conv1.weight", "conv_last.bias"]
    with pytest.raises(CheckpointError, match="refusing to calibrate"):
        ckpt.require_finite("calibrate")
    out = cli("info", tmp_path / "nan.pth")
    assert out.returncode == 0 and "warning:" in out.stderr and "NaN/Inf" in out.stderr


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


def test_nan_guard_in_validate(tmp_path, monkeypatch):
    from scnet_deploy import validate as validate_module

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "HR" / "a.png")
    sd = tiny_model(2, "pixelshuffle").state_dict()
    sd["conv_last.bias"][:] = float("nan")
    torch.save(sd, tmp_path / "nan_x2.pth")
    with pytest.warns(NonFiniteWeightsWarning):
        result = validate_module.validate([tmp_path / "nan_x2.pth"], validate_module.ValidateOptions(tmp_path, 2))
    assert result["models"][0]["nonfinite_images"] == ["a"] and result["models"][0]["per_image"][0]["nonfinite"]


def test_validate_flags_collapsed_constant_outputs(tmp_path):
    from scnet_deploy.validate import ValidateOptions, validate

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "HR" / "a_black.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "HR" / "b.png")
    flat = {k: torch.zeros_like(v) for k, v in tiny_model(2, "pixelshuffle").state_dict().items()}
    torch.save(flat, tmp_path / "flat_x2.pth")  # zero weights on a black image: a constant output
    live = save_basicsr(tiny_model(2, "pixelshuffle"), tmp_path / "live_x2.pth")
    result = validate([live, tmp_path / "flat_x2.pth"], ValidateOptions(tmp_path, 2))
    by_path = {m["path"]: m for m in result["models"]}
    assert "a_black" in by_path[str(tmp_path / "flat_x2.pth")]["collapsed_images"]
    assert "b" not in by_path[str(live)]["collapsed_images"]


# -- atomic and reproducible artifacts ------------------------------------------------------------------------------


def test_same_inputs_give_same_bytes(tiny, tmp_path):
    ckpt, _ = tiny
    a = export(ckpt, ExportOptions(output=tmp_path / "a")).manifest
    b = export(ckpt, ExportOptions(output=tmp_path / "b")).manifest
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    for m in (a, b):
        m["onnx"].pop("seconds")  # timings are the only thing allowed to differ
    assert a == b


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_export_leaves_nothing_and_rerun_succeeds(tmp_path, sig):
    ckpt = save_basicsr(tiny_model(4, "mlp", num_block=4), tmp_path / "m.pth")
    out = tmp_path / "artifact"
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", "export", str(ckpt), "-o", str(out), "--shift",
                             "slice"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".artifact.tmp-*")):
        time.sleep(0.05)  # wait until the export is writing
    assert list(tmp_path.glob(".artifact.tmp-*")), "export never started writing"
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not out.exists()
    if sig != signal.SIGKILL:
        assert proc.returncode == 130 and "interrupted" in err and not list(tmp_path.glob(".artifact*")), err[-3000:]
    rerun = cli("export", ckpt, "-o", out)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact", "m.pth"]


def _export_patched(tmp_path, body: str) -> subprocess.CompletedProcess:
    """``scnet-deploy export`` under ``python -m`` with the library's ``export``
    replaced by a function whose body is ``body`` (indented lines)."""
    (tmp_path / "patched_cli.py").write_text(
        "import sys\n"
        "import scnet_deploy.export\n"
        "from scnet_deploy.cli import main\n"
        "def export(*args, **kwargs):\n" + body +
        "sys.modules['scnet_deploy.export'].export = export\n"
        "main()\n")
    ckpt = tmp_path / "m.pth"
    if not ckpt.exists():
        save_basicsr(tiny_model(4, "mlp"), ckpt)
    return subprocess.run([sys.executable, "-m", "patched_cli", "export", str(ckpt), "-o", str(tmp_path / "a")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_interrupt_inside_library_exec_still_exits_130_with_the_message(tmp_path):
    # Ctrl-C that lands while a library runs code from a string (dataclasses, namedtuple and lazy imports do: exec
    # and eval of strings) sets CPython's "unhandled KeyboardInterrupt" flag even though we handle it; under
    # `python -m` the interpreter then kills itself with SIGINT after our exit(130): exit -2, no message. typer also
    # turns a KeyboardInterrupt into a silent Exit(130). Here the export itself is such a library call.
    for _ in range(3):
        r = _export_patched(tmp_path, "    exec('import os, signal, time\\nos.kill(os.getpid(), signal.SIGINT)\\n"
                                      "time.sleep(30)')\n")
        assert r.returncode == 130 and "interrupted" in r.stderr and "Traceback" not in r.stderr, (r.returncode,
                                                                                                 r.stderr[-2000:])


def test_interrupt_during_an_import_is_delivered_after_it(tmp_path):
    """Ctrl-C inside an import is held until the import is done: raised inside a C extension's initialiser (onnx's
    pybind11 module creating enums) it aborted the process (-6, seen in CI). The imported module here interrupts
    itself and then marks that it finished; the CLI must still exit 130 with its message."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time, pathlib\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.3)\n"
        "pathlib.Path('imported').write_text('done')\n")
    r = _export_patched(tmp_path, "    import slow_module\n    import time\n    time.sleep(30)\n")
    assert r.returncode == 130 and "interrupted" in r.stderr and "Traceback" not in r.stderr, (r.returncode,
                                                                                             r.stderr[-2000:])
    assert (tmp_path / "imported").read_text() == "done"


def test_interrupt_deferred_from_an_import_then_handled_at_once_leaves_no_alarm(tmp_path):
    """The interrupt lands in an import (its re-delivery is armed), then another path handles it at once (as the
    progress display does): the armed re-delivery must be cancelled, or it fires while the interpreter shuts down
    and SIGALRM kills the process (exit -14, seen in CI)."""
    (tmp_path / "quick_module.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGINT)\n")
    for _ in range(3):
        r = _export_patched(tmp_path, "    import quick_module\n    raise KeyboardInterrupt\n")
        assert r.returncode == 130 and "interrupted" in r.stderr, (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("verb", ["upscale", "pipeline"])
def test_interrupted_upscale_and_pipeline_exit_130_without_traceback(tmp_path, verb):
    ckpt = save_basicsr(tiny_model(4, "mlp", num_block=4), tmp_path / "m.pth")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"
    args = (["upscale", str(ckpt), str(src), "-o", str(out), "--tile", "16"] if verb == "upscale" else
            ["pipeline", str(ckpt), "-o", str(out), "--dataset", str(src), "--formats", "onnx", "--shape", "8x8"])
    proc = subprocess.Popen([sys.executable, "-m", "scnet_deploy", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    done = lambda: [p for p in out.glob("*.png") if not p.name.startswith(".")]  # noqa: E731 (not a temporary)
    while time.time() < deadline and not (done() if verb == "upscale" else list(out.glob("*"))):
        time.sleep(0.05)  # wait until it is working: an output written, or the pipeline's folders made
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-2000:]
    if verb == "upscale":  # what was written is complete: every PNG decodes at 4x, no temporary left behind
        written = list(out.iterdir())
        assert written and len(written) < 40 and all(p.suffix == ".png" and not p.name.startswith(".") for p in written)
        for p in written:
            with Image.open(p) as im:
                assert im.size == (384, 384) and np.asarray(im).shape == (384, 384, 3)


def test_onnx_is_byte_identical_across_processes(tmp_path):
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    for name in ("a", "b"):
        r = cli("export", ckpt, "-o", tmp_path / name)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
