"""One budget mechanism for every INT8 backend: quantize, measure on the hold-out what the accuracy gate judges
(each image's PSNR-Y drift and visible share against the FP32 engine's output), and keep the most sensitive
convolutions in float until the gate passes every content type that gates (``scnet_deploy.gate.AccuracyGate.judge``,
the same verdict ``validate --budget`` and the pipeline give: the worst content decides), or fail in one line when
nothing is left to keep. A measurement without visible shares (a stand-in's) is judged on its mean drift.

Every backend's manifest section comes from ``int8_section`` so ``manifest.json``, ``validate`` and the pipeline
report read the same for each.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from scnet_deploy.calibration.data import CalibOptions, CalibrationSet, calibration_set, holdout_set
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.gate import DEFAULT_DRIFT_DB, VISIBLE_LEVELS, AccuracyGate, visible_share
from scnet_deploy.imaging.images import to_u8_hwc
from scnet_deploy.imaging.metrics import psnr_y

Model = TypeVar("Model")  # what a quantizer makes: a graph file, or a backend's model in memory



class BudgetNotMet(ScnetDeployError):
    """Even with every layer kept in float the engine fails the accuracy gate on the hold-out."""


@dataclass(frozen=True)
class Abandoned:
    """Why a budget loop stopped early on a ``SpeedLimit`` (a value it returns, not an error): its engine, over the
    gate, was already slower than the limit, or the gate was out of its reach (or, with no limit yet, only its
    all-INT8 speed was asked for). ``ms``: that engine's time; ``tries``: the loop's tries so far (as
    ``quantize_within_budget`` records them)."""

    reason: str
    ms: float
    tries: tuple = ()


@dataclass
class FirstTry:
    """A candidate's all-INT8 try (``model`` and its ``drift``), kept by a quantizer that holds its model in memory
    (OpenVINO) so that the autotuner, taking the candidate up again, resumes its loop instead of quantizing it again;
    OpenVINO also keeps its FP32 engine's hold-out scores here (``baseline``), before the first try. Owned by the
    autotuner, one per candidate, and passed to the quantizer beside the candidate's ``SpeedLimit``."""

    baseline: object = None
    model: object = None
    drift: dict | None = None

    @property
    def tried(self) -> bool:
        return self.drift is not None


def out_of_reach(tries: list, gate: AccuracyGate, layers: int) -> bool:
    """Whether what still fails the gate after the last of ``tries`` (in order, the first all-INT8; each with
    ``float_layers``, ``mean_drift_db`` and, where measured, ``visible_share`` and ``gate_drift_db``: the worst
    gated content type's) could not be won back even if each of the ``layers`` convolutions not yet in float won
    back as much as those already in float did on average. The ranking puts the layers that add most error first,
    so the rest should each win back less: a loop past this point cannot meet the gate, only slow the engine (a
    speed-limited loop stops here; the OpenVINO dwconv forms sat at -0.21 dB from 0 to 16 float layers)."""
    if len(tries) < 2:
        return False
    first, last = tries[0], tries[-1]
    added = last["float_layers"] - first["float_layers"]
    if added <= 0:
        return False

    def hopeless(gap: float, won: float) -> bool:  # ``gap`` still to win back, ``won`` so far
        return gap > 0 and (won <= 0 or gap > won / added * (layers - last["float_layers"]) + 1e-9)  # 1e-9: rounding

    if last.get("visible_share") is not None and first.get("visible_share") is not None:
        if hopeless(last["visible_share"] - gate.max_visible, first["visible_share"] - last["visible_share"]):
            return True
    key = "gate_drift_db" if last.get("gate_drift_db") is not None and first.get("gate_drift_db") is not None \
        else "mean_drift_db"
    return hopeless(-gate.drift_db - last[key], last[key] - first[key])


