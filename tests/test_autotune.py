"""scnet_deploy/autotune.py: --optimize latency: every candidate form built, verified and timed; the fastest kept and
recorded; exact tiling and split execution recorded and honoured where they measure faster."""

import time

import numpy as np
import pytest
import torch

from conftest import save_basicsr, tiny_model
from scnet_deploy import autotune
from scnet_deploy.autotune import fastest, TuneOptions
from scnet_deploy.errors import ExportError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.exporters.runner import Runner
from scnet_deploy.model.rewrites import DeployOptions
from scnet_deploy.options import CANDIDATE_FORMS, CPU_FORMS
from scnet_deploy.runtime import open_model


def _ops(path):
    import onnx

    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    return {n.op_type for n in model.graph.node}, groups


class _PricedRunner(Runner):
    """A stand-in engine whose time is ``ms(pixels)``: tiles can be made cheap or dear per test."""

    def __init__(self, ms) -> None:
        super().__init__()
        self.ms, self.sizes = ms, []

    def _infer(self, lr):
        self.sizes.append(lr.shape[2:])
        time.sleep(self.ms(lr.shape[2] * lr.shape[3]) / 1e3)
        return np.zeros((*lr.shape[:2], 2 * lr.shape[2], 2 * lr.shape[3]), np.float32)


def test_form_names_round_trip_and_bad_ones_are_refused():
    for form in (DeployOptions("dwconv"), DeployOptions("fold", True), DeployOptions("slice", True)):
        assert DeployOptions.from_name(form.name) == form
    with pytest.raises(ExportError, match="shift form"):
        DeployOptions.from_name("roll+conv_before_upsample")
    with pytest.raises(ExportError, match="--optimize"):
        TuneOptions("fastest").check()


def test_fastest_ignores_candidates_that_were_not_timed():
    assert fastest({"a": {"median_ms": 3.0}, "b": {"median_ms": 2.0}, "c": {"error": "x"}}) == "b"
    assert fastest({"a": {"median_ms": None}}) is None


def test_latency_export_times_every_candidate_and_keeps_the_fastest(tmp_path):
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", tune=TuneOptions("latency", size=(24, 20), runs=2,
                                                                                tiles=(8,))))
    record = result.manifest["autotune"]
    times = {name: c["median_ms"] for name, c in record["candidates"].items()}
    assert set(times) == set(CPU_FORMS) and all(t > 0 for t in times.values())  # ONNX Runtime CPU's default
    final = {name: c["interleaved_ms"] for name, c in record["candidates"].items() if "interleaved_ms" in c}
    assert set(final) == set(sorted(times, key=times.get)[:2])  # the two fastest, timed again in turn
    assert record["chosen"] == min(final, key=final.get) == result.manifest["form"]
    assert record["target_lr_size"] == [24, 20] and "8" in record["tiles"] and "none" in record["tiles"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.onnx"]  # no leftovers
    # the artifact is the chosen form's graph, and it is exact
    shift = DeployOptions.from_name(record["chosen"]).shift
    ops, groups = _ops(tmp_path / "a" / "model.onnx")
    assert ("Slice" in ops) == (shift == "slice") and (max(groups) > 1) == (shift == "dwconv")
    x = np.random.default_rng(0).random((1, 3, 11, 13), dtype=np.float32)
    with open_model(tmp_path / "a") as runner, torch.no_grad():
        ref = tiny_model(4, "mlp")(torch.from_numpy(x)).numpy()
        assert np.abs(runner.infer(x) - ref).max() <= 1e-4


@pytest.mark.parametrize("form", ["fold+conv_before_upsample", "slice"])
def test_a_single_candidate_is_the_graph_written(tmp_path, form):
    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", tune=TuneOptions("latency", (form,), (16, 16), 1, ())))
    assert result.manifest["form"] == form and result.manifest["onnx"]["options"]["shift"] == form.split("+")[0]
    ops, groups = _ops(tmp_path / "a" / "model.onnx")
    assert ("Slice" in ops) == (form == "slice") and max(groups) == 1


def test_a_tile_must_beat_the_whole_image_by_the_margin():
    from scnet_deploy.autotune import choose_plan

    assert choose_plan({"none": {"median_ms": 100.0}, "128": {"median_ms": 97.0}}) is None  # within noise
    assert choose_plan({"none": {"median_ms": 100.0}, "128": {"median_ms": 90.0}, "256": {"median_ms": 80.0}}) == \
        ("tile", 256)
    assert choose_plan({"none": {"median_ms": 100.0}, "128": {"median_ms": 90.0}, "split 64": {"median_ms": 80.0}}) \
        == ("split", 64)
    assert choose_plan({"none": {"median_ms": 100.0}, "split 64": {"median_ms": 80.0, "from": "screening"}}) is None
    assert choose_plan({"none": {"median_ms": 100.0}, "128": {"error": "too small"}}) is None


def test_tiles_are_timed_against_the_whole_image_on_one_engine(tmp_path):
    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", tune=TuneOptions("latency", ("dwconv",), (40, 40), 2,
                                                                                (16, 64))))
    tiles = result.manifest["autotune"]["tiles"]
    assert set(tiles) == {"none", "16"} and all(t["median_ms"] > 0 for t in tiles.values())  # 64 >= the image


