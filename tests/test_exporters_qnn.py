"""exporters/qnn/: Qualcomm's HTP through ONNX Runtime's QNN provider, run here on the HTP's x86-64 emulation (the
``qnn`` extra): A16W8 (and int8, fp16) contexts compiled for a SoC, held to the accuracy gate on the emulated HTP,
the context's round trip bit for bit, exact tiles of the static size, the refusals a user meets, and bench saying
that an emulator measures no latency. Tiny models at 16x16 (the emulator takes seconds a frame at 64x64)."""

import json

import numpy as np
import pytest

from conftest import FIXTURES, cli, need, official_cases, one_line_error, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import ExportOptions, export
from scnet_deploy.runtime import open_model

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn is not installed (pip install -e '.[qnn]')")
from scnet_deploy.exporters.qnn.options import Build  # noqa: E402

SIZE = (16, 16)


def qnn_options(output, precision="a16w8", size=SIZE, soc="SM8650", **kw) -> ExportOptions:
    return ExportOptions(output=output, format="qnn", precision=precision, backends={"qnn": Build(soc=soc, size=size)},
                         **kw)


@pytest.fixture(scope="module")
def tiny_x2(tmp_path_factory):
    return save_basicsr(tiny_model(2, "mlp", seed=3), tmp_path_factory.mktemp("qnn") / "tiny_x2.pth")


@pytest.fixture(scope="module")
def a16w8(tiny_x2, tmp_path_factory):
    return export(tiny_x2, qnn_options(tmp_path_factory.mktemp("q") / "qnn", precision="w8a16"))


def test_an_a16w8_context_is_compiled_for_its_soc_and_held_to_the_gate_on_the_emulated_htp(a16w8):
    m = a16w8.manifest
    assert m["precision"] == "a16w8"  # Qualcomm's name, w8a16, is accepted for ours
    assert sorted(m["files"]) == ["model.onnx", "model_qnn.bin"]
    q = m["qnn"]
    assert q["soc"] == "SM8650" and q["size"] == [16, 16] and q["qnn_sdk"] and q["onnxruntime-qnn"]
    assert q["context_round_trip"].startswith("bit-identical")
    i = m["int8"]
    assert i["measured_on"].startswith("emulated HTP, 16x16")
    assert i["quantization"]["activations"] == "uint16 asymmetric"
    assert i["quantization"]["weights"] == "int8 symmetric per-channel"
    assert all(v["passed"] for v in i["gate_by_content"].values() if v["gated"])
    assert {"photo", "line-art", "text", "flat-colours", "textures"} <= set(i["gate_by_content"])
    assert m["verification"]["passed"] and m["verification"]["runtime"] == "qnn emulated HTP a16w8"
    # the context graph is one EPContext node naming the artifact's own context file
    import onnx

    graph = onnx.load(str(a16w8.directory / "model.onnx"), load_external_data=False).graph
    assert [n.op_type for n in graph.node] == ["EPContext"]


def test_the_shipped_context_runs_as_the_build_verified_it_and_larger_inputs_in_exact_tiles(a16w8):
    x = np.random.default_rng(1).random((1, 3, 27, 21), dtype=np.float32)
    with open_model(a16w8.directory) as runner:
        assert runner.name.endswith("qnn emulated HTP a16w8") and runner.timing_note == "emulated HTP: accuracy only"
        whole = [runner.infer(x[:, :, i:i + 16, j:j + 16]) for i, j in ((0, 0), (11, 5))]
        tiled = runner.infer(x)
        again = runner.infer(x)
    assert tiled.shape == (1, 3, 54, 42) and np.array_equal(tiled, again)  # deterministic
    halo = a16w8.manifest["qnn"]["halo"]
    # a crop's interior, halo or more from its inner edges, is what the tiles keep: the same numbers
    assert np.array_equal(tiled[:, :, :2 * (16 - halo), :2 * (16 - halo)], whole[0][:, :, :2 * (16 - halo),
                                                                                    :2 * (16 - halo)])
    with pytest.raises(ScnetDeployError, match="outside the range"):
        with open_model(a16w8.directory) as runner:
            runner.infer(x[:, :, :12, :12])


