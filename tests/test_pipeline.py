"""scnet_deploy/pipeline.py: the main job end to end on a tiny configuration: small random-weight model, two images,
one size."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.gate import AccuracyGate
from scnet_deploy.pipeline import PipelineOptions, pipeline, plan, recommend, refusals


def test_pipeline_tiny(tmp_path):
    ckpt = save_basicsr(tiny_model(2, "pixelshuffle", num_feat=8, num_block=1), tmp_path / "tiny_x2.pth")
    (tmp_path / "ds" / "HR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(tmp_path / "ds" / "HR" / f"{i}.png")
    qat_args = []
    if importlib.util.find_spec("modelopt") is not None:  # INT8 from its quantization-aware fine-tuning
        from scnet_deploy.qat import QatOptions, qat

        qat(ckpt, QatOptions(output=tmp_path / "tiny_qat_x2.safetensors", data=(tmp_path / "ds",), steps=2, batch=2,
                             patch=12))
        qat_args = ["--qat", str(tmp_path / "tiny_qat_x2.safetensors")]
    out = subprocess.run([sys.executable, "-m", "scnet_deploy", "pipeline", str(ckpt), "-o", str(tmp_path / "out"),
                          "--dataset", str(tmp_path / "ds"), "--size", "8x8,12x10", "--runs", "2", "--calib-count",
                          "4", "--budget", "0.02", "--formats", "onnx,openvino", *qat_args], capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"onnx-fp32", "onnx-slice-fp32"} <= set(summary["built"])
    # INT8 is built only within the accuracy gate and 5% faster than the FP32 engine of the same run (at 12x10, a
    # tiny model's INT8 seldom is): either way the summary and the report say so
    if "onnx-int8" not in summary["built"]:
        why = summary["failed"]["onnx-int8"]
        assert "faster than its FP32 engine" in why or "accuracy gate" in why, why
        assert "failed `onnx-int8`" in (tmp_path / "out" / "report.md").read_text()
    for label in ("onnx-int8", "openvino-int8"):  # built from the quantization-aware checkpoint's ranges
        if qat_args and label in summary["built"]:
            m = json.loads((tmp_path / "out" / "engines" / label / "manifest.json").read_text())
            assert m["checkpoint"]["quantization_aware"]["steps"] == 2
            assert m["int8"]["quantization"]["method"] == "quantization-aware ranges"
    assert summary["skipped"]["coreml-fp16"].startswith("not asked for")
    tuned = summary["forms"]["onnx-fp32"]  # autotuned by default: every candidate of the CPU engine timed in turn
    from scnet_deploy.options import CPU_FORMS

    assert list(tuned["candidates_ms"]) == list(CPU_FORMS) and len(tuned["interleaved_ms"]) == 2
    assert tuned["form"] == min(tuned["interleaved_ms"], key=tuned["interleaved_ms"].get)
    assert set(tuned["interleaved_ms"]) == set(sorted(tuned["candidates_ms"], key=tuned["candidates_ms"].get)[:2])
    assert summary["forms"]["onnx-slice-fp32"]["form"] == "slice" and not summary["forms"]["onnx-slice-fp32"]["candidates_ms"]
    assert tuned["target_lr_size"] == [12, 10]  # autotuned at the largest benchmark size
    # the pick is the fastest engine at the largest size whose drift is within budget, recomputed from results.json
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    drift = {m["path"]: m["drift_db"] for m in results["validate"][0]["models"]}
    candidates = {m["path"]: m["shapes"][-1]["median_ms"] for m in results["bench"][0]["models"]
                  if not m["baseline"] and drift.get(m["path"]) is not None and drift[m["path"]] >= -0.02}
    assert [m["name"] for m in results["bench"][0]["models"] if m["baseline"]] == ["pytorch official eager"]
    best = summary["recommendation"]
    assert best and best["path"] == min(candidates, key=candidates.get) and best["drift_db"] >= -0.02
    over = [p for p, d in drift.items() if d is not None and d < -0.02]
    assert all(best["path"] != p for p in over)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "**Recommendation:**" in report and "### Accuracy" in report and "### Latency, LR 8x8" in report
    assert (tmp_path / "out" / "latency_vs_drift.png").exists()
    assert "recommendation:" in out.stdout and "skip" in out.stdout
    assert "Graph form per engine" in report
    # throughput too, for the engines within budget at the largest size: recommended per goal
    throughput = {m["path"]: m["shapes"][-1]["throughput"]["images_per_s"] for m in results["bench"][0]["models"]
                  if "throughput" in m["shapes"][-1]}
    assert set(throughput) == set(candidates) and all("throughput" not in m["shapes"][0]
                                                      for m in results["bench"][0]["models"])
    fastest = summary["recommendation_throughput"]
    assert fastest["path"] == max(throughput, key=throughput.get) and fastest["inflight"] >= 1
    assert "**Recommendation for throughput**" in report and "### Throughput, LR 12x10" in report
    assert "for throughput:" in out.stdout


def test_plan_says_why_each_backend_is_skipped():
    jobs = {label: reason for label, _, reason in plan(PipelineOptions(output=".", formats=("onnx",)))}
    assert jobs["onnx-fp32"] is None and jobs["openvino-fp32"] == "not asked for (--formats)"
    all_jobs = {label: reason for label, _, reason in plan(PipelineOptions(output="."))}
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "pip install" in all_jobs["tensorrt-fp16"]


def test_plan_builds_ncnn_on_the_cpu_and_on_vulkan_only_when_asked(monkeypatch):
    ncnn_runtime = pytest.importorskip("scnet_deploy.exporters.ncnn.runtime")
    pytest.importorskip("ncnn")
    monkeypatch.setattr(ncnn_runtime, "vulkan_devices", lambda: ({"index": 0, "name": "gpu", "fp16": True,
                                                                  "int8": True},))
    monkeypatch.setattr(ncnn_runtime, "fp16_arithmetic_on_cpu", lambda: False)
    jobs = {label: (target, reason) for label, target, reason in plan(PipelineOptions(output="."))}
    assert jobs["ncnn-fp32"][1] is None and jobs["ncnn-fp32"][0].compute == "cpu"
    assert "no fp16 arithmetic on this CPU" in jobs["ncnn-fp16"][1]
    assert jobs["ncnn-vulkan-fp16"][1] == "vulkan not asked for (--compute)"
    jobs = {label: (target, reason) for label, target, reason in plan(PipelineOptions(output=".",
                                                                                      compute=("cpu", "vulkan")))}
    assert jobs["ncnn-vulkan-fp32"][1] is None and jobs["ncnn-vulkan-fp16"][0].compute == "vulkan"
    monkeypatch.setattr(ncnn_runtime, "vulkan_devices", lambda: ())
    jobs = {label: reason for label, _, reason in plan(PipelineOptions(output=".", compute=("cpu", "vulkan")))}
    assert "no Vulkan device here" in jobs["ncnn-vulkan-fp32"]
    with pytest.raises(ScnetDeployError, match="--compute 'gpu'"):
        pipeline(None, PipelineOptions(output=".", compute=("gpu",)))


def test_recommendation_is_fastest_within_budget():
    validation = {"models": [{"path": "a", "drift_db": -0.5}, {"path": "b", "drift_db": -0.05},
                             {"path": "c", "drift_db": 0.0}]}
    shape = lambda ms: [{"median_ms": ms, "shape": [8, 8]}]  # noqa: E731
    bench = {"models": [{"name": "A", "path": "a", "precision": "int8", "shapes": shape(1.0)},
                        {"name": "B", "path": "b", "precision": "bf16", "shapes": shape(2.0)},
                        {"name": "C", "path": "c", "precision": "fp32", "shapes": shape(3.0)},
                        {"name": "eager", "path": "c", "precision": "fp32", "shapes": shape(0.1), "baseline": True}]}
    assert recommend(validation, bench, AccuracyGate(0.1))["name"] == "B"
    assert recommend(validation, bench, AccuracyGate(1.0))["name"] == "A"
    assert recommend({"models": [{"path": "a", "drift_db": -1}]}, bench, AccuracyGate(0.1)) is None


def test_recommendation_for_throughput_is_the_most_images_per_second_within_budget():
    validation = {"models": [{"path": "a", "drift_db": -0.5}, {"path": "b", "drift_db": -0.05},
                             {"path": "c", "drift_db": 0.0}, {"path": "d", "drift_db": 0.0}]}

    def shape(ms, per_s=None):
        s = {"median_ms": ms, "shape": [8, 8]}
        return [s if per_s is None else {**s, "throughput": {"images_per_s": per_s, "inflight": 2}}]
    bench = {"models": [{"name": "A", "path": "a", "precision": "int8", "shapes": shape(1.0, 9.0)},
                        {"name": "B", "path": "b", "precision": "bf16", "shapes": shape(2.0, 3.0)},
                        {"name": "C", "path": "c", "precision": "fp32", "shapes": shape(3.0, 4.0)},
                        {"name": "D", "path": "d", "precision": "fp32", "shapes": shape(0.5)}]}  # not run in flight
    assert recommend(validation, bench, AccuracyGate(0.1))["name"] == "D"  # latency: the lowest median
    best = recommend(validation, bench, AccuracyGate(0.1), "throughput")
    assert best["name"] == "C" and best["images_per_s"] == 4.0 and best["inflight"] == 2  # A is over budget


def test_default_validation_mixes_content_none_of_it_in_calibration_or_holdout(tmp_path):
    from scnet_deploy.calibration.data import CalibOptions, calibration_set, holdout_set
    from scnet_deploy.imaging.images import list_images
    from scnet_deploy.pipeline import _default_datasets

    folders = _default_datasets(tmp_path)
    assert [f.name for f in folders] == ["photo", "line-art", "text", "flat-colours", "textures"]
    images = [p for f in folders for p in list_images(f / "HR")]
    assert len(images) > 2 * len(folders)  # more than the two photographs the pipeline used to validate on
    used = {h.name for h in holdout_set(CalibOptions(), 4)} | set(calibration_set(CalibOptions(count=8), 4).sources)
    validation = {f"{p.stem.split('_', 1)[0]}:{p.stem.split('_', 1)[1]}" for p in images}
    assert not validation & {n.replace("generated:", "").rsplit(":", 1)[0] + ":" + n.rsplit(":", 1)[1]
                             if n.startswith("generated:") else n for n in used}


def test_the_report_shows_the_whole_image_against_tiles_and_split_execution():
    from scnet_deploy.pipeline import autotune_summary, form_lines

    tuned = {"candidates": {"dwconv": {"median_ms": 10.0}}, "tile": None, "split": None,
             "tiles": {"none": {"median_ms": 10.0}, "256": {"median_ms": 12.0}, "split 64": {"median_ms": 11.0},
                       "split 32": {"error": "not the whole engine's output here"}}}
    line = form_lines({"openvino-fp32": autotune_summary({"form": "dwconv", "autotune": tuned})})[-1]
    assert line.endswith("; whole image 10.0 ms vs tiles of 256 12.0, split 64 11.0") and "split:" not in line
    chosen = form_lines({"e": autotune_summary({"form": "dwconv", "autotune": {**tuned, "split": 64}})})[-1]
    assert "dwconv, split: the tail on tiles of 64 LR px" in chosen


def test_every_faster_engine_not_recommended_says_why_in_one_sentence():
    validation = {"models": [
        {"path": "a", "drift_db": -0.02, "within_budget": False,
         "gate_failure": "line-art: 7.88% of the pixels of line-art_201 are 4+ levels off FP32 (gate: 0.1%)"},
        {"path": "b", "drift_db": -0.01, "within_budget": True}, {"path": "c", "drift_db": 0.0, "within_budget": True},
        {"path": "d", "drift_db": -0.9, "within_budget": False, "worst_dataset": "photo"}]}
    shape = lambda ms: [{"median_ms": ms, "shape": [8, 8]}]  # noqa: E731
    bench = {"models": [{"name": "A", "path": "a", "precision": "int8", "shapes": shape(1.0)},
                        {"name": "B", "path": "b", "precision": "bf16", "shapes": shape(2.0)},
                        {"name": "C", "path": "c", "precision": "fp32", "shapes": shape(3.0)},
                        {"name": "D", "path": "d", "precision": "int8", "shapes": shape(4.0)}]}
    best = recommend(validation, bench, AccuracyGate(0.1))
    assert best["name"] == "B"  # the gate's verdict, not the dB drift alone: A's -0.02 dB would pass that
    lines = refusals(validation, bench, best)
    assert lines == ["- `A` (int8, 1.0 ms) is faster and not recommended: line-art: 7.88% of the pixels of "
                     "line-art_201 are 4+ levels off FP32 (gate: 0.1%)."]  # D is slower: nothing to explain
    assert len(refusals(validation, bench, None)) == 2


def test_an_int8_engine_within_the_gate_that_a_faster_engine_outruns_says_so():
    from scnet_deploy.pipeline import int8_outrun

    validation = {"models": [{"path": "i", "drift_db": -0.01, "within_budget": True},
                             {"path": "b", "drift_db": -0.3, "within_budget": True},
                             {"path": "j", "drift_db": -0.9, "within_budget": False}]}
    shape = lambda ms: [{"median_ms": ms, "shape": [8, 8]}]  # noqa: E731
    bench = {"models": [{"name": "I", "path": "i", "precision": "int8", "shapes": shape(2.0)},
                        {"name": "B", "path": "b", "precision": "bf16", "shapes": shape(1.0)},
                        {"name": "J", "path": "j", "precision": "int8", "shapes": shape(3.0)}]}
    best = recommend(validation, bench, AccuracyGate(0.1))
    assert int8_outrun(validation, bench, best) == [
        "- `I` (int8, 2.0 ms) is within the accuracy gate and not recommended: `B` (bf16) is faster on this CPU "
        "(1.0 ms); where the CPU computes int8 faster than bf16, rerun the pipeline there (or bench --on it)."]
    bench["models"][1]["shapes"] = shape(5.0)  # INT8 the fastest within the gate: recommended, nothing to say
    assert recommend(validation, bench, AccuracyGate(0.1))["name"] == "I"
    assert int8_outrun(validation, bench, recommend(validation, bench, AccuracyGate(0.1))) == []


def test_the_machine_sentence_names_what_the_cpu_has_and_lacks():
    from scnet_deploy.pipeline import SPEED_FEATURES, machine_sentence

    line = machine_sentence({"cpu": {"model": "CPU X", "cores": 2,
                                     "features": {"avx512_bf16": True, "avx512_vnni": True}}})
    lacks = ", ".join(f for f in SPEED_FEATURES if f not in ("avx512_bf16", "avx512_vnni"))
    assert f"Measured on CPU X (2 cores; with avx512_bf16, avx512_vnni; without {lacks}):" in line