@pytest.mark.parametrize("tile_cheaper", [False, True])
def test_tiles_are_screened_and_only_a_promising_one_is_timed_again_in_turn(monkeypatch, tile_cheaper):
    """Each tile is first screened alone against the whole image's median from the candidates' timing; a tile
    already slower there is not run again, and nothing else is timed; a faster one is compared with the whole image
    screened alone, then timed in turn with it, and only that timing can choose it."""
    from types import SimpleNamespace

    in_turn_ways = []
    real_in_turn = autotune.in_turn
    monkeypatch.setattr(autotune, "in_turn", lambda ways, *a, **k: in_turn_ways.append(set(ways)) or
                        real_in_turn(ways, *a, **k))
    whole = 20.0
    runner = _PricedRunner(lambda px: whole if px >= 32 * 32 else 0.1 if tile_cheaper else whole * px / 256)
    x = np.zeros((1, 3, 32, 32), np.float32)
    timings = autotune._time_tiles(runner, SimpleNamespace(receptive_radius=2, scale=2), "onnx", x,
                                   TuneOptions(runs=4, tiles=(16, 64)), lambda e: None, whole)
    assert set(timings) == {"none", "16"}  # 64 >= the image: not a tile
    if tile_cheaper:
        assert in_turn_ways == [{"none", "16"}] and autotune.choose_plan(timings) == ("tile", 16)
        whole_calls = [i for i, hw in enumerate(runner.sizes) if hw == (32, 32)]
        assert whole_calls[:3] == [12, 13, 14]  # after the tile's screening (3 runs of 4 tiles): the whole, alone
    else:  # the warm-up and one timed run of the tile, then nothing more
        assert in_turn_ways == [] and timings["16"]["from"] == "screening"
        assert len(runner.sizes) == 2 * 4 and autotune.choose_plan(timings) is None  # 2x2 tiles a run


def test_a_measured_faster_tile_is_recorded_and_every_verb_runs_tiled_and_exact(tmp_path, monkeypatch):
    from scnet_deploy.exporters.runner import TiledRunner

    # Pretend this machine runs tiles of 16 faster (the measurement itself is tested above).
    monkeypatch.setattr(autotune, "_time_tiles", lambda *a: {"none": {"median_ms": 100.0}, "16": {"median_ms": 1.0}})
    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", tune=TuneOptions("latency", ("dwconv",), (40, 40), 1,
                                                                                (16,))))
    assert result.manifest["autotune"]["tile"] == 16
    x = np.random.default_rng(1).random((2, 3, 37, 41), dtype=np.float32)
    with open_model(tmp_path / "a") as runner, torch.no_grad():
        assert isinstance(runner, TiledRunner) and runner.halo == result.manifest["arch"]["receptive_radius"]
        ref = tiny_model(2, "mlp")(torch.from_numpy(x)).numpy()
        assert np.abs(runner.infer(x) - ref).max() <= 1e-4


def test_several_formats_share_one_onnx_per_candidate_form(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from scnet_deploy.exporters import onnx_graph

    calls = []
    real = onnx_graph.build_onnx
    monkeypatch.setattr(onnx_graph, "build_onnx", lambda *a, **k: calls.append(a[1].shift) or real(*a, **k))
    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", format="onnx,openvino",
                                        tune=TuneOptions("latency", ("dwconv", "slice"), (16, 16), 1, ())))
    assert sorted(calls) == ["dwconv", "slice"]
    for fmt in ("onnx", "openvino"):
        assert set(result.manifests[fmt]["autotune"]["candidates"]) == {"dwconv", "slice"}
    assert not list((tmp_path / "a").rglob(".scratch"))


