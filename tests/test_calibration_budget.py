"""calibration/budget.py: the drift budget loop (layers kept in float until it holds, a real export forced to fall
back, the opt-out recorded), the costliest-first ranking, and the autotuner's speed limit."""

import math

import numpy as np
import onnx
import pytest

from scnet_deploy.calibration.budget import BudgetNotMet, quantize_within_budget
from scnet_deploy.calibration.data import CalibOptions, calibration_set
from scnet_deploy.calibration.onnxruntime_int8 import (conv_nodes, layer_sensitivity, quantize_onnx,
                                                       quantized_input_convs)
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.export import export, ExportOptions
from scnet_deploy.gate import AccuracyGate


FAST = CalibOptions(count=8, crop=32)
G = AccuracyGate(0.1)


def _drift(value):
    return {"mean_db": value, "worst_image": {"name": "x", "content": "photo", "drift_db": value}}


def test_budget_loop_falls_back_with_real_exclusion(fp32_onnx, tmp_path):
    calib = calibration_set(FAST, 4)
    convs = conv_nodes(onnx.load(str(fp32_onnx)))

    def quantize(exclude):
        path = tmp_path / f"q{len(exclude)}.onnx"
        quantize_onnx(fp32_onnx, path, calib, "minmax", exclude)
        return path

    result = quantize_within_budget(quantize, lambda p: _drift(-1.0 if int(p.stem[1:]) < 3 else -0.01),
                                    lambda p: [n for n, _ in layer_sensitivity(fp32_onnx, p, calib.arrays[:2])], G)
    assert [t["float_layers"] for t in result["tries"]] == [0, 1, 2, 4]
    assert len(result["float_layers"]) == 4 and result["drift"]["mean_db"] == -0.01
    quantized = set(quantized_input_convs(onnx.load(str(result["model"]))))
    assert not quantized & set(result["float_layers"]) and len(quantized) == len(convs) - 4


def test_budget_loop_gives_up_when_nothing_is_left():
    # over the gate with every convolution but the least sensitive in float: refused after that one try, not after
    # every step of the loop
    seen = []
    with pytest.raises(BudgetNotMet, match="even with 2 of its 3 convolutions kept in float"):
        quantize_within_budget(lambda ex: seen.append(ex) or ex, lambda m: _drift(-1.0), lambda m: ["a", "b", "c"],
                               G)
    assert seen == [(), ("a", "b")]
    # within reach: that try first, then 1 in float, then 2 (the reach check's model again, not quantized twice)
    seen.clear()
    result = quantize_within_budget(lambda ex: seen.append(ex) or ex, lambda m: _drift(-1.0 if len(m) < 2 else 0.0),
                                    lambda m: ["a", "b", "c"], G)
    assert seen == [(), ("a", "b"), ("a",)] and result["float_layers"] == ["a", "b"]
    assert [t["float_layers"] for t in result["tries"]] == [0, 1, 2] and result["all_float_try"]["float_layers"] == 2
    # within the gate only with every layer in float: that is the FP32 engine, never tried, refused
    with pytest.raises(BudgetNotMet, match="2 of its 3"):
        quantize_within_budget(lambda ex: ex, lambda m: _drift(-1.0 if len(m) < 3 else 0.0), lambda m: list("abc"),
                               G)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ScnetDeployError, match="--budget"):
            quantize_within_budget(lambda ex: ex, lambda m: _drift(0.0), lambda m: [], AccuracyGate(bad))
    # no budget (explicit opt-out): one try, whatever the drift
    result = quantize_within_budget(lambda ex: ex, lambda m: _drift(-5.0), lambda m: ["a"], AccuracyGate(None))
    assert result["float_layers"] == [] and len(result["tries"]) == 1


