"""``--optimize latency``: build every candidate deploy form for one backend and precision, verify each (the
backend's own build does, before it returns), time each at the target size on this machine (with more than two
candidates a screening run of half the runs each, then the two fastest again in turn with every run; two are timed
in turn once), keep the fastest.

Then, on the winner, two exact ways of running it in pieces are timed: the whole engine on tiles (halo >= the
receptive radius), and split execution (``exporters/split.py``: its graph cut at the body's output, the body on the
whole image, the upsampling tail on tiles with the tail's few pixels of halo). Where one is faster than the whole
image (the HR tail is memory-bound on some CPUs), it is recorded (``tile`` or ``split``) and every verb that opens
the artifact runs it that way (``runtime.open_model``).

Candidate forms are named as in ``DeployOptions.name``: ``shift[+rewrite...]``.
"""

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import ExportError, ScnetDeployError
from .progress import Progress
from .build_options import TuneOptions
from .timing import in_turn, median_ms

@dataclass
class Candidate:
    """What happened to one candidate form, as the manifest's ``autotune.candidates`` records it (``record``: only
    what happened: a candidate never timed has no ``median_ms``; one that could not run here has it as None)."""

    build_s: float | None = None
    timed: bool = False  # screened or timed in turn: ``median_ms`` is its time, or None where it cannot run here
    median_ms: float | None = None
    screening_ms: float | None = None  # its screening median, when it was later timed in turn as well
    interleaved_ms: float | None = None  # its median in turn with the other finalist
    over_budget_ms: float | None = None  # INT8 over budget all-INT8: that engine's speed (its speed limit)
    abandoned: str | None = None  # why its budget loop was stopped, or not taken up again
    tries: list | None = None  # the budget loop's tries before it was abandoned
    error: str | None = None  # why it could not be built (or its timing failed)
    not_timed: str | None = None  # why this machine cannot run it

    def time(self, ms: float | None, **more) -> None:
        self.timed, self.median_ms = True, ms
        for key, value in more.items():
            setattr(self, key, value)

    def record(self) -> dict:
        """The manifest's entry: every field that was set, and ``median_ms`` once timed (None: could not run)."""
        entry = {"build_s": self.build_s, "screening_ms": self.screening_ms, "interleaved_ms": self.interleaved_ms,
                 "over_budget_ms": self.over_budget_ms, "abandoned": self.abandoned, "tries": self.tries,
                 "error": self.error, "not_timed": self.not_timed}
        entry = {k: v for k, v in entry.items() if v is not None}
        return {**({"median_ms": self.median_ms} if self.timed else {}), **entry}


@dataclass
class AutotuneRecord:
    """The manifest's ``autotune`` section (``to_dict``: as written): how the candidates were timed, each one's
    record, the form chosen, and the way in pieces kept where one was faster (``tile`` or ``split``: an LR side)."""

    optimize: str
    target_lr_size: list[int]
    runs: int
    screening_runs: int
    candidates_from: str
    candidates: dict[str, dict]
    chosen: str
    screening_gives_up_above: float = 0.0
    tiles: dict | None = None  # the whole image against each way in pieces ("none", "256", "split 64")
    tile: int | None = None
    split: int | None = None

    def to_dict(self) -> dict:
        record = {"optimize": self.optimize, "target_lr_size": self.target_lr_size, "runs": self.runs,
                  "screening_runs": self.screening_runs, "screening_gives_up_above": self.screening_gives_up_above,
                  "candidates_from": self.candidates_from, "candidates": self.candidates, "chosen": self.chosen,
                  "tile": self.tile, "split": self.split}
        return record if self.tiles is None else {**record, "tiles": self.tiles}


def fastest(timings: dict, key: str = "median_ms"):
    """The name whose timing is lowest among those that were timed (None if none was)."""
    timed = {name: t[key] for name, t in timings.items() if t.get(key) is not None}
    return min(timed, key=timed.get) if timed else None


def records(candidates: dict[str, Candidate]) -> dict[str, dict]:
    return {name: c.record() for name, c in candidates.items()}


def fastest_ms(candidates: dict[str, Candidate]) -> float | None:
    """The lowest screening median among ``candidates`` (None if none was timed)."""
    best = fastest(records(candidates))
    return None if best is None else candidates[best].median_ms


def _load(module, directory: Path, fields: dict, precision: str):
    return module.load(directory, {"precision": precision, **fields})