@pytest.mark.coreml
def test_an_engine_that_cannot_run_here_keeps_the_first_form_and_says_why(tmp_path):
    pytest.importorskip("coremltools")
    import sys

    if sys.platform == "darwin":
        pytest.skip("Core ML runs on macOS: every candidate would be timed")
    ckpt = save_basicsr(tiny_model(2, "mlp"), tmp_path / "m_x2.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", format="coreml",
                                        tune=TuneOptions("latency", size=(16, 16), runs=1)))
    record = result.manifest["autotune"]
    assert list(record["candidates"]) == ["dwconv"] and record["chosen"] == "dwconv"
    assert "macOS" in record["candidates"]["dwconv"]["not_timed"]


def scripted_speed(self, target, workdir, fields):
    from scnet_deploy.int8_speed import SpeedCheck

    return SpeedCheck((8, 8), 1.0, 2.0)


def test_int8_candidates_over_budget_are_set_aside_and_stopped_once_slower_than_the_best_within_budget(
        tmp_path, monkeypatch):
    """The orchestration, with builds and timings scripted: A is within budget at 100 ms; B, C, D are over budget
    all-INT8 at 80, 150 and 84 ms. B (fastest) is taken up first with the limit 100 and ends within budget at 90;
    D is taken up with the limit 90 (84 < 0.95 x 90) and its loop stops; C is not rebuilt at all (150 > 90)."""
    from scnet_deploy.calibration.budget import Abandoned
    from scnet_deploy.session import BuildSession

    all_int8 = {"slice": None, "dwconv": 80.0, "fold": 150.0, "slice+conv_before_upsample": 84.0}
    within = {"slice": 100.0, "dwconv": 90.0}
    calls, limits = [], {}

    def build_form(self, target, form, workdir, speed_limit=None, first_try=None):
        calls.append((form.name, None if speed_limit is None else speed_limit.ms))
        limits.setdefault(form.name, []).append(first_try)
        (workdir / "model.onnx").write_bytes(form.name.encode())
        if all_int8[form.name] is not None and (speed_limit.ms is None or form.name not in within):
            return {"abandoned": Abandoned(f"{form.name} over budget", all_int8[form.name])}
        return {"files": ["model.onnx"], "form": form.name, "verification": {"passed": True}}

    def time_artifact(module, directory, fields, precision, x, runs, best_ms=None):
        return within[fields["form"]], None

    def interleaved(module, artifacts, precision, x, runs):
        return {name: {"median_ms": within[name]} for name in artifacts}

    monkeypatch.setattr(BuildSession, "build_form", build_form)
    monkeypatch.setattr(BuildSession, "int8_speed", scripted_speed)  # the orchestration's files are no engines
    monkeypatch.setattr(autotune, "_time_artifact", time_artifact)
    monkeypatch.setattr(autotune, "_interleaved", interleaved)
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", precision="int8", tune=TuneOptions(
        "latency", tuple(all_int8), size=(8, 8), runs=1, tiles=())))
    assert calls == [("slice", None), ("dwconv", None), ("fold", None), ("slice+conv_before_upsample", None),
                     ("dwconv", 100.0), ("slice+conv_before_upsample", 90.0)]
    record = result.manifest["autotune"]
    assert record["chosen"] == "dwconv" and (tmp_path / "a" / "model.onnx").read_bytes() == b"dwconv"
    assert {n for n, c in record["candidates"].items() if "abandoned" in c} == {"fold", "slice+conv_before_upsample"}
    assert "150.0 ms" in record["candidates"]["fold"]["abandoned"]
    # a candidate taken up again gets the all-INT8 try its first build kept (the quantizer resumes from it)
    assert all(later is first and first is not None for first, later in (limits["dwconv"],
                                                                         limits["slice+conv_before_upsample"]))


def script_int8_builds(monkeypatch, all_int8: dict):
    """Scripted INT8 builds: each candidate form is over the gate all-INT8 (its first build, no speed limit yet:
    ``Abandoned`` at ``all_int8[form]`` ms) and within it when taken up again. Returns the calls (form, the
    limit's ms) and each form's first tries (``FirstTry``), as they come."""
    from scnet_deploy.calibration.budget import Abandoned
    from scnet_deploy.session import BuildSession

    calls, limits = [], {}

    def build_form(self, target, form, workdir, speed_limit=None, first_try=None):
        calls.append((form.name, speed_limit.ms))
        limits.setdefault(form.name, []).append(first_try)
        (workdir / "model.onnx").write_bytes(form.name.encode())
        if speed_limit.ms is None:
            return {"abandoned": Abandoned(f"{form.name} over the gate", all_int8[form.name])}
        return {"files": ["model.onnx"], "form": form.name, "verification": {"passed": True}}

    monkeypatch.setattr(BuildSession, "build_form", build_form)
    monkeypatch.setattr(BuildSession, "int8_speed", scripted_speed)  # the orchestration's files are no engines
    return calls, limits


