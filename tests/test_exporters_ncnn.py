"""exporters/ncnn/: pnnx's conversion verified against PyTorch on the official fixtures, any input size, fp16 as its
own precision, the CPU and a Vulkan device (lavapipe where Mesa's drivers are installed), exact tiling, and the
refusals a user meets (a unit a backend does not have, Vulkan without a device)."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, cli, need, official_cases, one_line_error, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.exporters.runner import psnr_vs_reference
from scnet_deploy.runtime import open_model
from scnet_deploy.upscale import UpscaleOptions, upscale

ncnn_runtime = pytest.importorskip("scnet_deploy.exporters.ncnn.runtime")
pytest.importorskip("ncnn", reason="ncnn is not installed (pip install -e '.[ncnn]' in the checkout)")


def has_vulkan() -> bool:
    return bool(ncnn_runtime.vulkan_devices())


def vulkan(test):
    """A test on a Vulkan device (marker ``vulkan``), skipped with the fix where ncnn sees none."""
    return pytest.mark.vulkan(pytest.mark.skipif(not has_vulkan(), reason="ncnn sees no Vulkan device (apt-get "
                                                 "install mesa-vulkan-drivers gives lavapipe)")(test))


@pytest.fixture(scope="module")
def tiny_x4(tmp_path_factory):
    d = tmp_path_factory.mktemp("ncnn")
    return save_basicsr(tiny_model(4, "mlp", seed=7), d / "tiny_x4.pth")


@pytest.fixture(scope="module")
def cpu_fp32(tiny_x4, tmp_path_factory):
    return export(tiny_x4, ExportOptions(output=tmp_path_factory.mktemp("n") / "ncnn", format="ncnn")).directory


@pytest.mark.parametrize("name", ["scnet_t_x4_ps", "scnet_t_x3_mlp"])
def test_ncnn_fp32_matches_the_official_implementation(name, tmp_path):
    case = next((c for c in official_cases() if c["name"] == name), None)
    if case is None:
        pytest.skip(f"{FIXTURES} has no {name} (the project's shared test data)")
    ckpt = need(FIXTURES / f"{name}.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "ncnn", format="ncnn"))
    m = result.manifest
    assert sorted(m["files"]) == ["model.ncnn.bin", "model.ncnn.param"]
    assert m["ncnn"]["compute"] == "cpu" and m["ncnn"]["weights"] == "fp32"
    # pnnx's default fp16 weights alone put an engine ~5e-4 off PyTorch: fp32 is fp32 throughout
    assert m["verification"]["passed"] and m["verification"]["max_abs_diff"] < 1e-5
    x = np.load(FIXTURES / f"{name}.input.npy")
    with open_model(result.directory) as runner:
        assert runner.name.endswith("ncnn CPU fp32")
        out = runner.infer(x)
    assert np.abs(out - np.load(FIXTURES / f"{name}.output.npy")).max() < 1e-4


def test_ncnn_takes_any_input_size_and_batches(cpu_fp32, tiny_x4):
    rng = np.random.default_rng(1)
    with open_model(cpu_fp32) as runner, open_model(tiny_x4) as reference:
        for h, w in [(1, 1), (5, 3), (17, 23), (2, 33), (31, 8)]:
            x = rng.random((1, 3, h, w), dtype=np.float32)
            assert np.abs(runner.infer(x) - reference.infer(x)).max() < 1e-5, (h, w)
        x = rng.random((2, 3, 9, 7), dtype=np.float32)
        out = runner.infer(x)
        assert out.shape == (2, 3, 36, 28) and np.abs(out - reference.infer(x)).max() < 1e-5


def test_ncnn_upscale_in_tiles_equals_the_whole_image(cpu_fp32, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (23, 17, 3), dtype=np.uint8)).save(src)
    tiled = upscale(cpu_fp32, [src], UpscaleOptions(tmp_path / "tiled", tile=6))
    whole = upscale(cpu_fp32, [src], UpscaleOptions(tmp_path / "whole"))
    assert tiled[0]["tiles"] > 1 and whole[0]["tiles"] == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "tiled" / "in_x4.png")),
                          np.asarray(Image.open(tmp_path / "whole" / "in_x4.png")))


def test_ncnn_fp16_is_its_own_precision_with_fp16_weights(tiny_x4, cpu_fp32, tmp_path):
    m = export(tiny_x4, ExportOptions(output=tmp_path / "fp16", format="ncnn", precision="fp16")).manifest
    assert m["ncnn"]["weights"] == "fp16" and m["verification"]["min_psnr_vs_fp32_db"] >= 30
    assert 0 < m["verification"]["max_abs_diff"]  # the weights' rounding, at least
    size = (tmp_path / "fp16" / "model.ncnn.bin").stat().st_size
    assert size < 0.6 * (cpu_fp32 / "model.ncnn.bin").stat().st_size  # stored as fp16
    # whether ncnn computes in fp16 on this CPU is measured, not assumed: on and off compared
    x = np.random.default_rng(0).random((1, 3, 24, 24), dtype=np.float32)
    with ncnn_runtime.NcnnRunner(tmp_path / "fp16", "fp16") as on, ncnn_runtime.NcnnRunner(tmp_path / "fp16") as off:
        assert m["ncnn"]["fp16_arithmetic"] == (not np.array_equal(on.infer(x), off.infer(x)))


@vulkan
def test_ncnn_on_vulkan_fp32_is_exact_at_sizes_ncnn_aligns(tiny_x4, tmp_path):
    """h*w not a multiple of 4: a Mat wrapping numpy memory has no channel alignment, which ncnn's Vulkan upload
    reads wrongly; the runner fills a Mat of its own."""
    m = export(tiny_x4, ExportOptions(output=tmp_path / "vk", format="ncnn", compute="vulkan")).manifest
    assert m["ncnn"]["compute"] == "vulkan" and m["ncnn"]["vulkan_device"]["name"]
    assert m["verification"]["runtime"].startswith("ncnn Vulkan") and m["verification"]["max_abs_diff"] < 1e-5
    rng = np.random.default_rng(3)
    with open_model(tmp_path / "vk") as runner, open_model(tiny_x4) as reference:
        assert "Vulkan" in runner.name
        for h, w in [(17, 23), (5, 3), (1, 1)]:
            x = rng.random((1, 3, h, w), dtype=np.float32)
            assert np.abs(runner.infer(x) - reference.infer(x)).max() < 1e-5, (h, w)


@vulkan
def test_ncnn_on_vulkan_fp16_computes_in_fp16_where_the_device_has_it(tiny_x4, tmp_path):
    m = export(tiny_x4, ExportOptions(output=tmp_path / "vk16", format="ncnn", precision="fp16",
                                      compute="vulkan")).manifest
    device = m["ncnn"]["vulkan_device"]
    assert m["ncnn"]["fp16_arithmetic"] == bool(device["fp16"])
    assert m["verification"]["min_psnr_vs_fp32_db"] >= 30
    x = np.random.default_rng(4).random((1, 3, 19, 13), dtype=np.float32)
    with open_model(tmp_path / "vk16") as runner, open_model(tiny_x4) as reference:
        out, ref = runner.infer(x), reference.infer(x)
    assert 0 < np.abs(out - ref).max() and psnr_vs_reference(out, ref) >= 30


def test_compute_units_a_backend_lacks_are_one_line_errors(tiny_x4, tmp_path, monkeypatch):
    for args, expected in ((["-f", "onnx", "--compute", "vulkan"], "--compute vulkan is not offered by --format "
                             "onnx; it offers ['cpu']"),
                           (["-f", "ncnn", "--compute", "gpu"], "it offers ['cpu', 'vulkan']"),
                           (["-f", "ncnn", "--precision", "int8"], "it offers ['fp32', 'fp16']")):
        assert expected in one_line_error(cli("export", tiny_x4, "-o", tmp_path / "x", *args))
    assert not (tmp_path / "x").exists()
    monkeypatch.setattr(ncnn_runtime, "vulkan_devices", lambda: ())
    with pytest.raises(ScnetDeployError, match="no Vulkan device here; install a Vulkan driver .*mesa-vulkan-drivers"):
        export(tiny_x4, ExportOptions(output=tmp_path / "y", format="ncnn", compute="vulkan"))
    assert not (tmp_path / "y").exists()


def test_vulkan_support_is_read_from_ncnns_own_report():
    log = ("[0 llvmpipe (LLVM 15.0.6, 256 bits)]  fp16-p/s/u/a=1/1/1/1  int8-p/s/u/a=1/1/1/0  bf16-p/s=1/0\n"
           "[1 Mali-G710]  fp16-p/s/u/a=1/1/1/0  int8-p/s/u/a=1/1/1/1\n")
    assert ncnn_runtime._support(log, 0, "fp16") is True and ncnn_runtime._support(log, 0, "int8") is False
    assert ncnn_runtime._support(log, 1, "fp16") is False and ncnn_runtime._support(log, 1, "int8") is True
    assert ncnn_runtime._support(log, 2, "fp16") is None


def test_doctor_lists_ncnn_its_units_and_vulkan_devices():
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    row = next(b for b in json.loads(proc.stdout)["backends"] if b["backend"] == "ncnn")
    assert row["precisions"] == ["fp32", "fp16"] and row["compute_units"] == ["cpu", "vulkan"]
    assert [d["index"] for d in row["vulkan_devices"]] == list(range(len(ncnn_runtime.vulkan_devices())))
    assert all({"name", "fp16", "int8"} <= set(d) for d in row["vulkan_devices"])
    assert "fp16-p/s/u/a" not in proc.stderr  # ncnn's own report is read, not shown