def test_bench_on_the_emulator_prints_no_milliseconds(a16w8, tmp_path):
    proc = cli("bench", a16w8.directory, "--size", "16x16", "--runs", "2", "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "emulated HTP: accuracy only" in proc.stdout and " ms" not in proc.stdout.split("accuracy only")[1]
    model = json.loads((tmp_path / "b.json").read_text())["models"][0]
    assert model["shapes"] == [] and model["not_timed"]["reason"] == "emulated HTP: accuracy only"
    assert "median_ms" not in json.dumps(model)
    # --profile on the emulator: QNN's own profiler, the NPU's modelled cycles per stage as shares, no milliseconds
    proc = cli("bench", a16w8.directory, "--size", "16x16", "--runs", "1", "--profile", "--json", tmp_path / "p.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    shares = json.loads((tmp_path / "p.json").read_text())["models"][0]["not_timed"]["profile"]["shares"]
    assert shares["upsampler"] > 0 and shares["tail"] > 0 and abs(sum(shares.values()) - 1) < 1e-6
    assert "where its modelled cycles go: head" in proc.stdout


def test_refusals_are_one_line(tiny_x2, tmp_path):
    assert "Unrecognized soc_model" in one_line_error(cli("export", tiny_x2, "-f", "qnn", "--precision", "a16w8",
                                                          "--soc", "SM1234", "--htp-size", "16x16",
                                                          "-o", tmp_path / "bad"))
    assert "offers ['a16w8', 'int8', 'fp16']" in one_line_error(cli("export", tiny_x2, "-f", "qnn", "-o",
                                                                    tmp_path / "fp32"))
    # an HTP without fp16 (v68): the emulator would compute float32, which the NPU cannot run
    assert "has no fp16 arithmetic" in one_line_error(cli("export", tiny_x2, "-f", "qnn", "--precision", "fp16",
                                                          "--soc", "SM8350", "--htp-size", "16x16",
                                                          "-o", tmp_path / "fp16"))
    assert not any((tmp_path / d).exists() for d in ("bad", "fp32", "fp16"))


def test_a_context_outside_its_artifact_is_refused_before_it_loads(a16w8, tmp_path):
    """The context graph names the file the provider reads: a path elsewhere would escape the artifact's hashes."""
    import shutil

    import onnx

    from scnet_deploy.manifest import file_hashes

    copy = tmp_path / "edited"
    shutil.copytree(a16w8.directory, copy)
    model = onnx.load(str(copy / "model.onnx"), load_external_data=False)
    next(a for a in model.graph.node[0].attribute if a.name == "ep_cache_context").s = b"../elsewhere.bin"
    onnx.save(model, str(copy / "model.onnx"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = file_hashes(copy, manifest["files"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 16, 16), np.float32))
    assert "not the artifact's own context file" in one_line_error(
        cli("infer", copy, tmp_path / "x.npz", "-o", tmp_path / "o.npz"))


@pytest.mark.parametrize("precision", [pytest.param("a16w8", marks=pytest.mark.slow), "int8", "fp16"])
def test_the_official_fixture_on_the_emulated_htp_matches_its_outputs(precision, tmp_path):
    """The official SCNet-T x4 (pixel-shuffle) checkpoint compiled at its fixture's own 24x31 size: A16W8 and fp16
    against the official implementation's outputs within their tolerance; A8W8 refused with the gate's reasons.
    A16W8 is slow (60-80 s: its budget loop splits layers, each try quantized again); the tiny model's tests cover its
    path by default."""
    case = next((c for c in official_cases() if c["name"] == "scnet_t_x4_ps"), None)
    if case is None:
        pytest.skip(f"{FIXTURES} has no scnet_t_x4_ps (the project's shared test data)")
    ckpt = need(FIXTURES / "scnet_t_x4_ps.pth")
    x = np.load(FIXTURES / "scnet_t_x4_ps.input.npy")
    options = qnn_options(tmp_path / "qnn", precision=precision, size=tuple(x.shape[2:]))
    if precision == "int8":  # A8W8 of the official checkpoint fails the gate: refused with the gate's reasons
        from scnet_deploy.calibration.budget import BudgetNotMet

        with pytest.raises(BudgetNotMet, match="fails the accuracy gate .* at 16-bit activations .* a16w8"):
            export(ckpt, options)
        assert not (tmp_path / "qnn").exists()
        return
    result = export(ckpt, options)
    with open_model(result.directory) as runner:
        out = runner.infer(x)
    ref = np.load(FIXTURES / "scnet_t_x4_ps.output.npy")
    psnr = 10 * np.log10(1 / np.mean((out - ref) ** 2))
    assert psnr > {"a16w8": 45, "fp16": 45}[precision], psnr


def test_the_torch_free_device_environment_runs_the_context_and_bench_over_ssh_says_it_is_not_timed(a16w8, tmp_path):
    """The device install (the qnn extra, no PyTorch) runs the EPContext: the same output as here, bit for bit; bench
    over ssh brings back the emulator's "not timed", through the door's schema."""
    import subprocess
    from dataclasses import replace

    from devices import device_venv, start_sshd
    from scnet_deploy.bench import BenchOptions
    from scnet_deploy.devices.fleet import bench_on
    from scnet_deploy.options import RemoteOptions

    device = device_venv()
    python = device / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import onnxruntime_qnn, importlib.util as u; print(u.find_spec('torch'))"],
                           capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "None", probe.stderr
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x[0])
    proc = subprocess.run([str(python), "-m", "scnet_deploy", "infer", str(a16w8.directory), str(tmp_path / "x.npz"),
                           "-o", str(tmp_path / "there.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open_model(a16w8.directory) as runner:
        here = runner.infer(x)[0]
    assert np.array_equal(np.load(tmp_path / "there.npz")["x"], here)
    gen = start_sshd(tmp_path / "sshd")
    sshd = next(gen)
    try:
        (tmp_path / "runs").mkdir()
        remote = replace(RemoteOptions(str(python), ssh_config=sshd.config, remote_dir=str(tmp_path / "runs")))
        result = bench_on([a16w8.directory], BenchOptions(shapes=((16, 16),), runs=1, warmup=0), (sshd.url(),), remote)
        row = result["devices"]["device"]["models"][0]
        assert row["shapes"] == [] and row["not_timed"]["reason"] == "emulated HTP: accuracy only"
    finally:
        next(gen, None)


def test_the_pipeline_builds_qnn_only_when_asked_and_validates_it_on_crops(tmp_path):
    """Asked for (--formats), the pipeline builds the A16W8 context at its pipeline size, validates it with the
    reference on centre crops of the validation images at that size (the emulator takes seconds a frame), and never
    times it; not asked for, it says why it is skipped."""
    from PIL import Image

    from scnet_deploy.build_options import PipelineOptions
    from scnet_deploy.pipeline import plan

    assert "built only when asked" in dict((label, reason) for label, _, reason in plan(PipelineOptions(output=".")))[
        "qnn-a16w8"]
    ckpt = save_basicsr(tiny_model(2, "mlp", seed=3), tmp_path / "tiny_x2.pth")
    (tmp_path / "ds" / "HR").mkdir(parents=True)
    for i in range(2):
        base = np.random.default_rng(i).integers(0, 256, (6, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize((120, 100), Image.BICUBIC).save(tmp_path / "ds" / "HR" / f"{i}.png")
    out = cli("pipeline", ckpt, "-o", tmp_path / "out", "--dataset", tmp_path / "ds", "--size", "8x8", "--runs", "2",
              "--calib-count", "4", "--formats", "onnx,qnn", timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "qnn-a16w8" in summary["on_crops"]["engines"] and "qnn-a16w8" not in summary["built"]
    assert json.loads((tmp_path / "out" / "engines" / "qnn-a16w8" / "manifest.json").read_text())["qnn"]["size"] == [48,
                                                                                                                    48]
    row = next(m for m in summary["on_crops"]["models"] if m["path"].endswith("qnn-a16w8"))
    assert len(row["per_image"]) == 2 and row["drift_db"] is not None and row["within_budget"] is not None
    report = (tmp_path / "out" / "report.md").read_text()
    assert "validation-crops" in report and "qnn-a16w8" in report
    assert summary["recommendation"] is None or not summary["recommendation"]["path"].endswith("qnn-a16w8")