@dataclass(frozen=True)
class SpeedLimit:
    """For the latency autotuner: a candidate whose INT8 engine is over budget and already slower than ``ms`` (the
    fastest candidate within budget so far) cannot win, and keeping more layers in float only makes it slower, so
    its budget loop stops; so does a loop whose budget is out of reach (``out_of_reach``: more float layers would
    only slow it). ``ms=None``: no candidate is within budget yet; stop at the first try over budget and report its
    speed (the autotuner comes back to it). ``ms=math.inf``: none is within budget, and this candidate is taken up
    again: its loop runs to the end as without a limit (from its ``FirstTry``). Timed at ``x`` (median of ``runs``
    after one warm-up)."""

    ms: float | None
    x: np.ndarray
    runs: int = 3
    margin: float = 1.1  # slower than the limit by this factor: timing noise must not abandon a winner

    def check(self, infer, float_layers: int, drift_db: float, tries: list = (), gate: AccuracyGate | None = None,
              layers: int | None = None) -> Abandoned | None:
        """Why the loop stops here (None: it goes on). ``tries``, ``gate`` and ``layers`` (the loop's: its tries,
        accuracy gate and ranked convolutions, from ``quantize_within_budget``): for ``out_of_reach``."""
        from scnet_deploy.timing import median_ms

        if self.ms == math.inf:  # nothing within budget to beat: the loop runs to its end (resumed from first_try)
            return None
        ms = median_ms(infer, self.x, self.runs, warmup=1)
        last = tries[-1] if tries else {}
        why = (f"{', '.join(last['failing'])}: up to {100 * last['visible_share']:.2f}% of an image's pixels visibly "
               f"changed, drift {drift_db:+.3f} dB" if last.get("failing") else f"{drift_db:+.3f} dB mean drift")
        over = f"over the accuracy gate ({why}) with {float_layers} layer(s) in float, {ms:.1f} ms"
        if self.ms is None:
            return Abandoned(f"{over}; set aside until a candidate within budget is timed", ms, tuple(tries))
        if ms > self.margin * self.ms:
            return Abandoned(f"{over}: already slower than {self.ms:.1f} ms, the fastest within budget", ms,
                             tuple(tries))
        if gate is not None and gate.on and layers is not None and out_of_reach(list(tries), gate, layers):
            return Abandoned(f"{over}: the gate is out of reach, the {layers - float_layers} layers left could not "
                             "win back the rest at the rate of those in float", ms, tuple(tries))
        return None


def outputs_u8(infer: Callable[[np.ndarray], np.ndarray], holdout) -> list[np.ndarray]:
    """``infer``'s 8-bit output on each hold-out image, as validate scores it."""
    return [to_u8_hwc(infer(item.lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)[0]) for item in holdout]


def _psnrs(outs: list[np.ndarray], holdout, scale: int) -> list[float]:
    return [psnr_y(out, item.hr, crop=scale) for out, item in zip(outs, holdout)]


def psnr_scores(infer: Callable[[np.ndarray], np.ndarray], holdout, scale: int) -> list[float]:
    """PSNR-Y (BasicSR/MATLAB protocol) of ``infer`` on each hold-out image."""
    return _psnrs(outputs_u8(infer, holdout), holdout, scale)


@dataclass(frozen=True)
class Baseline:
    """The hold-out and the FP32 engine's PSNR-Y on each image, computed once per export, with its 8-bit outputs
    (``fp32_u8``), against which each image's visible share is measured (``gate.visible_share``)."""

    holdout: list
    fp32_psnr: list[float]
    scale: int
    fp32_u8: list | None = None
    gated: tuple[str, ...] | None = None  # the content types whose drift gates (None: every one)
    visible_levels: int = VISIBLE_LEVELS  # the gate's: a pixel this many 8-bit levels off FP32 changed visibly

    def measure(self, infer) -> dict:
        outs = outputs_u8(infer, self.holdout)
        drifts = [p - f for p, f in zip(_psnrs(outs, self.holdout, self.scale), self.fp32_psnr)]
        per_image = [{"name": h.name, "content": h.content, "drift_db": d, "ref_psnr_y": f}
                     for h, d, f in zip(self.holdout, drifts, self.fp32_psnr)]
        if self.fp32_u8 is not None:
            for r, o, ref in zip(per_image, outs, self.fp32_u8):
                r["visible_share"] = visible_share(o, ref, self.scale, self.visible_levels)
        judged = [r for r in per_image if self.gated is None or r["content"] in self.gated]
        worst = min(judged, key=lambda r: r["drift_db"])
        contents = sorted({h.content for h in self.holdout})
        by_content = {c: float(np.mean([r["drift_db"] for r in per_image if r["content"] == c])) for c in contents}
        return {"mean_db": float(np.mean([r["drift_db"] for r in judged])), "worst_image": worst,
                "by_content": by_content, "per_image": per_image, "gated": self.gated}


