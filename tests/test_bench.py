"""scnet_deploy/bench.py: statistics on a fake slow model, baselines with their own run count, JSON keys, and
throughput with requests in flight."""

import json
import time

import numpy as np
import pytest

from conftest import cli, save_basicsr, tiny_model
from scnet_deploy.bench import bench, BenchOptions, summarize, time_runner
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.report import report
from scnet_deploy.validate import validate, ValidateOptions


class _Slow(Runner):
    backend = "fake"

    def __init__(self, seconds, first=0.0):
        super().__init__(name="slow")
        self.seconds, self.first, self.calls = seconds, first, 0

    def _infer(self, lr):
        self.calls += 1
        time.sleep(self.first if self.calls == 1 else self.seconds)
        return np.zeros((lr.shape[0], 3, lr.shape[2] * 2, lr.shape[3] * 2), np.float32)


class _Sleepy(Runner):
    """Waits 40 ms per call without holding the GIL, like a runtime computing: in flight, calls overlap."""

    def __init__(self):
        super().__init__("fp32", name="sleepy")

    def _infer(self, lr):
        time.sleep(0.04)
        return np.repeat(np.repeat(lr, 2, axis=2), 2, axis=3)


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
    b = bench([artifact], BenchOptions(shapes=((8, 8), (16, 12)), runs=2, warmup=0, baselines=True))
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
    b = bench([artifact], BenchOptions(shapes=((8, 8),), runs=4, warmup=0, baselines=True, baseline_forms=("official",),
                                       baseline_runs=2))
    assert [m["shapes"][0]["runs"] for m in b["models"]] == [2, 4] and b["options"]["baseline_runs"] == 2


def test_bench_cli_json_keys(models, tmp_path):
    _, _, artifact = models
    out = cli("bench", artifact, "--size", "8x8,8x16", "--runs", "2", "--no-baselines", "--json", tmp_path / "b.json",
              "--csv", tmp_path / "b.csv")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert [s["shape"] for s in data["models"][0]["shapes"]] == [[8, 8], [8, 16]]
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 3


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

    from scnet_deploy.exporters.openvino.runtime import compile_options

    runtime = options.runtime.for_throughput()
    assert compile_options(runtime).performance == "throughput" and compile_options(options.runtime).performance == "latency"
    with open_model(artifact, runtime) as runner:
        assert t["inflight"] == runner.optimal_requests() >= 1
    assert t["images_per_s"] > 0 and t["vs_latency"] > 0 and result["options"]["mode"] == "throughput"
    with pytest.raises(ScnetDeployError, match="--mode"):
        bench([artifact], BenchOptions(shapes=((8, 8),), runs=1, baselines=False, mode="fast"))