def test_forced_fallback_keeps_the_ranked_layers_float_in_the_saved_graph(ckpt, tmp_path, monkeypatch):
    """A real export forced to fall back: the hold-out measurement reads 1 dB worse on every image while fewer than
    3 layers are float (and no pixel visibly changed), so the loop must try 1, 2, then 4 float layers; the 4 the
    manifest names are float in the saved graph and every other conv int8."""
    import scnet_deploy.calibration.budget as budget
    import scnet_deploy.calibration.onnxruntime_int8 as int8_onnx

    excluded, real_quantize, real_measure = [], int8_onnx.quantize_onnx, budget.Baseline.measure

    def quantize(*args):
        excluded.append(len(args[4]))
        return real_quantize(*args)

    def measure(self, infer):
        drift = real_measure(self, infer)
        off = 1.0 if excluded[-1] < 3 else 0.0
        per_image = [{**r, "drift_db": r["drift_db"] - off, "ref_psnr_y": 30.0, "visible_share": 0.0}
                     for r in drift["per_image"]]
        return {**drift, "mean_db": drift["mean_db"] - off, "per_image": per_image}

    monkeypatch.setattr(int8_onnx, "quantize_onnx", quantize)
    monkeypatch.setattr(budget.Baseline, "measure", measure)
    m = export(ckpt, ExportOptions(output=tmp_path / "q", precision="int8", keep_slower_int8=True, calib=FAST, budget_db=0.5)).manifest
    i = m["int8"]
    assert [t["float_layers"] for t in i["tries"]] == [0, 1, 2, 4] and len(i["float_layers"]) == 4
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    quantized = set(quantized_input_convs(model))
    assert not quantized & set(i["float_layers"])
    assert quantized == set(conv_nodes(model)) - set(i["float_layers"])
    assert m["verification"]["passed"] and i["within_budget"]


def test_budget_opt_out_is_explicit_and_recorded(ckpt, tmp_path):
    m = export(ckpt, ExportOptions(output=tmp_path / "q", precision="int8", keep_slower_int8=True, calib=FAST, budget_db=None)).manifest
    assert m["int8"]["budget_db"] is None and "off" in m["int8"]["budget"] and m["options"]["budget_db"] is None
    assert "no drift budget" in m["verification"]["rule"]
    with pytest.raises(ScnetDeployError, match="--budget"):
        export(ckpt, ExportOptions(output=tmp_path / "bad", precision="int8", keep_slower_int8=True, calib=FAST, budget_db=-0.1))
    assert not (tmp_path / "bad").exists()


def test_the_costliest_item_is_found_by_halving_in_2_log2_n_measurements():
    from scnet_deploy.calibration.budget import costliest

    cost = {f"q{i}": 0.001 * (i % 5) for i in range(57)}
    cost["q41"] = 0.135  # one quantizer costs most of the drift, as the dwconv forms' first-block shift input
    asked = []

    def won_back(group):
        asked.append(group)
        return sum(cost[g] for g in group)

    assert costliest(list(cost), won_back) == "q41" and len(asked) <= 2 * 6
    assert costliest([], won_back) is None and costliest(["only"], won_back) == "only"
    sequential = list(asked)
    asked.clear()
    assert costliest(list(cost), won_back, workers=2) == "q41"  # the two halves of each step at once: the same
    assert sorted(map(tuple, asked)) == sorted(map(tuple, sequential[:len(asked)])) and len(asked) == 12


@pytest.mark.openvino
def test_the_measured_head_of_a_ranking_is_paid_for_only_when_the_gate_is_within_reach():
    """The reach check (every convolution but the least sensitive in float) needs only the cheap full ranking; the
    head, measured on the hold-out (OpenVINO: ~12 measurements), only when the loop then keeps layers in float."""
    from scnet_deploy.calibration.budget import Ranking, quantize_within_budget

    calls = []

    def rest():
        calls.append("rest")
        return ["c", "a", "d", "b"]

    def head():
        calls.append("head")
        return ["b"]

    ranking = Ranking(head, 4, rest)
    assert ranking.all_but_least() == ["c", "a", "d"] and calls == ["rest"]  # b, least sensitive by rest, left
    assert len(ranking) == 4 and ranking[:1] == ["b"] and calls == ["rest", "head"]
    assert ranking[:3] == ["b", "c", "a"] and list(ranking) == ["b", "c", "a", "d"] and sorted(ranking) == list("abcd")
    assert Ranking(["b"], 4, rest).all_but_least() == ["c", "a", "b"]  # a known head is never the one left out
    assert calls.count("rest") == 2 and calls.count("head") == 1  # each computed once a ranking

    def loop(reachable: bool) -> list:
        calls.clear()
        drift = {(): -0.3, ("a", "c", "d"): -0.01 if reachable else -0.3, ("b",): -0.2, ("b", "c"): -0.05}
        result = quantize_within_budget(lambda exclude: tuple(sorted(exclude)) if len(exclude) == 3 else exclude,
                                        lambda m: _drift(drift[m]), lambda m: Ranking(head, 4, rest), G)
        return result["float_layers"]

    with pytest.raises(BudgetNotMet, match="3 of its 4"):
        loop(False)
    assert calls == ["rest"]  # out of reach: refused without measuring the head
    assert loop(True) == ["b", "c"] and calls == ["rest", "head"]