@dataclass(frozen=True)
class Int8Data:
    """What every quantizer measures with, built once per calibration source (the build session caches it): the
    calibration crops and the hold-out."""

    options: CalibOptions
    calib: CalibrationSet
    holdout: list
    scale: int

    def baseline(self, fp32_infer: Callable[[np.ndarray], np.ndarray], levels: int = VISIBLE_LEVELS) -> Baseline:
        """The hold-out with ``fp32_infer``'s PSNR-Y on it: the same engine in FP32, so drift is INT8's alone;
        ``levels``: the gate's visible level."""
        outs = outputs_u8(fp32_infer, self.holdout)
        return Baseline(self.holdout, _psnrs(outs, self.holdout, self.scale), self.scale, outs, self.options.content,
                        levels)

    def verification_inputs(self, fixed: tuple[int, int] | None = None, tiles: bool = True) -> list:
        return verification_inputs(self.holdout, fixed, tiles)


def int8_data(options: CalibOptions, scale: int) -> Int8Data:
    holdout = holdout_set(options, scale)
    unknown = sorted(set(options.content or ()) - {h.content for h in holdout})
    if unknown:
        raise ScnetDeployError(f"--content {','.join(unknown)}: the hold-out has no such content type; it has "
                               f"{','.join(sorted({h.content for h in holdout}))}.")
    return Int8Data(options, calibration_set(options, scale), holdout, scale)


@dataclass(frozen=True)
class Int8Section:
    """The manifest's ``int8`` section, the same for every backend (``to_dict``: as written). ``calibration`` is None
    for weight-only INT8, which calibrates nothing."""

    holdout: dict  # sources, content of each, the user's folder, the FP32 engine's mean PSNR-Y on it
    quantization: dict  # the backend's quantizer and its settings
    gate: AccuracyGate  # drift_db None: the gate was off (--no-budget)
    drift_db: float  # mean PSNR-Y drift over the gated hold-out images (negative: worse than FP32)
    worst_image: dict
    by_content: dict[str, float]
    per_image: list[dict]
    float_layers: list[str]  # convolutions kept in float to meet the gate
    tries: list[dict]  # each try of the budget loop: float layers, drift, visible share, the content types failing
    calibration: dict | None = None
    # the accuracy gate's verdict per content type of the hold-out (gate.AccuracyGate.judge: visible change and
    # drift), as validate judges: the budget loop's verdict (None: a measurement without visible shares)
    gate_by_content: dict | None = None
    all_float_try: dict | None = None  # the budget loop's reach check: every convolution but one in float

    @property
    def within_budget(self) -> bool:
        if self.gate.on and self.gate_by_content is not None:
            return all(v["passed"] for v in self.gate_by_content.values() if v["gated"])
        return self.gate.admits(self.drift_db)

    def to_dict(self) -> dict:
        calibration = {} if self.calibration is None else {"calibration": self.calibration}
        return {**calibration, "holdout": self.holdout, "quantization": self.quantization,
                "budget_db": self.gate.drift_db, "gate": self.gate.record(), "budget": self.gate.describe(),
                "drift_db": self.drift_db, "worst_image": self.worst_image, "by_content": self.by_content,
                "per_image": self.per_image, "float_layers": self.float_layers, "tries": self.tries,
                "within_budget": self.within_budget,
                **({} if self.all_float_try is None else {"all_float_try": self.all_float_try}),
                **({} if self.gate_by_content is None else {
                    "gate_by_content": self.gate_by_content,
                    "gate_passed": all(v["passed"] for v in self.gate_by_content.values() if v["gated"])})}