# Screening: a candidate whose first timed run is this much slower than the fastest median so far is not run again
# (its one run is its time): it cannot win, and the slow forms are the ones that cost most to repeat.
GIVE_UP_ABOVE = 1.5


def _time_artifact(module, directory: Path, fields: dict, precision: str, x: np.ndarray, runs: int,
                   best_ms: float | None = None):
    """(median ms, None) or (None, reason) when this machine cannot run the artifact."""
    give_up = None if best_ms is None else GIVE_UP_ABOVE * best_ms
    try:
        with _load(module, directory, fields, precision) as runner:
            return median_ms(runner.infer, x, -(-runs // 2), give_up_above_ms=give_up), None  # screening: half
    except ScnetDeployError as exc:  # TensorRT without a GPU, Core ML off macOS, ...
        return None, str(exc).splitlines()[0]


# A candidate over budget all-INT8 is taken up again (its budget loop: layers kept in float, each only slowing it) only
# if its all-INT8 engine is at least 5% faster than the fastest within budget: the margin any autotune choice must
# beat (as TILE_MARGIN for tiles); closer than that, it could at best tie within the timing noise, and each try of
# its loop costs a quantization (~10 s with NNCF on 2 cores).
RESUME_BELOW = 0.95


@dataclass(frozen=True)
class TuneJob:
    """What the autotuner is given to tune one target: the export options as the target asks, the checkpoint's
    ``spec``, ``build(form name, directory, speed limit, first try) -> manifest fields`` (the build session's, which
    verifies each candidate; ``{"abandoned": why}`` where a speed limit stopped an INT8 budget loop), ``progress``,
    and the median ms of this backend's FP32 engine autotuned at the same size in the same session (``fp32_ms``), the
    speed an INT8 engine must beat. The autotuner calls nothing else of the session."""

    format: str
    precision: str
    options: object  # build_options.ExportOptions of the target
    spec: object  # model.arch.ArchSpec
    build: Callable
    progress: Callable
    fp32_ms: float | None = None


def build_fastest(job: TuneJob, workdir: Path, scratch: Path) -> tuple[dict, float | None]:
    """Build ``job``'s target once per candidate form, time each, move the fastest into ``workdir``; returns its
    manifest fields plus ``autotune`` (the record of every candidate), and its median ms (None: not timed here).

    INT8 (the backends whose INT8 budget loop may be speed-limited): keeping layers in float only makes an engine
    slower, so a candidate over budget whose engine is already slower than the fastest candidate within budget cannot
    win. Each candidate is first quantized once; those over budget are set aside with their all-INT8 speed, then
    taken up fastest first, their budget loops stopped as soon as they are slower than the best within budget
    (``SpeedLimit``); with two candidates, one within budget is screened only then, for that limit. Where the session
    autotuned the same backend's FP32 engine at the same size (``job.fp32_ms``), that is a speed to beat too: an INT8
    engine within the accuracy gate but not 5% faster than FP32 is refused (its drift would buy nothing)."""
    tuner = _Tuner(job, scratch)
    tuner.build_all()
    tuner.take_up_set_aside()
    best, best_ms = tuner.choose()
    cand_dir, fields = tuner.built[best]
    record = tuner.record(best)
    if best_ms is not None and any(t < max(tuner.size) for t in tuner.tune.tiles + tuner.tune.split_tiles):
        with _load(tuner.module, cand_dir, fields, job.precision) as runner:
            record.tiles = _time_tiles(runner, job.spec, job.format, tuner.x, tuner.tune, job.progress, best_ms)
        plan = choose_plan(record.tiles)
        if plan is not None:
            setattr(record, *plan)
    for entry in cand_dir.iterdir():
        shutil.move(str(entry), workdir / entry.name)
    shutil.rmtree(scratch, ignore_errors=True)  # the losers
    return {**fields, "autotune": record.to_dict()}, best_ms


class _Tuner:
    """One autotuning run's state: the candidates built, timed, set aside and abandoned (``build_fastest``)."""

    def __init__(self, job: TuneJob, scratch: Path) -> None:
        from scnet_deploy.exporters.registry import backend_for_format

        backend = backend_for_format(job.format)
        self.job, self.scratch, self.tune = job, scratch, job.options.tune
        self.module = backend.runtime(building=True)  # loads each candidate built
        self.label = f"autotune {job.format} {job.precision}"
        self.size = tuple(self.tune.size or job.options.sizes.opt)
        self.x = np.random.default_rng(0).random((1, job.spec.num_in_ch, *self.size), dtype=np.float32)
        self.limited = job.precision == "int8" and backend.int8_speed_limited
        self.forms = self.tune.candidates or backend.candidate_forms(job.precision)
        # Two candidates or fewer: screening could drop none of them, so they are timed in turn once at the end; an
        # INT8 candidate within budget is screened only when one over budget is to be taken up again (its limit).
        self.screen = len(self.forms) > 2
        self.candidates: dict[str, Candidate] = {}
        self.built: dict = {}
        self.set_aside: list[str] = []
        self.first_tries: dict = {}
        self.screened: list[str] = []

    def build_all(self) -> None:
        from scnet_deploy.calibration.budget import FirstTry, SpeedLimit

        for i, name in enumerate(self.forms):
            self.first_tries[name] = FirstTry() if self.limited else None
            if not self.build_and_time(i, name, SpeedLimit(None, self.x) if self.limited else None):
                break

    def build_and_time(self, i: int, name: str, limit) -> bool:
        """Build and time one candidate; False when nothing more should be built (it cannot run here)."""
        self.job.progress(Progress(f"{self.label}: building {name}", done=i, total=len(self.forms)))
        cand_dir = self.scratch / f"{i}"
        shutil.rmtree(cand_dir, ignore_errors=True)
        cand_dir.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            fields = self.job.build(name, cand_dir, limit, self.first_tries.get(name))
        except ScnetDeployError as exc:
            self.candidates[name] = Candidate(error=str(exc).splitlines()[0])
            return True
        if "abandoned" in fields:
            stopped = fields["abandoned"]
            self.candidates[name] = Candidate(timed=True, over_budget_ms=round(stopped.ms, 2),
                                              abandoned=stopped.reason, tries=list(stopped.tries))
            if limit.ms is None:
                self.set_aside.append(name)
            return True
        self.built[name] = (cand_dir, fields)
        self.candidates[name] = Candidate(build_s=round(time.perf_counter() - t0, 2))
        return self.time_screening(name) if self.screen else True

    def time_screening(self, name: str) -> bool:
        """Screen one built candidate; False when this machine cannot run it (nothing more should be built)."""
        cand_dir, fields = self.built[name]
        self.job.progress(Progress(f"{self.label}: timing {name} at {self.size[0]}x{self.size[1]}",
                                   done=self.forms.index(name), total=len(self.forms)))
        ms, reason = _time_artifact(self.module, cand_dir, fields, self.job.precision, self.x, self.tune.runs,
                                    fastest_ms(self.candidates))
        self.candidates[name].time(ms)
        self.screened.append(name)
        if ms is None:  # cannot run here: nothing to compare, keep the first form without building the rest
            self.candidates[name].not_timed = reason
            return False
        return True

    def unscreened(self) -> list[str]:
        return [n for n in self.built if not self.candidates[n].timed]

    def take_up_set_aside(self) -> None:
        """The candidates set aside over budget, fastest first, each while it could still win."""
        from scnet_deploy.calibration.budget import SpeedLimit

        fp32_ms = self.job.fp32_ms if self.limited else None
        for name in sorted(self.set_aside, key=lambda n: self.candidates[n].over_budget_ms):
            if not all(map(self.time_screening, self.unscreened())):  # the speed to beat: the fastest within budget
                break
            best_ms, rival = fastest_ms(self.candidates), "the fastest within budget"
            if fp32_ms is not None and (best_ms is None or fp32_ms < best_ms):
                best_ms, rival = fp32_ms, "this backend's FP32 engine, autotuned in this session"
            all_int8_ms = self.candidates[name].over_budget_ms
            if best_ms is not None and all_int8_ms >= RESUME_BELOW * best_ms:
                self.candidates[name].abandoned = (
                    f"over budget all-INT8, and already then slower ({all_int8_ms:.1f} ms) than {best_ms:.1f} ms, "
                    f"{rival}" if all_int8_ms > best_ms else
                    f"over budget all-INT8 at {all_int8_ms:.1f} ms, not {1 - RESUME_BELOW:.0%} faster than "
                    f"{best_ms:.1f} ms, {rival}: the float layers it needs could only slow it to a tie at best")
                continue
            # resumed from its all-INT8 try where the quantizer kept it; none within budget yet: its whole loop
            self.build_and_time(self.forms.index(name), name, SpeedLimit(math.inf if best_ms is None else best_ms,
                                                                         self.x))

    def choose(self) -> tuple[str, float | None]:
        """The fastest candidate (the two fastest again in turn where there were more than two), and its ms; an
        INT8 one not 5% faster than the session's FP32 engine is refused."""
        job, candidates = self.job, self.candidates
        if not self.screen and (len(self.built) > 1 or self.unscreened()):  # timed in turn once: that decides
            _time_in_turn_only(self.module, self.built, candidates, job.precision, self.x, self.tune.runs,
                               job.progress, self.label)
        if not self.built:
            raise ExportError(f"no candidate form could be built for {job.format} {job.precision}: "
                              + "; ".join(f"{n}: {c.error or c.abandoned}" for n, c in candidates.items()))
        best = fastest(records(candidates)) or next(iter(self.built))
        top_two = sorted((n for n in self.built if candidates[n].median_ms is not None),
                         key=lambda n: candidates[n].median_ms)[:2]
        if self.screen and len(top_two) == 2:  # the two fastest again, run for run in turn: one slow spell cannot decide
            job.progress(Progress(f"{self.label}: {' vs '.join(top_two)}, interleaved"))
            for name, timing in _interleaved(self.module, {n: self.built[n] for n in top_two}, job.precision, self.x,
                                             self.tune.runs).items():
                candidates[name].interleaved_ms = timing["median_ms"]
            best = fastest(records(candidates), "interleaved_ms")
        best_ms = candidates[best].interleaved_ms or candidates[best].median_ms
        fp32_ms = job.fp32_ms if self.limited else None
        if fp32_ms is not None and best_ms is not None and best_ms >= RESUME_BELOW * fp32_ms:
            raise ExportError(f"{job.format} INT8 within the accuracy gate ({best}: {best_ms:.1f} ms at "
                              f"{self.size[0]}x{self.size[1]}) is not {1 - RESUME_BELOW:.0%} faster than its FP32 engine "
                              f"built in this session ({fp32_ms:.1f} ms): its drift would buy nothing; ship the FP32 "
                              "engine (or bf16 where the CPU has it).")
        return best, best_ms

    def record(self, best: str) -> "AutotuneRecord":
        tune, job = self.tune, self.job
        return AutotuneRecord(
            tune.optimize, list(self.size), tune.runs, -(-tune.runs // 2) if self.screened else 0,
            "--candidates" if tune.candidates else f"{job.format} {job.precision} default",
            {n: self.candidates[n].record() for n in self.forms if n in self.candidates}, best,
            screening_gives_up_above=GIVE_UP_ABOVE)


def _time_in_turn_only(module, built: dict, candidates: dict[str, Candidate], precision: str, x: np.ndarray, runs: int,
                       progress, label: str) -> None:
    """Two candidates or fewer: each one's median is its time in turn with the other (``median_ms`` and
    ``interleaved_ms`` alike; a screening median taken before is kept as ``screening_ms``); where this machine cannot
    run the engine, the first form is kept untimed."""
    progress(Progress(f"{label}: {' vs '.join(built)}, in turn"))
    try:
        timings = _interleaved(module, built, precision, x, runs)
    except ScnetDeployError as exc:  # TensorRT without a GPU, Core ML off macOS, ...
        first = next(iter(built))
        for name in list(built)[1:]:
            del built[name], candidates[name]
        candidates[first].time(None, not_timed=str(exc).splitlines()[0])
        return
    for name, timing in timings.items():
        if candidates[name].timed:  # screened before (the speed limit of an INT8 candidate over budget)
            candidates[name].screening_ms = candidates[name].median_ms
        if "error" in timing:
            candidates[name].time(None, error=timing["error"])
        else:
            candidates[name].time(timing["median_ms"], interleaved_ms=timing["median_ms"])


def _interleaved(module, artifacts: dict, precision: str, x: np.ndarray, runs: int) -> dict:
    """``in_turn`` over built artifacts ({name: (directory, fields)}), each loaded once."""
    runners = {name: _load(module, d, f, precision) for name, (d, f) in artifacts.items()}
    try:
        return in_turn({name: r.infer for name, r in runners.items()}, x, runs, warmup=1)
    finally:
        for r in runners.values():
            r.close()


TILE_MARGIN = 0.95  # a tile must beat the whole image by 5%: tiling has a cost the timing noise must not hide


SPLIT = "split "  # the prefix of split execution's ways in the tiles' record: "split 64"


def _split_ways(runner, spec, x: np.ndarray, tune: TuneOptions, timings: dict) -> dict:
    """Split execution at each of ``tune.split_tiles`` smaller than the image, where the engine's graph can be cut
    and the split output is the whole engine's (checked on ``x``, a run that is each way's warm-up): an FP32
    engine's to float rounding, a reduced precision's within ``runner.SAME_ENGINE_MIN_PSNR_DB`` (its two parts
    compiled apart round differently: OpenVINO INT8 ~56 dB on a tiny model): ``runner.within_tolerance``."""
    from scnet_deploy.exporters.runner import psnr_vs_reference, within_tolerance
    from scnet_deploy.exporters.split import SplitRunner

    sides = [t for t in tune.split_tiles if t < max(x.shape[2:])]
    if not sides or runner.parts() is None:
        return {}
    whole, ways = runner.infer(x), {}
    for t in sides:
        split = SplitRunner(runner, t, spec.to_dict())
        out = split.infer(x)
        diff, psnr = float(np.abs(out - whole).max()), psnr_vs_reference(out, whole)
        if not within_tolerance(runner.precision, diff, psnr, same_engine=True):
            timings[SPLIT + str(t)] = {"error": f"not the whole engine's output here (max abs diff {diff:.2g}, "
                                                f"PSNR {psnr:.1f} dB)"}
            continue
        timings[SPLIT + str(t)] = {"max_abs_diff_to_whole": diff}
        ways[SPLIT + str(t)] = split.infer
    return ways


def _time_tiles(runner, spec, fmt: str, x: np.ndarray, tune: TuneOptions, progress, whole_ms: float) -> dict:
    """The whole image ("none"), exact tiling at each tile side smaller than the image and split execution at each
    split tile side ("split N", ``_split_ways``), on the same loaded engine. ``whole_ms``: the whole image's median
    from the candidates' timing, in turn with another candidate or screened alone; an engine timed in turn runs
    slower than alone (each evicts the other's memory), never faster. Each way is first screened alone (one
    warm-up, half the runs), stopped after its first run if that is already slower than ``whole_ms``: it cannot
    beat the whole image alone either. Only if one screens ``TILE_MARGIN`` faster than ``whole_ms`` is the whole
    image screened alone on the same engine, alone against alone (comparing a tile alone with an in-turn median made
    tiles look faster than they were); a way that still beats it by the margin is timed again in turn with the whole
    image, and only those timings choose (``choose_plan``)."""
    from scnet_deploy.exporters.runner import TiledRunner

    tiles = {str(t): TiledRunner(runner, t, spec.receptive_radius, spec.scale).infer
             for t in tune.tiles if t < max(x.shape[2:])}
    timings = {"none": {"median_ms": whole_ms, "from": "candidates"}}
    tiles.update(_split_ways(runner, spec, x, tune, timings))
    progress(Progress(f"autotune {fmt}: whole image vs {', '.join(tiles) or 'no tiles'} (LR px)"))
    for name, infer in tiles.items():
        warmed = name.startswith(SPLIT)  # by its check
        try:
            timings[name] = {**timings.get(name, {}), "from": "screening", "median_ms": median_ms(
                infer, x, -(-tune.runs // 2), warmup=0 if warmed else 1, give_up_above_ms=whole_ms)}
        except ScnetDeployError as exc:  # a tile smaller than the engine's minimum input, say
            timings[name] = {"error": str(exc).splitlines()[0]}

    def beating(reference: float) -> list[str]:
        return [n for n in tiles if timings[n].get("median_ms", reference) < TILE_MARGIN * reference]

    if beating(whole_ms):
        alone = median_ms(runner.infer, x, -(-tune.runs // 2))
        timings["none"] = {"median_ms": alone, "from": "screening", "candidates_ms": whole_ms}
        promising = {n: tiles[n] for n in beating(alone)}
        if promising:
            for name, timing in in_turn({"none": runner.infer, **promising}, x, tune.runs, warmup=1).items():
                kept = {k: v for k, v in timings[name].items() if k == "max_abs_diff_to_whole"}
                timings[name] = {**kept, **timing}
    return timings


def choose_plan(timings: dict) -> tuple[str, int] | None:
    """The fastest way in pieces timed in turn with the whole image (not one only screened) if it beats the whole
    image by the margin, as ("tile", side) or ("split", side); else None (run whole images)."""
    best = fastest({k: v for k, v in timings.items() if k != "none" and v.get("from") != "screening"})
    if best is None or timings[best]["median_ms"] >= TILE_MARGIN * timings["none"]["median_ms"]:
        return None
    return ("split", int(best[len(SPLIT):])) if best.startswith(SPLIT) else ("tile", int(best))