def test_measure_only_budget_check_for_weight_only_int8():
    from scnet_deploy.calibration.budget import check_within_budget

    record = check_within_budget("model", lambda m: _drift(-0.05), G)
    assert record["float_layers"] == [] and record["tries"][0]["mean_drift_db"] == -0.05
    assert set(record) == set(quantize_within_budget(lambda ex: "m", lambda m: _drift(-0.05), lambda m: [], G))
    with pytest.raises(BudgetNotMet, match="over the 0.1 dB budget"):
        check_within_budget("model", lambda m: _drift(-0.2), G)
    assert not check_within_budget("model", lambda m: _drift(-3.0), AccuracyGate(None))["gate"].on


def test_a_speed_limit_stops_a_budget_loop_only_when_over_budget_and_slower():
    import time

    from scnet_deploy.calibration.budget import SpeedLimit, quantize_within_budget

    x = np.zeros((1, 3, 4, 4), np.float32)
    slow = lambda x: time.sleep(0.03)  # noqa: E731
    fast = lambda x: None  # noqa: E731
    stopped = SpeedLimit(None, x, runs=1).check(fast, 0, -0.3)  # no limit yet: report the speed, go no further
    assert "set aside" in stopped.reason
    assert stopped.ms < 5
    assert SpeedLimit(10.0, x, runs=1).check(fast, 1, -0.3) is None  # faster than the limit: go on
    assert "slower than 10.0 ms" in SpeedLimit(10.0, x, runs=1).check(slow, 1, -0.3).reason
    # in the loop: every try over budget is checked; each float layer adds 30 ms and 0.1 dB
    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):
        return {"mean_db": -0.9 + 0.1 * k, "worst_image": {"drift_db": -0.9 + 0.1 * k}}

    speed = lambda k, *tried: SpeedLimit(75.0, x, runs=1, margin=1.0).check(  # noqa: E731
        lambda _: time.sleep(0.03 * k), *tried)
    stopped = quantize_within_budget(quantize, measure, lambda m: list("abcdefghi"), G, speed)
    assert stopped["abandoned"] is not None and stopped["model"] is None
    assert tries == [0, 8, 1, 2, 4]  # 120 ms with 4 in float: stopped there (8 of 9 first: the reach check)
    tries.clear()
    result = quantize_within_budget(quantize, measure, lambda m: list("abcdefghi"), G)
    assert tries == [0, 8, 1, 2, 4] and result["float_layers"] == list("abcdefgh")  # no limit: to the end (8 reused)


def test_a_speed_limited_budget_loop_stops_when_the_budget_is_out_of_its_reach():
    """Under a speed limit (the autotuner), a loop stops when the layers not yet in float could not win back the
    drift still over budget even at the rate of those already in float (the ranking puts the worst first). Without a
    limit (a plain export), the same loop runs to its end."""
    from scnet_deploy.calibration.budget import SpeedLimit, out_of_reach, quantize_within_budget

    x = np.zeros((1, 3, 4, 4), np.float32)
    drift = {0: -0.30, 1: -0.29, 2: -0.285, 4: -0.28, 8: -0.05, 9: 0.0}  # stuck near -0.29 until 8 of 9 in float
    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):
        return {"mean_db": drift[k], "worst_image": {"drift_db": drift[k]}}

    limit = SpeedLimit(1e6, x, runs=1)  # never too slow: only the reach rule can stop it
    stopped = quantize_within_budget(quantize, measure, lambda m: list("abcdefghi"), G,
                                     lambda m, *t: limit.check(lambda _: None, *t))["abandoned"]
    assert "out of reach" in stopped.reason
    assert tries == [0, 8, 1] and [t["float_layers"] for t in stopped.tries] == [0, 1]  # 0.19 dB, 0.01 a layer
    tries.clear()
    assert quantize_within_budget(quantize, measure, lambda m: list("abcdefghi"), G)["float_layers"] == \
        list("abcdefgh") and tries == [0, 8, 1, 2, 4]
    # error spread evenly over 8 layers: every step is within reach (the loop of the speed-limit test above)
    tried = lambda *pairs: [{"float_layers": k, "mean_drift_db": d} for k, d in pairs]  # noqa: E731
    assert not out_of_reach(tried((0, -0.9), (1, -0.8)), G, 8)
    assert not out_of_reach(tried((0, -0.9), (1, -0.8), (2, -0.7), (4, -0.5)), G, 8)
    assert out_of_reach(tried((0, -0.9), (1, -0.9)), G, 8) and out_of_reach(tried((0, -0.9), (1, -0.95)), G, 8)
    assert not out_of_reach(tried((0, -0.9)), G, 8) and not out_of_reach(tried((0, -0.9), (1, -0.05)), G, 8)