@dataclass
class Quantized:
    """What every quantizer returns: the chosen model (a path, or the backend's in-memory model) and the manifest's
    ``int8`` section (``int8_section``); or, where its speed limit stopped the budget loop, why (``abandoned``) and
    neither."""

    model: object  # the written graph (a Path), or a backend's own model in memory
    section: Int8Section | None
    abandoned: Abandoned | None = None


def _verdicts(drift: dict, gate: AccuracyGate) -> dict | None:
    """The gate's verdict per content type of a ``Baseline.measure`` record (its own gated content types)."""
    return gate_by_content(drift, gate, drift.get("gated"))


def gate_failures(drift: dict, gate: AccuracyGate) -> list[str] | None:
    """Why the accuracy gate refuses the measured engine: one sentence per gated content type of the hold-out that
    fails ([]: it passes; None: the measurement has no visible shares, and ``over_gate`` reads its mean drift)."""
    verdicts = _verdicts(drift, gate)
    if verdicts is None:
        return None
    return [v["reason"] for v in verdicts.values() if v["gated"] and not v["passed"]]


def over_gate(drift: dict, gate: AccuracyGate) -> bool:
    """Whether the measured engine fails the accuracy gate on the hold-out (never with the gate off)."""
    if not gate.on:
        return False
    failures = gate_failures(drift, gate)
    return not gate.admits(drift["mean_db"]) if failures is None else bool(failures)


def shortfall(drift: dict, gate: AccuracyGate) -> float:
    """How far the measured engine is from the gate, as one number to rank by (0: within it): over the gated
    content types, the visible share in units of the gate's share beyond it, plus the drift in units of the budget
    beyond it (a measurement without visible shares: its mean drift beyond the budget)."""
    verdicts = _verdicts(drift, gate)
    budget = gate.drift_db if gate.on else DEFAULT_DRIFT_DB  # the limit: --budget 0 is 0, not the default
    unit = budget or DEFAULT_DRIFT_DB  # what a dB beyond it weighs: never 0
    if verdicts is None:
        return max(0.0, -drift["mean_db"] - budget) / unit
    total = 0.0
    for v in verdicts.values():
        if v["gated"]:
            total += max(0.0, v["visible_share"] / max(gate.max_visible, 1e-6) - 1)
            total += 0.0 if v["drift_db"] is None else max(0.0, -v["drift_db"] - budget) / unit
    return total


def _try(float_layers: int, drift: dict, gate: AccuracyGate) -> dict:
    found = {"float_layers": float_layers, "mean_drift_db": drift["mean_db"],
             "worst_drift_db": drift["worst_image"]["drift_db"]}
    verdicts = _verdicts(drift, gate)
    if verdicts is not None:
        gated = [v for v in verdicts.values() if v["gated"]]
        drifts = [v["drift_db"] for v in gated if v["drift_db"] is not None]
        found.update(visible_share=max((v["visible_share"] for v in gated), default=0.0),
                     gate_drift_db=min(drifts) if drifts else None,
                     failing=[v["content"] for v in gated if not v["passed"]])
    return found