def test_with_none_within_budget_all_int8_the_fastest_is_taken_up_again_from_its_first_try(tmp_path, monkeypatch):
    """Both candidates over budget all-INT8 (dwconv 80 ms, fold 90): dwconv, the faster, is taken up again with no
    speed to beat (``SpeedLimit(math.inf)``: its loop runs to the end) resuming from the try its first build kept,
    and ends within budget at 85 ms; fold (90 ms all-INT8, already slower than that) is not taken up at all."""
    import math

    calls, limits = script_int8_builds(monkeypatch, {"dwconv": 80.0, "fold": 90.0})
    monkeypatch.setattr(autotune, "_time_artifact", lambda *a, **k: (85.0, None))
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", precision="int8", tune=TuneOptions(
        "latency", ("dwconv", "fold"), size=(8, 8), runs=1, tiles=())))
    assert calls == [("dwconv", None), ("fold", None), ("dwconv", math.inf)]
    assert limits["dwconv"][1] is limits["dwconv"][0] is not None
    assert result.manifest["autotune"]["chosen"] == "dwconv"
    assert "already then slower (90.0 ms)" in result.manifest["autotune"]["candidates"]["fold"]["abandoned"]


def test_a_candidate_over_budget_not_5_percent_faster_than_the_best_is_not_taken_up_again(tmp_path, monkeypatch):
    """dwconv is over budget all-INT8 at 97 ms, the slice form within budget at 100: keeping layers in float could
    only bring dwconv to a tie within the noise, so its budget loop is not run."""
    from scnet_deploy.calibration.budget import Abandoned
    from scnet_deploy.session import BuildSession

    calls = []

    def build_form(self, target, form, workdir, speed_limit=None, first_try=None):
        calls.append(form.name)
        (workdir / "model.onnx").write_bytes(form.name.encode())
        if form.name == "dwconv":
            return {"abandoned": Abandoned("over budget", 97.0)}
        return {"files": ["model.onnx"], "form": form.name, "verification": {"passed": True}}

    monkeypatch.setattr(BuildSession, "build_form", build_form)
    monkeypatch.setattr(BuildSession, "int8_speed", scripted_speed)  # the orchestration's files are no engines
    monkeypatch.setattr(autotune, "_time_artifact", lambda *a, **k: (100.0, None))
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", precision="int8", tune=TuneOptions(
        "latency", ("slice", "dwconv"), size=(8, 8), runs=1, tiles=())))
    assert calls == ["slice", "dwconv"]  # dwconv built once (its all-INT8 try), never again
    record = result.manifest["autotune"]
    assert record["chosen"] == "slice" and "not 5% faster than 100.0 ms" in record["candidates"]["dwconv"]["abandoned"]


