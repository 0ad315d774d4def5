"""exporters/openvino/: precisions (f32, bf16, f16 weights) verified as such, one conversion per form, hints
recorded, and a missing nncf as a one-line error."""

import re

import numpy as np
import pytest

from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters import registry
from scnet_deploy.exporters.runner import psnr_vs_reference
from scnet_deploy.exporters.openvino.options import Build as OpenVINOBuild
from scnet_deploy.runtime import open_model


@pytest.mark.openvino
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_openvino_precisions(ckpt, tmp_path, precision):
    ov_backend = pytest.importorskip("scnet_deploy.exporters.openvino.runtime",
                                     reason="openvino is not installed (pip install -e '.[openvino]' in the checkout)")
    if precision == "bf16" and "BF16" not in ov_backend.cpu_capabilities():
        pytest.skip("this CPU has no bf16 support in OpenVINO")
    result = export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision=precision))
    m = result.manifest
    assert sorted(m["files"]) == ["model.bin", "model.xml"]
    hint = m["openvino"]["compile_config"]["INFERENCE_PRECISION_HINT"]
    v = m["verification"]
    if precision == "fp32":
        assert hint == "f32" and m["openvino"]["effective_inference_precision"] == "f32"
        assert v["max_abs_diff"] <= 1e-4
    elif precision == "bf16":
        assert hint == "bf16" and m["openvino"]["effective_inference_precision"] == "bf16"
        assert 0 < v["max_abs_diff"] and v["min_psnr_vs_fp32_db"] >= 30  # its own precision, with its own drift
    else:
        assert m["openvino"]["weights"] == "fp16"
    x = np.random.default_rng(5).random((1, 3, 7, 5), dtype=np.float32)
    with open_model(tmp_path / "ov") as runner, open_model(ckpt) as reference:
        assert runner.precision == precision
        # the recorded hint is honoured at load: what the compiled model runs, as OpenVINO reports it
        assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == hint
        out, ref = runner.infer(x), reference.infer(x)
        assert out.shape == (1, 3, 28, 20)
        if hint == "f32":
            assert np.abs(out - ref).max() <= 1e-4
        else:  # bf16 (or f16) compute: close to FP32, but not FP32
            assert 0 < np.abs(out - ref).max() and psnr_vs_reference(out, ref) >= 30


@pytest.mark.openvino
@pytest.mark.slow  # 13 s: a caching check; OpenVINO exports are tested by default
def test_one_session_converts_each_form_to_openvino_once_and_writes_the_same_ir(ckpt, tmp_path, monkeypatch):
    """The pipeline builds OpenVINO f32, fp16 (and bf16, INT8) from one form in one session: the ONNX graph is
    converted once, and every IR is the one a separate export writes (weights byte for byte)."""
    pytest.importorskip("scnet_deploy.exporters.openvino.runtime",
                        reason="openvino is not installed (pip install -e '.[openvino]' in the checkout)")
    import openvino as ov

    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.export import build_session, write_artifact
    from scnet_deploy.session import Target

    alone = {p: export(ckpt, ExportOptions(output=tmp_path / f"alone-{p}", format="openvino", precision=p)).directory
             for p in ("fp16", "fp32")}
    converted, real = [], ov.convert_model
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: converted.append(a) or real(*a, **k))
    with build_session(load_checkpoint(ckpt), ExportOptions(output=tmp_path / "s"), tmp_path / "s") as session:
        for precision in ("fp16", "fp32"):
            write_artifact(session, [Target("openvino", precision)], tmp_path / f"s-{precision}")
    assert len(converted) == 1

    def ir(directory):  # OpenVINO numbers the nodes it names itself from a process-wide counter: not compared
        xml = re.sub(r'name="(\w+?)_\d+', r'name="\1_N', (directory / "model.xml").read_text())
        return xml, (directory / "model.bin").read_bytes()
    for precision, directory in alone.items():
        assert ir(tmp_path / f"s-{precision}") == ir(directory), precision


@pytest.mark.openvino
def test_openvino_fp16_weights_are_half_the_size_and_hints_recorded(ckpt, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed")
    a = export(ckpt, ExportOptions(output=tmp_path / "a", format="openvino"))
    b = export(ckpt, ExportOptions(output=tmp_path / "b", format="openvino", precision="fp16",
                                   backends={"openvino": OpenVINOBuild(inference_precision="f32")}))
    size = lambda d: (d / "model.bin").stat().st_size  # noqa: E731
    assert size(b.directory) < 0.6 * size(a.directory)
    # the hint is an export option (--ov-hint); the performance hint is how an engine is run (bench --ov-performance)
    assert b.manifest["openvino"]["compile_config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert b.manifest["options"]["openvino"]["inference_precision"] == "f32"
    assert b.manifest["openvino"]["compile_config"]["PERFORMANCE_HINT"] == "LATENCY"


def test_missing_nncf_is_a_one_line_error_before_anything_is_built(ckpt, tmp_path, monkeypatch):
    """OpenVINO is installed but its INT8 dependency is not: the export refuses up front, naming the fix, and the
    pipeline's plan skips that engine with the same reason."""
    import importlib.util

    from scnet_deploy.pipeline import PipelineOptions, plan

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(registry.BackendUnavailable,
                       match=r"nncf.*pip install -e '\.\[export\]'") as info:
        export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8", keep_slower_int8=True))
    assert "\n" not in str(info.value) and not (tmp_path / "ov").exists()
    reasons = {label: reason for label, _, reason in plan(PipelineOptions(output=tmp_path, formats=("openvino",)))}
    assert "nncf" in reasons["openvino-int8"] and reasons["openvino-fp32"] is None