def quantize_within_budget(quantize: Callable[[tuple[str, ...]], Model], measure: Callable[[Model], dict],
                           rank: Callable[[Model], list[str]], gate: AccuracyGate,
                           too_slow: Callable[..., Abandoned | None] | None = None,
                           first_try: FirstTry | None = None) -> dict:
    """``quantize(exclude) -> model``, ``measure(model) -> {'mean_db', 'worst_image', 'per_image', ...}`` (negative =
    worse; ``Baseline.measure``), ``rank(model)`` -> convs, most sensitive first; the loop keeps 1, 2, 4, ... of them
    in float until the accuracy gate passes (``over_gate``), at most all but one (every one in float is the FP32
    engine, slower). Over the gate all-INT8, every convolution but the least sensitive is kept in float once first
    (``all_float_try``): if even that fails, the export fails at once (``BudgetNotMet``), not after log2(n) tries.
    Returns the chosen model, its measurement, the layers kept in float and every try; or, where ``too_slow(model,
    float_layers, drift_db, tries, gate, layers)`` (a ``SpeedLimit`` check, asked after each try over the gate;
    ``layers``: how many are ranked, None before the ranking) gives a reason, ``abandoned`` (an ``Abandoned``) and
    no model. ``first_try``: where the all-INT8 try is kept, and taken from when it is already there."""
    gate.check()
    if first_try is not None and first_try.tried:
        model, drift = first_try.model, first_try.drift
    else:
        model = quantize(())
        drift = measure(model)
        if first_try is not None:
            first_try.model, first_try.drift = model, drift
    loop = _Loop(quantize, measure, gate, too_slow, [_try(0, drift, gate)])
    if over_gate(drift, gate):
        stopped = loop.stop(model, 0, drift, None)
        if stopped is not None:
            return stopped
        return loop.fall_back(rank(model), drift)
    return loop.result(model, drift, ())


@dataclass
class _Loop:
    """The budget loop past its all-INT8 try: the layers kept in float doubled until the gate passes."""

    quantize: Callable
    measure: Callable
    gate: AccuracyGate
    too_slow: Callable | None
    tries: list
    all_float: dict | None = None

    def result(self, model, drift: dict, exclude: tuple, abandoned: Abandoned | None = None) -> dict:
        return {"model": model, "drift": drift, "float_layers": list(exclude), "gate": self.gate,
                "tries": self.tries, "all_float_try": self.all_float, "abandoned": abandoned}

    def stop(self, model, float_layers: int, drift: dict, layers: int | None) -> dict | None:
        """The loop's result where its speed limit stops it here (None: it goes on)."""
        if self.too_slow is None:
            return None
        abandoned = self.too_slow(model, float_layers, drift["mean_db"], self.tries, self.gate, layers)
        return None if abandoned is None else self.result(None, drift, (), abandoned)

    def not_met(self, drift: dict, n: int) -> BudgetNotMet:
        error = BudgetNotMet(f"INT8 fails the accuracy gate on the hold-out even with {max(n - 1, 0)} of its {n} "
                            f"convolutions kept in float ({why_over(drift, self.gate)}); {advice(drift, self.gate)}, "
                            "choose the content that gates (--content), calibrate on content like yours "
                            "(--calib-data), or export in float (bf16 where the CPU has it).")
        error.drift, error.layers = drift, n  # for a quantizer that says it in its own words (QNN's)
        return error

    def fall_back(self, ranking, drift: dict) -> dict:
        n = len(ranking)
        reach = None  # (layers in float, model, its measurement)
        if n >= 2:  # within reach at all? every convolution but the least sensitive in float, once
            keep = tuple(ranking.all_but_least() if isinstance(ranking, Ranking) else ranking[:n - 1])
            reach_model = self.quantize(keep)
            reach = (set(keep), reach_model, self.measure(reach_model))
            self.all_float = _try(len(keep), reach[2], self.gate)
            if over_gate(reach[2], self.gate):
                raise self.not_met(reach[2], n)
        k = 1
        while True:
            if k > n - 1:
                raise self.not_met(drift, n)
            exclude = tuple(ranking[:k])
            if reach is not None and set(exclude) == reach[0]:
                model, drift = reach[1], reach[2]  # measured already
            else:
                model = self.quantize(exclude)
                drift = self.measure(model)
            self.tries.append(_try(k, drift, self.gate))
            if not over_gate(drift, self.gate):
                return self.result(model, drift, exclude)
            k = n if k == n - 1 else min(2 * k, n - 1)
            stopped = self.stop(model, len(exclude), drift, n) if k <= n - 1 else None
            if stopped is not None:
                return stopped


