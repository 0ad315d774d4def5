"""scnet_deploy/memory.py: the memory model, refusals in one line before anything runs, and verbs run under a real
memory limit (a cgroup) that tile instead of being killed."""

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli, save_basicsr, tiny_model
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.memory import bytes_per_lr_pixel, estimate_bytes, largest_fitting_shape, limit_bytes, require_fits


SCNET_T = {"num_feat": 64, "scale": 4, "num_in_ch": 3, "num_out_ch": 3, "receptive_radius": 21}


class MemoryCgroup:
    """A memory cgroup (v2, or v1's memory controller) with a hard limit, for child processes; removed on exit."""

    def __init__(self, limit: int) -> None:
        name = f"scnet-deploy-test-{uuid.uuid4().hex[:8]}"
        v2, v1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/memory")
        if (v2 / "cgroup.controllers").exists() and "memory" in (v2 / "cgroup.controllers").read_text():
            self.path, limit_file = v2 / name, "memory.max"
        elif (v1 / "memory.limit_in_bytes").exists():
            self.path, limit_file = v1 / name, "memory.limit_in_bytes"
        else:
            pytest.skip("no memory cgroup controller here (cgroup v1 memory or v2 with memory)")
        try:
            self.path.mkdir()
            (self.path / limit_file).write_text(str(limit))
            if limit_file == "memory.limit_in_bytes" and (self.path / "memory.memsw.limit_in_bytes").exists():
                (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit))  # no escape into swap
        except OSError as e:
            self.remove()
            pytest.skip(f"cannot create a memory cgroup here ({e}); needs root or a delegated cgroup")

    def run(self, args: list, timeout: int = 600) -> subprocess.CompletedProcess:
        """Run ``args`` inside the cgroup (the shell joins it, then becomes the command)."""
        script = f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"'
        return subprocess.run(["sh", "-c", script, "sh", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


@pytest.fixture
def cgroup_2g():
    group = MemoryCgroup(2 * 2**30)
    yield group
    group.remove()


@pytest.fixture(scope="module")
def scnet_t_onnx(tmp_path_factory):
    """SCNet-T x4 (64 features: the memory is that of the real model) as an ONNX Runtime artifact."""
    from scnet_deploy.pipeline import reference_checkpoint

    return export(reference_checkpoint(), ExportOptions(output=tmp_path_factory.mktemp("t") / "onnx")).directory


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    """An HR image whose x4 LR (360x640) needs about 2.8 GB in ONNX Runtime: more than a 2 GB cgroup holds."""
    folder = tmp_path_factory.mktemp("big") / "HR"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (45, 80, 3), dtype=np.uint8)
    hr = np.asarray(Image.fromarray(base).resize((2560, 1440), Image.BICUBIC))
    Image.fromarray(hr).save(folder / "big.png")
    lr = np.asarray(Image.fromarray(hr).resize((640, 360), Image.BICUBIC))
    Image.fromarray(lr).save(folder.parent / "big_lr.png")
    return folder.parent


def test_estimate_is_the_backends_live_maps_at_the_output_resolution():
    map_bytes = 64 * 16 * 4  # one 64-channel float32 map at x4, per LR pixel
    assert 2.5 * map_bytes < bytes_per_lr_pixel(SCNET_T, "openvino") < 2.6 * map_bytes
    assert bytes_per_lr_pixel(SCNET_T, "pytorch") > bytes_per_lr_pixel(SCNET_T, "onnxruntime") > \
        bytes_per_lr_pixel(SCNET_T, "openvino")
    assert bytes_per_lr_pixel(SCNET_T, "tensorrt") == bytes_per_lr_pixel(SCNET_T, "pytorch")  # unmeasured: the most
    assert estimate_bytes(SCNET_T, "openvino", 180, 320, batch=2) == 2 * 180 * 320 * bytes_per_lr_pixel(SCNET_T,
                                                                                                     "openvino")
    h, w = largest_fitting_shape(SCNET_T, "openvino", 2000, 2000, 16 * 2**30)
    assert h == w and estimate_bytes(SCNET_T, "openvino", h, w) <= 16 * 2**30 < estimate_bytes(
        SCNET_T, "openvino", h + 2, w + 2)
    assert limit_bytes(512) == 512 * 2**20


def test_refusal_is_one_line_with_the_estimate_and_what_fits():
    from scnet_deploy.memory import MemoryLimitError

    require_fits(SCNET_T, "openvino", "e", 180, 320, 2**30)  # 0.6 GB: fits
    with pytest.raises(MemoryLimitError) as info:
        require_fits(SCNET_T, "openvino", "engine", 2000, 2000, 16 * 2**30)
    message = str(info.value)
    assert "\n" not in message and "39.6 GB" in message and "16.0 GB" in message and "1270x1270" in message


def test_available_memory_honours_the_address_space_limit():
    code = "from scnet_deploy.memory import available_bytes; print(available_bytes())"
    free = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    limited = subprocess.run(["prlimit", f"--as={4 * 2**30}", sys.executable, "-c", code], capture_output=True,
                             text=True)
    if limited.returncode != 0:
        pytest.skip(f"prlimit could not run Python here: {limited.stderr.strip()[:200]}")
    room = int(limited.stdout)
    assert 0 < room < 4 * 2**30 and room < free


def test_bench_over_the_limit_is_refused_in_seconds_not_killed(cgroup_2g, scnet_t_onnx):
    t0 = time.perf_counter()
    out = cgroup_2g.run([sys.executable, "-m", "scnet_deploy", "bench", scnet_t_onnx, "--size", "720x1280",
                         "--runs", "1", "--no-baselines"])
    assert out.returncode == 2 and time.perf_counter() - t0 < 60, (out.returncode, out.stderr[-1500:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs about" in lines[0] and re.search(r"largest shape .* is \d+x\d+", lines[0])
    # the shape really does not fit: told to ignore the model (a budget beyond the cgroup), the kernel kills it
    killed = cgroup_2g.run([sys.executable, "-m", "scnet_deploy", "bench", scnet_t_onnx, "--size", "720x1280",
                            "--runs", "1", "--no-baselines", "--max-memory", "100000"])
    assert killed.returncode in (-9, 137), (killed.returncode, killed.stderr[-500:])


def test_validate_within_a_memory_limit_tiles_exactly(tmp_path):
    """validate under --max-memory runs each image in exact tiles, scoring what the whole image scores (the cgroup
    test below checks the same under a real 2 GB limit, with the real model: -m slow)."""
    import json

    from conftest import smooth_hr_folder

    ckpt = save_basicsr(tiny_model(4), tmp_path / "m.pth")
    artifact = export(ckpt, ExportOptions(output=tmp_path / "onnx")).directory
    dataset = smooth_hr_folder(tmp_path / "data", 1, (512, 384))
    for name, limit in (("limited", "8"), ("whole", "20000")):
        run = cli("validate", artifact, "--dataset", dataset, "--scale", "4", "--max-memory", limit, "--json",
                  tmp_path / f"{name}.json")
        assert run.returncode == 0, run.stderr[-2000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["models"][0]["per_image"][0] for n in ("limited", "whole"))
    assert a["tile"] is not None and b["tile"] is None
    assert abs(a["psnr_y"] - b["psnr_y"]) < 1e-3 and abs(a["ssim_y"] - b["ssim_y"]) < 1e-5


@pytest.mark.slow
def test_validate_under_the_limit_tiles_exactly(cgroup_2g, scnet_t_onnx, big_image, tmp_path):
    args = ["validate", scnet_t_onnx, "--dataset", big_image, "--scale", "4"]
    limited = cgroup_2g.run([sys.executable, "-m", "scnet_deploy", *args, "--json", tmp_path / "limited.json"])
    assert limited.returncode == 0, limited.stderr[-2000:]
    whole = cli(*args, "--json", tmp_path / "whole.json", "--max-memory", "20000")
    assert whole.returncode == 0, whole.stderr[-2000:]
    import json

    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["models"][0]["per_image"][0] for n in ("limited", "whole"))
    assert a["tile"] is not None and b["tile"] is None
    assert abs(a["psnr_y"] - b["psnr_y"]) < 1e-3 and abs(a["ssim_y"] - b["ssim_y"]) < 1e-5


def test_upscale_under_the_limit_matches_the_whole_image(cgroup_2g, scnet_t_onnx, big_image, tmp_path):
    src = big_image / "big_lr.png"
    limited = cgroup_2g.run([sys.executable, "-m", "scnet_deploy", "upscale", scnet_t_onnx, src, "-o",
                             tmp_path / "tiled.png"])
    assert limited.returncode == 0, limited.stderr[-2000:]
    assert "tile(s)" in limited.stdout and not limited.stdout.count("(1 tile(s)")
    whole = cli("upscale", scnet_t_onnx, src, "-o", tmp_path / "whole.png", "--max-memory", "20000")
    assert whole.returncode == 0 and "(1 tile(s)" in whole.stdout
    a = np.asarray(Image.open(tmp_path / "tiled.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "whole.png")).astype(int)
    assert a.shape == (1440, 2560, 3) and np.abs(a - b).max() <= 1  # float rounding at a tile seam, at most


@pytest.mark.slow
def test_pipeline_under_the_limit_finishes(cgroup_2g, big_image, tmp_path):
    from scnet_deploy.pipeline import reference_checkpoint

    out = cgroup_2g.run([sys.executable, "-m", "scnet_deploy", "pipeline", reference_checkpoint(), "-o",
                         tmp_path / "p", "--dataset", big_image, "--formats", "onnx", "--size", "90x160",
                         "--runs", "2", "--optimize", "none"], timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "p" / "report.md").exists()


@pytest.mark.slow
def test_soak_resident_memory_stays_flat_and_every_output_is_right(tmp_path):
    """300 images through one engine in one process: resident memory after the first 50 does not grow beyond
    noise, and every output equals the engine's own whole-image result."""
    from scnet_deploy.imaging.images import read_rgb_u8, round_to_bits, to_float_chw
    from scnet_deploy.runtime import open_model
    from scnet_deploy.upscale import UpscaleOptions, upscale

    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    artifact = export(ckpt, ExportOptions(output=tmp_path / "a")).directory
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(300):
        h, w = rng.integers(24, 64, 2)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / f"{i:03d}.png")
    rss = []

    def sample(event):
        if event.done:
            rss.append(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    results = upscale(artifact, [src], UpscaleOptions(tmp_path / "out"), progress=sample)
    assert len(results) == 300 and all(r["status"] == "done" for r in results)
    growth = max(rss[50:]) - rss[50]
    assert growth < 32 * 2**20, f"resident memory grew {growth / 2**20:.1f} MB over 250 images"
    with open_model(artifact) as runner:
        for r in results:
            expected = round_to_bits(runner.infer(to_float_chw(read_rgb_u8(r["input"]))).transpose(1, 2, 0), 8)
            assert np.array_equal(np.asarray(Image.open(r["output"])), expected), r["input"]


def test_pipeline_refuses_a_bench_shape_that_cannot_fit_before_building(tmp_path):
    t0 = time.perf_counter()
    out = cli("pipeline", "-o", tmp_path / "p", "--size", "3000x3000", "--formats", "onnx", "--max-memory", "4096")
    assert out.returncode == 2 and time.perf_counter() - t0 < 60
    assert "needs about" in out.stderr and not (tmp_path / "p").exists()