def test_a_candidate_taken_up_again_resumes_from_its_all_int8_try():
    """The autotuner's first limit stops a candidate after its all-INT8 try; the second loop shares that try (the
    candidate's ``FirstTry``), so it goes on from it without quantizing everything again."""
    from scnet_deploy.calibration.budget import FirstTry, SpeedLimit, quantize_within_budget

    x = np.zeros((1, 3, 4, 4), np.float32)
    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):
        return {"mean_db": -0.9 + 0.3 * k, "worst_image": {"drift_db": -0.9 + 0.3 * k}}

    first, kept = SpeedLimit(None, x, runs=1), FirstTry()
    stopped = quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), G,
                                     lambda m, *t: first.check(lambda _: None, *t), first_try=kept)
    assert "set aside" in stopped["abandoned"].reason
    assert tries == [0] and (kept.model, kept.drift) == (0, measure(0))
    again = SpeedLimit(1e6, x, runs=1)
    result = quantize_within_budget(quantize, measure, lambda m: list("abcdefgh"), G,
                                    lambda m, *t: again.check(lambda _: None, *t), first_try=kept)
    assert tries == [0, 7, 1, 2, 4] and result["float_layers"] == list("abcd")
    assert result["tries"][0]["float_layers"] == 0  # the kept try is still recorded as the first
    assert result["all_float_try"]["float_layers"] == 7 and [t["float_layers"] for t in result["tries"]] == [0, 1, 2, 4]


def test_a_candidate_taken_up_again_with_none_within_budget_runs_its_loop_to_the_end_from_its_first_try():
    """``SpeedLimit(math.inf)``: no candidate within budget to beat; the loop resumes from the kept all-INT8 try and
    is neither timed nor stopped where its budget looks out of reach (a result must come out of it)."""
    from scnet_deploy.calibration.budget import FirstTry, SpeedLimit, quantize_within_budget

    tries = []

    def quantize(exclude):
        tries.append(len(exclude))
        return len(exclude)

    def measure(k):  # no gain from the first layers (out of reach by their rate), then within budget with 8 of 9
        d = -0.9 if k < 8 else -0.05
        return {"mean_db": d, "worst_image": {"drift_db": d}}

    def never_timed(_):
        raise AssertionError("timed")

    limit = SpeedLimit(math.inf, np.zeros((1, 3, 4, 4), np.float32), runs=1)
    result = quantize_within_budget(quantize, measure, lambda m: list("abcdefghi"), G,
                                    lambda m, *t: limit.check(never_timed, *t), first_try=FirstTry(None, 0, measure(0)))
    assert tries[0] != 0 and result["float_layers"] == list("abcdefgh")


def test_the_int8_manifest_records_the_accuracy_gate_per_content_type_of_its_hold_out(ckpt, tmp_path):
    """Beside the mean-drift budget loop, each INT8 manifest records what the accuracy gate (validate's) says of
    each content type of its hold-out: visible change and drift, with the reason where it fails."""
    m = export(ckpt, ExportOptions(output=tmp_path / "q", precision="int8", keep_slower_int8=True, calib=FAST)).manifest["int8"]
    contents = {r["content"] for r in m["per_image"]}
    assert set(m["gate_by_content"]) == contents and all("visible_share" in r for r in m["per_image"])
    assert m["gate_passed"] == all(v["passed"] for v in m["gate_by_content"].values())
    for verdict in m["gate_by_content"].values():
        assert verdict["passed"] == (verdict["reason"] == "")