def test_an_int8_engine_must_beat_the_fp32_engine_the_session_autotuned(tmp_path, monkeypatch):
    """The pipeline builds FP32 before INT8 in one session: FP32's time is a speed to beat. Both INT8 candidates
    are over the gate all-INT8 (dwconv 80 ms, fold 120); fold, slower than FP32's 100 ms already, is not taken up;
    dwconv's loop is limited by 100 ms (not run to its end) and ends within the gate at 98 ms, not 5% faster than
    FP32: refused in one line, nothing written."""
    from scnet_deploy.errors import ExportError
    from scnet_deploy.export import build_session, write_artifact
    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.session import Target

    calls, _ = script_int8_builds(monkeypatch, {"dwconv": 80.0, "fold": 120.0})
    monkeypatch.setattr(autotune, "_time_artifact", lambda *a, **k: (98.0, None))
    monkeypatch.setattr(autotune, "_interleaved", lambda module, artifacts, *a: {n: {"median_ms": 98.0}
                                                                                 for n in artifacts})
    ckpt = load_checkpoint(save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth"))
    options = ExportOptions(output=tmp_path / "out", tune=TuneOptions("latency", ("dwconv", "fold"), size=(8, 8),
                                                                      runs=1, tiles=()))
    with build_session(ckpt, options, tmp_path / "out") as session:
        session.tuned_ms["onnx", "fp32", (8, 8)] = 100.0
        with pytest.raises(ExportError, match="not 5% faster than its FP32 engine built in this session"):
            write_artifact(session, [Target("onnx", "int8")], tmp_path / "onnx-int8")
    assert calls == [("dwconv", None), ("fold", None), ("dwconv", 100.0)]
    assert not (tmp_path / "onnx-int8").exists()


def test_cpu_engines_try_the_forms_measured_ever_to_win_on_a_cpu_and_others_every_form():
    from scnet_deploy.exporters.registry import backend_for_format

    assert backend_for_format("onnx").candidate_forms("fp32") == CPU_FORMS  # no CUDA provider here
    assert backend_for_format("onnx").candidate_forms("int8") == CPU_FORMS
    if backend_for_format("openvino").available():
        for precision in ("fp32", "bf16", "fp16", "int8"):
            assert backend_for_format("openvino").candidate_forms(precision) == CPU_FORMS
    assert backend_for_format("tensorrt").candidate_forms("fp16") == CANDIDATE_FORMS
    assert "slice+conv_before_upsample" in CANDIDATE_FORMS and "slice+conv_before_upsample" not in CPU_FORMS


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_two_candidates_are_timed_in_turn_once_without_screening(tmp_path, monkeypatch, precision):
    """Screening could drop neither of two candidates: they are built, then timed in turn once (no screening run,
    no second interleaved round), and the faster in turn is kept. INT8 too when both are within budget all-INT8:
    nothing is taken up again, so no speed limit is needed."""
    from scnet_deploy.session import BuildSession

    turns = []

    def build_form(self, target, form, workdir, speed_limit=None, first_try=None):
        (workdir / "model.onnx").write_bytes(form.name.encode())
        return {"files": ["model.onnx"], "form": form.name, "verification": {"passed": True}}

    def time_artifact(*a, **k):
        raise AssertionError("screened")

    def interleaved(module, artifacts, precision, x, runs):
        turns.append(list(artifacts))
        return {"slice": {"median_ms": 80.0}, "dwconv": {"median_ms": 100.0}}

    monkeypatch.setattr(BuildSession, "build_form", build_form)
    monkeypatch.setattr(BuildSession, "int8_speed", scripted_speed)  # the orchestration's files are no engines
    monkeypatch.setattr(autotune, "_time_artifact", time_artifact)
    monkeypatch.setattr(autotune, "_interleaved", interleaved)
    ckpt = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    result = export(ckpt, ExportOptions(output=tmp_path / "a", precision=precision, tune=TuneOptions(
        "latency", ("dwconv", "slice"), size=(8, 8), runs=1, tiles=())))
    record = result.manifest["autotune"]
    assert turns == [["dwconv", "slice"]] and record["screening_runs"] == 0
    assert record["chosen"] == "slice" and (tmp_path / "a" / "model.onnx").read_bytes() == b"slice"
    assert record["candidates"]["dwconv"]["median_ms"] == record["candidates"]["dwconv"]["interleaved_ms"] == 100.0


def test_in_turn_stops_running_a_way_that_cannot_win():
    import time

    calls = {"fast": 0, "twice as slow": 0, "close": 0}

    def way(name, seconds):
        def run(x):
            calls[name] += 1
            time.sleep(seconds)
        return run

    timings = autotune.in_turn({"fast": way("fast", 0.05), "twice as slow": way("twice as slow", 0.1),
                                "close": way("close", 0.057)}, None, runs=6, warmup=1)
    assert calls == {"fast": 7, "twice as slow": 3, "close": 7}  # dropped after its second timed run
    assert timings["twice as slow"]["runs"] == 2 and timings["fast"]["runs"] == 6
    assert fastest(timings) == "fast"
    calls.update(dict.fromkeys(calls, 0))
    autotune.in_turn({"fast": way("fast", 0.05), "twice as slow": way("twice as slow", 0.1)}, None, runs=6,
                     warmup=1, drop_above=None)
    assert calls["twice as slow"] == 7


def test_screening_gives_up_on_a_candidate_whose_first_run_cannot_win():
    from scnet_deploy.timing import median_ms

    calls = []

    def run(seconds):
        def infer(x):
            calls.append(seconds)
            time.sleep(seconds)
        return infer

    ms = median_ms(run(0.03), None, runs=3, warmup=1, give_up_above_ms=10.0)
    assert len(calls) == 2 and ms >= 30  # warm-up + one timed run, slower than 10 ms: that run is its time
    calls.clear()
    median_ms(run(0.001), None, runs=3, warmup=1, give_up_above_ms=100.0)
    assert len(calls) == 4  # fast enough: every run
    calls.clear()
    median_ms(run(0.03), None, runs=3, warmup=1)
    assert len(calls) == 4  # no limit: every run
