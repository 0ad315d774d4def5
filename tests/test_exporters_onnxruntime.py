"""exporters/onnxruntime/: the ONNX Runtime engine's runner contract, and its INT8 export validated and benched."""

import numpy as np
import pytest
from PIL import Image

from scnet_deploy.calibration.budget import psnr_scores
from scnet_deploy.calibration.data import CalibOptions, holdout_set
from scnet_deploy.calibration.onnxruntime_int8 import onnx_infer
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.options import RuntimeOptions
from scnet_deploy.runtime import open_model


@pytest.fixture(scope="module")
def onnx_artifact(ckpt, tmp_path_factory):
    return export(ckpt, ExportOptions(output=tmp_path_factory.mktemp("a") / "onnx")).directory


FAST = CalibOptions(count=8, crop=32)


def _independent_holdout_drift(manifest: dict, int8_infer, fp32_infer, scale: int) -> float:
    """The hold-out drift recomputed from the saved model with the library's metric, not read from the manifest."""
    holdout = holdout_set(CalibOptions(count=8, crop=32), scale)
    assert [h.name for h in holdout] == manifest["int8"]["holdout"]["sources"]
    return float(np.mean(np.subtract(psnr_scores(int8_infer, holdout, scale), psnr_scores(fp32_infer, holdout, scale))))


def _fp32_infer(ckpt, tmp_path):
    out = tmp_path / "fp32_ref"
    export(ckpt, ExportOptions(output=out))
    return onnx_infer(out / "model.onnx")


def test_onnxruntime_runner_contract(onnx_artifact, ckpt):
    x = np.random.default_rng(0).random((2, 3, 9, 11), dtype=np.float32)
    with open_model(ckpt) as ref, open_model(onnx_artifact, RuntimeOptions(threads=1)) as engine:
        expected = ref.infer(x)
        got = engine.infer(x)
        assert got.shape == (2, 3, 36, 44) and np.abs(got - expected).max() <= 1e-4
        assert engine.infer(x[0]).shape == (3, 36, 44)  # CHW in, CHW out
        assert engine.manifest["backend"] == "onnxruntime"
    with open_model(ckpt, form="slice") as deploy:
        assert np.abs(deploy.infer(x) - expected).max() <= 1e-5


def test_onnxruntime_int8_export_validate_bench(ckpt, tmp_path):
    result = export(ckpt, ExportOptions(output=tmp_path / "int8", precision="int8", keep_slower_int8=True, calib=FAST))
    m = result.manifest
    i = m["int8"]
    assert m["precision"] == "int8" and i["calibration"]["count"] == 8 and i["budget_db"] == 0.1  # default budget
    assert set(i["calibration"]["sources"]).isdisjoint(i["holdout"]["sources"])
    assert {r["content"] for r in i["per_image"]} >= {"photo", "line-art", "text", "flat-colours", "textures"}
    assert i["worst_image"]["drift_db"] == min(r["drift_db"] for r in i["per_image"])
    recomputed = _independent_holdout_drift(m, onnx_infer(tmp_path / "int8" / "model.onnx"),
                                            _fp32_infer(ckpt, tmp_path), 4)
    assert abs(recomputed - i["drift_db"]) < 1e-6 and recomputed >= -0.1
    v = m["verification"]
    assert v["passed"] and "the accuracy gate on the hold-out: at most 0.1 dB PSNR-Y drift" in v["rule"] and v["holdout_mean_drift_db"] == i["drift_db"]
    (tmp_path / "ds" / "HR").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
        tmp_path / "ds" / "HR" / "a.png")
    from scnet_deploy.bench import BenchOptions, bench
    from scnet_deploy.validate import ValidateOptions, validate

    v = validate([ckpt, tmp_path / "int8"], ValidateOptions(tmp_path / "ds", 4))
    assert v["models"][1]["precision"] == "int8" and v["models"][1]["drift_db"] is not None
    assert "int8" in v["models"][1]["name"]  # labelled by what it is
    b = bench([tmp_path / "int8"], BenchOptions(shapes=((8, 8),), runs=2, baselines=False))
    assert b["models"][0]["precision"] == "int8"
