"""validate (protocol, drift, budget exit codes), bench (statistics on a fake-slow model, baselines) and report."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import DATASETS, need, save_basicsr, smooth_hr_folder, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.bench import BenchOptions, bench, summarize, time_runner
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.imaging.metrics import psnr_ssim_y, ssim
from scnet_deploy.report import report
from scnet_deploy.validate import ValidateOptions, validate


def cli(*args):
    return subprocess.run([sys.executable, "-m", "scnet_deploy", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return smooth_hr_folder(tmp_path_factory.mktemp("ds"), 3, (32, 24))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    ref = save_basicsr(tiny_model(4, seed=1), d / "ref.pth")
    other = save_basicsr(tiny_model(4, seed=2), d / "other.pth")
    artifact = export(ref, ExportOptions(output=d / "onnx")).directory
    return ref, other, artifact


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


def test_validate_drift_and_per_image(dataset, models):
    ref, other, artifact = models
    result = validate([ref, artifact, other], ValidateOptions(dataset, 4, bicubic=True, budget_db=0.1))
    by_name = {m["path"]: m for m in result["models"] if m["path"]}
    assert by_name[str(ref)]["reference"] and by_name[str(ref)]["drift_db"] == 0
    onnx = by_name[str(artifact)]
    assert abs(onnx["drift_db"]) < 1e-3 and onnx["max_abs_diff"] < 1e-4 and onnx["within_budget"]
    assert {"name", "psnr_y", "ssim_y", "drift_db"} <= set(onnx["per_image"][0]) and len(onnx["per_image"]) == 3
    bad = by_name[str(other)]
    assert bad["drift_db"] != 0 and bad["worst_image"]["name"].startswith("img")
    assert result["passed"] == bad["within_budget"]
    assert result["models"][-1]["kind"] == "method" and "within_budget" not in result["models"][-1]


def test_validation_collects_the_garbage_each_model_leaves_scanning_only_new_objects():
    """What exists when validation starts is frozen (not scanned by the collection after each model: after the
    pipeline's builds that scan took 0.4 s a model); cycles made during it, a closed engine's, are still collected;
    afterwards nothing stays frozen."""
    import gc
    import weakref

    from scnet_deploy.validate import _collecting_only_new_objects, _release_freed_memory

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    with _collecting_only_new_objects():
        assert gc.get_freeze_count() > 0
        made = cycle()
        _release_freed_memory()
        assert made() is None
    assert gc.get_freeze_count() == 0


def test_artifact_alone_finds_its_reference(dataset, models):
    _, _, artifact = models
    result = validate([artifact], ValidateOptions(dataset, 4))
    assert result["models"][0]["reference"] and result["models"][0]["implicit"]
    assert abs(result["models"][1]["drift_db"]) < 1e-3


@pytest.fixture(scope="module")
def second_dataset(tmp_path_factory):
    """Another content type: black strokes on white, where a model that brightens or darkens shows at once."""
    root = tmp_path_factory.mktemp("lineart")
    (root / "HR").mkdir()
    for i in range(2):
        img = np.full((24, 32, 3), 255, np.uint8)
        img[4 + 3 * i:8 + 3 * i, 2:30] = 0
        img[:, 10 + i:12 + i] = 0
        Image.fromarray(img).save(root / "HR" / f"strokes{i}.png")
    return root


def test_validate_several_datasets_names_the_worst(dataset, second_dataset, models):
    ref, other, artifact = models
    result = validate([ref, artifact, other], ValidateOptions((dataset, second_dataset), 4, budget_db=0.1))
    names = [d["name"] for d in result["datasets"]]
    assert names == [dataset.name, second_dataset.name] and result["images"] == 5
    assert [d["images"] for d in result["datasets"]] == [3, 2]
    bad = next(m for m in result["models"] if m["path"] == str(other))
    per_set = {d["name"]: next(m for m in d["models"] if m["path"] == str(other))["drift_db"]
               for d in result["datasets"]}
    # a model's drift is that of its worst dataset, which is named; its worst image is the worst over both
    assert bad["drift_db"] == min(per_set.values()) and bad["worst_dataset"] == min(per_set, key=per_set.get)
    assert bad["worst_image"]["drift_db"] == min(r["drift_db"] for r in bad["per_image"])
    assert {r["dataset"] for r in bad["per_image"]} == set(names)
    assert result["passed"] == bad["within_budget"]
    with pytest.raises(ScnetDeployError, match="different names"):
        validate([ref], ValidateOptions((dataset, dataset), 4))


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


def test_validate_cli_budget_exit_codes(dataset, models, tmp_path):
    ref, other, artifact = models
    ok = cli("validate", ref, artifact, "--dataset", dataset, "--scale", "4", "--budget", "0.05", "--json",
             tmp_path / "v.json", "--csv", tmp_path / "v.csv")
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "v.json").read_text())
    assert all({"psnr_y", "ssim_y", "drift_db", "per_image"} <= set(m) for m in data["models"])
    assert (tmp_path / "v.csv").read_text().startswith("model,image,psnr_y,ssim_y,drift_db")
    over = cli("validate", ref, other, "--dataset", dataset, "--scale", "4", "--budget", "0.05")
    assert over.returncode == 1 and "over budget" in over.stderr
    wrong = cli("validate", ref, "--dataset", dataset, "--scale", "2")
    assert wrong.returncode == 2 and "x4 model" in wrong.stderr


def test_bicubic_rows_on_set5_via_cli(tmp_path):
    need(DATASETS / "Set5")
    out = cli("validate", "--dataset", DATASETS / "Set5", "--scale", "3", "--method", "bicubic", "--json",
              tmp_path / "b.json")
    assert out.returncode == 0, out.stderr
    row = json.loads((tmp_path / "b.json").read_text())["models"][0]
    assert abs(row["psnr_y"] - 30.39) <= 0.02 and abs(row["ssim_y"] - 0.8682) <= 0.002


class _Slow(Runner):
    backend = "fake"

    def __init__(self, seconds, first=0.0):
        super().__init__(name="slow")
        self.seconds, self.first, self.calls = seconds, first, 0

    def _infer(self, lr):
        self.calls += 1
        time.sleep(self.first if self.calls == 1 else self.seconds)
        return np.zeros((lr.shape[0], 3, lr.shape[2] * 2, lr.shape[3] * 2), np.float32)


def test_bench_statistics_on_a_fake_slow_model():
    runner = _Slow(0.02, first=0.1)
    r = time_runner(runner, (10, 20), BenchOptions(runs=8, warmup=1, batch=2), scale=2)
    assert runner.calls == 1 + 1 + 8 and r["runs"] == 8
    assert r["first_inference_ms"] >= 100 and 19 <= r["median_ms"] < 60
    assert r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
    assert r["images_per_s"] == pytest.approx(2 / (r["median_ms"] / 1e3))
    assert r["megapixels_per_s"] == pytest.approx(2 * 20 * 40 / 1e6 / (r["median_ms"] / 1e3))
    timed = time_runner(_Slow(0.01), (4, 4), BenchOptions(runs=None, seconds=0.15, warmup=0), scale=2)
    assert 5 <= timed["runs"] <= 16
    s = summarize([1.0, 2.0, 3.0, 4.0], 1, (10, 10))
    assert s["median_ms"] == 2500 and s["mean_ms"] == 2500 and s["p90_ms"] == pytest.approx(3700)


def test_bench_with_baselines_and_report(models, dataset, tmp_path):
    ref, _, artifact = models
    b = bench([artifact], BenchOptions(shapes=((8, 8), (16, 12)), runs=2, warmup=0))
    names = [m["name"] for m in b["models"]]
    assert names[:2] == ["pytorch official eager", "pytorch deploy form (dwconv)"] and len(names) == 3
    assert b["models"][0]["shapes"][0]["speedup_vs_official_eager"] == 1.0
    for engine, official in ((b["models"][2]["shapes"][i], b["models"][0]["shapes"][i]) for i in range(2)):
        # an engine's speed-up is the official eager median over its own, at the same shape
        assert engine["speedup_vs_official_eager"] == pytest.approx(official["median_ms"] / engine["median_ms"])
    assert {"median_ms", "p90_ms", "p99_ms", "images_per_s", "megapixels_per_s"} <= set(b["models"][2]["shapes"][1])
    assert b["machine"]["cpu"]["cores"] >= 1
    v = validate([ref, artifact], ValidateOptions(dataset, 4))
    md = report([b, v], tmp_path / "rep")
    text = md.read_text()
    assert "### Accuracy" in text and "### Latency, LR 8x8" in text and "| pytorch official eager |" in text
    for png in ("latency_vs_resolution.png", "drift.png", "latency_vs_drift.png"):
        assert (tmp_path / "rep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["bench"][0]["options"]["runs"] == 2


def test_bench_times_the_baselines_with_their_own_run_count(models):
    _, _, artifact = models
    b = bench([artifact], BenchOptions(shapes=((8, 8),), runs=4, warmup=0, baseline_forms=("official",),
                                       baseline_runs=2))
    assert [m["shapes"][0]["runs"] for m in b["models"]] == [2, 4] and b["options"]["baseline_runs"] == 2


def test_bench_cli_json_keys(models, tmp_path):
    _, _, artifact = models
    out = cli("bench", artifact, "--shape", "8x8,8x16", "--runs", "2", "--no-baselines", "--json", tmp_path / "b.json",
              "--csv", tmp_path / "b.csv")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert [s["shape"] for s in data["models"][0]["shapes"]] == [[8, 8], [8, 16]]
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 3


class _Sleepy(Runner):
    """Waits 40 ms per call without holding the GIL, like a runtime computing: in flight, calls overlap."""

    def __init__(self):
        super().__init__("fp32", name="sleepy")

    def _infer(self, lr):
        time.sleep(0.04)
        return np.repeat(np.repeat(lr, 2, axis=2), 2, axis=3)


def test_throughput_mode_keeps_requests_in_flight():
    from scnet_deploy.bench import time_throughput

    options = BenchOptions(runs=8, warmup=0, inflight=4)
    latency = time_runner(_Sleepy(), (4, 4), options, scale=2)
    throughput = time_throughput(_Sleepy(), (4, 4), options, scale=2)
    assert throughput["inflight"] == 4 and throughput["images_per_round"] == 8
    assert throughput["images_per_s"] > 2.5 * latency["images_per_s"]  # 4 overlapping sleeps: about 4x
    one = time_throughput(_Sleepy(), (4, 4), BenchOptions(runs=4, warmup=0), scale=2)
    assert one["inflight"] == 1 and one["images_per_s"] < 1.5 * latency["images_per_s"]
    # one request at a time is the engine's optimum: the latency run's numbers, not a second measurement
    calls = []
    counted = _Sleepy()
    counted._infer = lambda lr: calls.append(lr) or lr
    same = time_throughput(counted, (4, 4), BenchOptions(runs=4, warmup=0), scale=2, latency=latency)
    assert same["images_per_s"] == latency["images_per_s"] and same["inflight"] == 1 and calls == []
    asked = time_throughput(counted, (4, 4), BenchOptions(runs=4, warmup=0, inflight=1), scale=2, latency=latency)
    assert asked["inflight"] == 1 and len(calls) > 4 and "from" not in asked  # --inflight 1 asked: measured


@pytest.mark.openvino
def test_openvino_throughput_uses_its_async_queue_and_optimal_requests(tmp_path):
    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    artifact = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino")).directory
    options = BenchOptions(shapes=((8, 8),), runs=4, warmup=0, baselines=False, mode="throughput")
    result = bench([artifact], options)
    t = result["models"][0]["shapes"][0]["throughput"]
    from scnet_deploy.runtime import open_model

    runtime = options.runtime.for_throughput()
    assert runtime.openvino.performance == "throughput" and options.runtime.openvino.performance == "latency"
    with open_model(artifact, runtime) as runner:
        assert t["inflight"] == runner.optimal_requests() >= 1
    assert t["images_per_s"] > 0 and t["vs_latency"] > 0 and result["options"]["mode"] == "throughput"
    with pytest.raises(ScnetDeployError, match="--mode"):
        bench([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False, mode="fast"))