def test_content_chooses_which_hold_out_content_gates_and_the_rest_is_recorded(ckpt, tmp_path):
    """--content photo: the budget's mean drift is the photos' alone; every content type is still measured, judged
    and recorded, the others marked as shown, not gated. An unknown content type is one line naming the known ones."""
    from dataclasses import replace

    m = export(ckpt, ExportOptions(output=tmp_path / "q", precision="int8", keep_slower_int8=True, budget_db=None,
                                   calib=replace(FAST, content=("photo",)))).manifest["int8"]
    photos = [r["drift_db"] for r in m["per_image"] if r["content"] == "photo"]
    assert m["drift_db"] == pytest.approx(sum(photos) / len(photos))
    assert m["holdout"]["gated_content"] == ["photo"] and len(m["by_content"]) > 1
    assert {c for c, v in m["gate_by_content"].items() if v["gated"]} == {"photo"}
    assert m["gate_passed"] == m["gate_by_content"]["photo"]["passed"]
    with pytest.raises(ScnetDeployError, match="--content drawings: the hold-out has no such content type; it has "):
        export(ckpt, ExportOptions(output=tmp_path / "r", precision="int8", keep_slower_int8=True, calib=replace(FAST, content=("drawings",))))


def test_export_and_validate_refuse_the_same_engine_that_the_mean_drift_would_have_passed(tmp_path):
    """One gate: an all-INT8 engine whose mean drift over the hold-out is within a budget but whose worst content
    type is not. ``validate --budget`` on the hold-out's own images refuses it, content type by content type as the
    export's gate does (the same code); ``export --int8`` with that budget does not ship it (it keeps layers in
    float until every content type passes, or fails); the mean rule would have shipped it."""
    from PIL import Image

    from scnet_deploy.calibration.budget import BudgetNotMet, gate_by_content
    from scnet_deploy.calibration.data import holdout_set
    from scnet_deploy.gate import AccuracyGate
    from scnet_deploy.validate import ValidateOptions, validate

    from conftest import save_basicsr, tiny_model

    # 32 features, 4 blocks: its all-INT8 engine drifts +0.006 dB on the mean and moves 19-52% of each content
    # type's pixels 4+ levels
    ckpt = save_basicsr(tiny_model(4, "mlp", num_feat=32, num_block=4), tmp_path / "tiny_x4.pth")
    engine = export(ckpt, ExportOptions(output=tmp_path / "all_int8", precision="int8", keep_slower_int8=True, calib=FAST, budget_db=None))
    rows = engine.manifest["int8"]["per_image"]
    mean = float(np.mean([r["drift_db"] for r in rows]))
    budget = max(0.1, -2 * mean)
    assert AccuracyGate(budget).admits(mean)  # the mean rule: shipped
    verdicts = gate_by_content({"per_image": rows}, AccuracyGate(budget))
    assert not all(v["passed"] for v in verdicts.values())  # the worst content's (visible change): refused

    folders = []
    for item in holdout_set(FAST, 4):
        folder = tmp_path / "holdout" / item.content / "HR"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item.hr).save(folder / f"{item.name.replace(':', '_').replace('/', '_')}.png")
        folders.append(folder.parent)
    result = validate([ckpt, engine.directory], ValidateOptions(tuple(dict.fromkeys(folders)), 4, budget_db=budget))
    judged = next(m for m in result["models"] if m["kind"] == "artifact")
    assert judged["within_budget"] is False
    assert {c: v["passed"] for c, v in judged["gate"].items()} == {c: v["passed"] for c, v in verdicts.items()}

    try:
        shipped = export(ckpt, ExportOptions(output=tmp_path / "gated", precision="int8", keep_slower_int8=True, calib=FAST,
                                             budget_db=budget)).manifest["int8"]
    except BudgetNotMet:
        return  # refused outright: nothing shipped
    assert shipped["float_layers"] and shipped["within_budget"] and shipped["gate_passed"]
    assert shipped["tries"][0]["failing"] == sorted(c for c, v in verdicts.items() if not v["passed"])


def test_a_zero_budget_is_zero_when_ranking_how_far_an_engine_is_from_the_gate():
    """``--budget 0`` means no drift at all: 0.05 dB lost is beyond it (it used to be ranked as the 0.1 default)."""
    from scnet_deploy.calibration.budget import shortfall

    assert shortfall(_drift(-0.05), AccuracyGate(0.0)) == pytest.approx(0.5)  # 0.05 dB past 0, in 0.1 dB units
    assert shortfall(_drift(-0.05), AccuracyGate(0.1)) == 0.0
    assert shortfall(_drift(-0.3), AccuracyGate(0.1)) == pytest.approx(2.0)