class Ranking(Sequence):
    """Convolutions to keep in float, first first: ``head`` (names, or a callable that measures them, called the
    first time the loop asks for a layer), then ``rest()`` (a full ranking, least sensitive last; the names already
    in the head are skipped), computed the first time either is needed. ``count``: how many convolutions are ranked
    in all (``len``)."""

    def __init__(self, head: "list[str] | Callable[[], list[str]]", count: int, rest: Callable[[], list[str]]) -> None:
        self._head = head if callable(head) else list(head)
        self.count, self._rest, self._rest_order, self._all = count, rest, None, None

    @property
    def head(self) -> list[str]:
        if callable(self._head):
            self._head = list(self._head())
        return self._head

    def rest_order(self) -> list[str]:
        if self._rest_order is None:
            self._rest_order = list(self._rest())
        return self._rest_order

    def all_but_least(self) -> list[str]:
        """Every ranked name but the least sensitive (the last of ``rest``'s order outside the head), without
        measuring the head."""
        order = self.rest_order()
        head = [] if callable(self._head) else self._head
        least = next((n for n in reversed(order) if n not in head), order[-1])
        return [n for n in order if n != least]

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        head = self.head
        whole_head = isinstance(index, slice) and index.start in (None, 0) and index.step in (None, 1) \
            and index.stop is not None and 0 <= index.stop <= len(head)
        if whole_head or (isinstance(index, int) and 0 <= index < len(head)):
            return head[index]
        if self._all is None:
            self._all = head + [n for n in self.rest_order() if n not in head]
        return self._all[index]


def costliest(items: list, won_back: Callable[[list], float], workers: int = 1):
    """The item of ``items`` whose removal wins back most drift, found by halving: ``won_back(group)`` is the drift
    won back with every item of ``group`` removed at once, about the sum of what each wins back alone, so the half
    that wins back more holds the costliest item. 2 log2(n) measurements instead of n (None for no items).
    ``workers=2``: the two halves of each step measured at once, in threads (for a ``won_back`` that releases the
    GIL, as OpenVINO's compile and inference do)."""
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    with ThreadPoolExecutor(workers) as pool:
        while len(items) > 1:
            half = len(items) // 2
            first, second = pool.map(won_back, (items[:half], items[half:]))
            items = items[:half] if first >= second else items[half:]
    return items[0] if items else None


def rank_by_added_error(learned: dict[str, tuple[str, str]], runs) -> list[tuple[str, float]]:
    """Rank convolutions by the error each adds: NMSE of its output minus NMSE of its input, INT8 vs FP32.

    ``learned``: conv name -> (input key, output key); ``runs``: (fp32 activations, int8 activations) dicts per
    sample, keyed like ``learned``. A key missing from the activations (the network input) counts as exact."""
    err: dict[str, float] = {}
    for a, b in runs:
        for key in a:
            err[key] = err.get(key, 0.0) + float(np.mean((a[key] - b[key]) ** 2) / (np.mean(a[key] ** 2) + 1e-12))
    added = {name: err.get(out, 0.0) - err.get(inp, 0.0) for name, (inp, out) in learned.items()}
    return sorted(added.items(), key=lambda kv: kv[1], reverse=True)


def check_within_budget(model: Model, measure: Callable[[Model], dict], gate: AccuracyGate) -> dict:
    """For engines whose layers cannot be kept in float one by one (Core ML's weight-only INT8): measure once and
    fail in one line when over budget. Returns the same record as ``quantize_within_budget``."""
    gate.check()
    drift = measure(model)
    if over_gate(drift, gate):
        raise BudgetNotMet(f"INT8 fails the accuracy gate on the hold-out ({why_over(drift, gate)}); "
                           f"{advice(drift, gate)} or export in float.")
    return {"model": model, "drift": drift, "float_layers": [], "gate": gate, "tries": [_try(0, drift, gate)],
            "all_float_try": None, "abandoned": None}


