"""Backend contract and registry, doctor, ONNX Runtime and OpenVINO engines, runners and artifact checks."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import save_basicsr, tiny_model
from scnet_deploy.errors import VerificationError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.exporters import registry
from scnet_deploy.exporters.runner import InputOutOfRange, Runner, SizeRange, psnr_vs_reference, verify_runner
from scnet_deploy.exporters.torch_runner import TorchRunner
from scnet_deploy.options import OpenVINOOptions, RuntimeOptions
from scnet_deploy.runtime import ArtifactError, open_model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_basicsr(tiny_model(4, "mlp"), tmp_path_factory.mktemp("ckpt") / "tiny.pth")


@pytest.fixture(scope="module")
def onnx_artifact(ckpt, tmp_path_factory):
    return export(ckpt, ExportOptions(output=tmp_path_factory.mktemp("a") / "onnx")).directory


def test_registry_names_and_duplicates():
    assert registry.format_names() == ["coreml", "onnx", "openvino", "tensorrt"]
    assert {b.name for b in registry.backends()} == {"onnxruntime", "openvino", "tensorrt", "coreml"}
    with pytest.raises(ValueError, match="twice"):
        registry.register(registry.get_backend("openvino"))
    with pytest.raises(registry.ScnetDeployError, match="choose one of"):
        registry.backend_for_format("tflite")


def test_missing_dependency_says_the_exact_pip_install():
    fake = registry.Backend("fake", "fake", "nowhere", "no_such_module_xyz", "no-such-dist", "pip install no-such-dist",
                            ("fp32",), "test")
    assert not fake.available() and fake.version() is None
    with pytest.raises(registry.BackendUnavailable, match="Fix: pip install no-such-dist"):
        fake.runtime()


def test_import_and_help_need_only_the_core():
    code = ("import sys, scnet_deploy, scnet_deploy.cli, scnet_deploy.exporters.registry; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(scnet_deploy.cli.app, ['export', '--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('openvino', 'coremltools', 'tensorrt', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_doctor_json():
    out = subprocess.run([sys.executable, "-m", "scnet_deploy", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {r["backend"]: r for r in report["backends"]}
    assert rows["onnxruntime"]["available"] and rows["onnxruntime"]["version"]
    for row in rows.values():
        assert row["available"] or row["install"].startswith("pip install")
    assert {"avx512f", "avx512_vnni", "amx_int8"} <= set(report["cpu"]["features"])
    assert isinstance(report["gpus"], list) and report["versions"]["torch"]


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


def test_tampered_artifact_is_refused(onnx_artifact, tmp_path, monkeypatch):
    import shutil

    from scnet_deploy.exporters.onnxruntime import runtime as onnxruntime_runtime

    copy = tmp_path / "copy"
    shutil.copytree(onnx_artifact, copy)
    with (copy / "model.onnx").open("ab") as f:
        f.write(b"\0")
    loads = []  # refused before loading: the backend's loader is never reached
    monkeypatch.setattr(onnxruntime_runtime, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(ArtifactError, match="do not match the sha256"):
        open_model(copy)
    assert loads == []
    monkeypatch.undo()
    manifest = json.loads((copy / "manifest.json").read_text())
    for files in (None, {}):  # a manifest that lists no files cannot vouch for any
        (copy / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(ArtifactError, match="lists no files"):
            open_model(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="lacks"):
        open_model(copy)
    with pytest.raises(ArtifactError, match="not an scnet-deploy artifact"):
        open_model(tmp_path)


class _Constant(Runner):
    backend = "fake"

    def __init__(self, value, **kw):
        super().__init__(**kw)
        self.value = value

    def _infer(self, lr):
        return np.full((lr.shape[0], 3, lr.shape[2] * 4, lr.shape[3] * 4), self.value, np.float32)


def test_verification_rules_per_precision():
    model = tiny_model(4)
    with pytest.raises(VerificationError, match="max abs diff"):
        verify_runner(_Constant(0.0), model, [(1, 8, 8)], "fp32")
    with pytest.raises(VerificationError, match="PSNR vs FP32"):
        verify_runner(_Constant(float("nan"), precision="bf16"), model, [(1, 8, 8)], "bf16")
    report = verify_runner(TorchRunner(model), model, [(1, 8, 8), (2, 5, 7)], "fp32")
    assert report["passed"] and report["max_abs_diff"] == 0.0
    # INT8: an exact engine still fails when its hold-out drift is over budget; passes with the budget met
    x = [np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)]
    record = {"budget_db": 0.1, "drift_db": -0.3, "worst_image": {"name": "a", "drift_db": -0.5}}
    with pytest.raises(VerificationError, match="hold-out mean drift >= -0.1 dB"):
        verify_runner(TorchRunner(model), model, [], "int8", inputs=x, int8={**record, "within_budget": False})
    ok = verify_runner(TorchRunner(model), model, [], "int8", inputs=x, int8={**record, "within_budget": True})
    assert ok["passed"] and ok["holdout_mean_drift_db"] == -0.3


def test_size_range_is_enforced_with_a_clear_message():
    runner = _Constant(0.5, size_range=SizeRange((16, 16), (32, 32), (64, 64)), name="engine")
    assert runner.infer(np.zeros((1, 3, 16, 64), np.float32)).shape == (1, 3, 64, 256)
    with pytest.raises(InputOutOfRange, match="outside the range this engine was built for"):
        runner.infer(np.zeros((1, 3, 65, 20), np.float32))
    assert SizeRange.from_dict(runner.size_range.to_dict()) == runner.size_range


def test_several_formats_share_one_onnx(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'scnet-deploy[openvino]')")
    from scnet_deploy.exporters import onnx_graph

    calls = []
    real = onnx_graph.torch_to_onnx
    monkeypatch.setattr(onnx_graph, "torch_to_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = export(ckpt, ExportOptions(output=tmp_path / "multi", format="onnx,openvino"))
    assert len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == ["onnx", "openvino"]
    assert result.manifests["onnx"]["onnx"]["nodes_after_simplify"] == \
        result.manifests["openvino"]["onnx"]["nodes_after_simplify"]


def test_precision_not_offered_is_a_user_error(ckpt, tmp_path):
    with pytest.raises(registry.ScnetDeployError, match="offers"):
        export(ckpt, ExportOptions(output=tmp_path / "x", format="onnx", precision="bf16"))
    assert not (tmp_path / "x").exists()


@pytest.mark.openvino
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_openvino_precisions(ckpt, tmp_path, precision):
    ov_backend = pytest.importorskip("scnet_deploy.exporters.openvino.runtime",
                                     reason="openvino is not installed (pip install 'scnet-deploy[openvino]')")
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
def test_one_session_converts_each_form_to_openvino_once_and_writes_the_same_ir(ckpt, tmp_path, monkeypatch):
    """The pipeline builds OpenVINO f32, fp16 (and bf16, INT8) from one form in one session: the ONNX graph is
    converted once, and every IR is the one a separate export writes (weights byte for byte)."""
    pytest.importorskip("scnet_deploy.exporters.openvino.runtime",
                        reason="openvino is not installed (pip install 'scnet-deploy[openvino]')")
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
                                   openvino=OpenVINOOptions(performance="throughput")))
    size = lambda d: (d / "model.bin").stat().st_size  # noqa: E731
    assert size(b.directory) < 0.6 * size(a.directory)
    assert b.manifest["openvino"]["compile_config"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert b.manifest["options"]["openvino"]["performance"] == "throughput"


def test_missing_nncf_is_a_one_line_error_before_anything_is_built(ckpt, tmp_path, monkeypatch):
    """OpenVINO is installed but its INT8 dependency is not: the export refuses up front, naming the fix, and the
    pipeline's plan skips that engine with the same reason."""
    import importlib.util

    from scnet_deploy.pipeline import PipelineOptions, plan

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(registry.BackendUnavailable,
                       match=r"nncf.*pip install 'scnet-deploy\[export,openvino\]'") as info:
        export(ckpt, ExportOptions(output=tmp_path / "ov", format="openvino", precision="int8"))
    assert "\n" not in str(info.value) and not (tmp_path / "ov").exists()
    reasons = {label: reason for label, _, reason in plan(PipelineOptions(output=tmp_path, formats=("openvino",)))}
    assert "nncf" in reasons["openvino-int8"] and reasons["openvino-fp32"] is None