def advice(drift: dict, gate: AccuracyGate) -> str:
    """What the user may loosen: the option whose measure failed (--budget cannot mend a visible change)."""
    failures = gate_failures(drift, gate)
    if failures is None:
        return "raise --budget"
    visible, drifted = any("levels off FP32" in f or "flicker" in f for f in failures), any("drift" in f for f in failures)
    return " and ".join(a for a, needed in (("raise --budget", drifted), ("raise --max-visible", visible)) if needed) \
        or "raise --budget"


def why_over(drift: dict, gate: AccuracyGate) -> str:
    """The gate's reasons, or (a measurement without visible shares) the mean drift against the budget."""
    failures = gate_failures(drift, gate)
    if failures:
        return "; ".join(failures)
    w = drift["worst_image"]
    return (f"mean drift {drift['mean_db']:.3f} dB, worst {w['drift_db']:.3f} dB on {w.get('name', 'one image')}, is "
            f"over the {gate.drift_db} dB budget")


def gate_by_content(drift: dict, gate: AccuracyGate, gated: tuple[str, ...] | None = None) -> dict | None:
    """The accuracy gate's verdict on each content type of the hold-out (None without visible shares measured);
    ``gated``: the content types that gate (None: every one), the others marked as shown only."""
    rows = drift.get("per_image") or []
    if not rows or any("visible_share" not in r for r in rows):
        return None
    return {c: {**gate.judge(c, [r for r in rows if r["content"] == c]).to_dict(),
                "gated": gated is None or c in gated} for c in sorted({r["content"] for r in rows})}


def int8_section(calib, options, baseline: Baseline, result: dict, quantization: dict) -> Int8Section:
    """The ``int8`` section of every INT8 manifest, from the budget loop's ``result`` (no ``calibration`` when
    ``calib`` is None: weight-only INT8 calibrates nothing)."""
    drift = result["drift"]
    return Int8Section(
        holdout={"sources": [h.name for h in baseline.holdout], "content": {h.name: h.content for h in baseline.holdout},
                 "user_folder": str(options.holdout) if options.holdout else None,
                 "gated_content": list(options.content) if options.content else None,
                 "fp32_psnr_y": float(np.mean(baseline.fp32_psnr))},
        quantization=quantization, gate=result["gate"], drift_db=drift["mean_db"],
        worst_image=drift["worst_image"], by_content=drift["by_content"], per_image=drift["per_image"],
        float_layers=result["float_layers"], tries=result["tries"], all_float_try=result.get("all_float_try"),
        gate_by_content=gate_by_content(drift, result["gate"], options.content),
        calibration=None if calib is None else {"sources": calib.sources, "count": len(calib), "crop": options.crop,
                                                "seed": options.seed, "method": options.method,
                                                "content_mix": options.content_mix})


def verification_inputs(holdout, fixed: tuple[int, int] | None = None, tiles: bool = True) -> list:
    """Two natural-image LR crops of different, odd sizes (INT8 ranges are calibrated on images, not noise); for an
    engine ``fixed`` at one size, a crop of that size and, where the image allows and ``tiles`` (the size leaves an
    exact part inside each tile), one a little larger (its tiles)."""
    photos = [h for h in holdout if h.content == "photo"] or list(holdout)
    photo = max(photos, key=lambda h: h.lr.shape[0] * h.lr.shape[1]) if fixed else photos[0]
    lr = photo.lr.transpose(2, 0, 1)[None].astype("float32") / 255.0
    if fixed is None:
        return [lr[:, :, :37, :29].copy(), lr[:, :, 5:29, 3:47].copy()]
    h, w = fixed
    larger = (min(h + 11, lr.shape[2]), min(w + 5, lr.shape[3]))
    crops = [lr[:, :, :h, :w].copy()]
    return crops + ([lr[:, :, :larger[0], :larger[1]].copy()] if tiles and larger != (h, w) else [])
