"""The ``bench`` verb: latency and throughput of any mix of checkpoints and engines, with PyTorch baselines measured
in the same run so every speed is also a ratio.

Per model and shape: load time, the first inference (reported apart), ``warmup`` untimed runs, then ``runs`` timed
runs (or as many as fit in ``seconds``); median, mean, p90, p99, min, max; images/s and output megapixels/s.
``mode="throughput"`` adds images/s with several requests in flight (OpenVINO's async infer queue, the engine
compiled again with its throughput hint; other engines from threads), the median of three rounds
(``throughput_rounds``), and its ratio to the latency run's images/s (the engine as it runs one image at a time).
"""

import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import ScnetDeployError
from .options import RuntimeOptions, option, parse_sizes, sizes_text
from .progress import Progress, reporter
from .sustained import parse_duration
from .video import parse_video_target


@dataclass(frozen=True)
class BenchOptions:
    shapes: tuple[tuple[int, int], ...] = option(((180, 320),), "LR sizes HxW, comma-separated.", flag="--size",
                                                 cli=str, parse=parse_sizes, show=sizes_text)
    runs: int | None = option(10, "Timed runs per model and size.")
    # measure for this long instead of a run count
    seconds: float | None = option(None, "Time each model and size for this long instead of --runs.",
                                   cli=Optional[float])
    warmup: int = option(2, "Untimed runs after the first inference.")
    batch: int = option(1, "Batch size.")
    # PyTorch eager baselines of the models' checkpoint, in ``baseline_forms``: only when asked (eager PyTorch is
    # by far the slowest model: on 2 cores it took most of a 408 s bench of two engines)
    baselines: bool = option(False, "Also time the models' checkpoint in PyTorch eager (official and deploy form): "
                             "every speed-up is then also a ratio to it. Slow on a CPU.")
    baseline_forms: tuple[str, ...] = ("official", "dwconv")  # the official form first: every ratio is against it
    baseline_runs: int | None = None  # timed runs of the baselines (eager PyTorch is slow); None: ``runs``
    reference: Path | None = None  # the checkpoint of the baselines; None: the first among (or named by) the models
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    seed: int = 0
    rooflines: dict | None = None  # --profile: this machine's compute and memory rooflines (measured when None)
    max_memory_mb: int | None = None  # refuse (one line, before any run) what would not fit; None: memory model
    # "throughput" also measures images/s with several requests in flight
    mode: str = option("latency", "latency, or throughput: also images/s with several requests in flight.")
    # requests in flight in throughput mode; None: the engine's optimal number
    inflight: int | None = option(None, "Throughput mode: requests in flight (default: the engine's optimal number; "
                                  "1 where it has none).", cli=Optional[int])
    throughput_shapes: tuple[tuple[int, int], ...] | None = None  # throughput mode: shapes run in flight; None: all
    throughput_models: tuple[str, ...] | None = None  # throughput mode: only these model paths; None: every model
    throughput_rounds: int = 3  # throughput mode: rounds of at least ``runs`` images each; the median is reported
    profile: bool = option(False, "Also time each SCNet stage (head, body blocks, upsampler, HR tail, image skip) "
                           "with the runtime's own profiler, beside its MACs, bytes and this machine's compute and "
                           "memory rooflines.")
    sustained: float | None = option(None, "Also run each engine back to back for this long (e.g. 60s, 5m) at the "
                                     "first --size: images/s per 10 s window, first against last, where throttling "
                                     "started, CPU frequency, temperatures and energy per frame where the machine "
                                     "exposes them.", cli=Optional[str], parse=parse_duration)
    sustained_window_s: float = 10.0  # the window of --sustained (tests shorten it)
    # (height, width, fps) of an output video, or a video file to upscale: the LR shape is the output's frame size
    # over the scale (the file's frame size), and each engine is judged on keeping up with the frame rate, with the
    # codec's decode and encode counted and without (``video_verdict``; H.264 for a size, the file's own codec)
    video: tuple[int, int, float] | Path | None = option(
        None, "Can each engine keep up with this output video, HxW@FPS (e.g. 1080x1920@30), or with upscaling this "
        "video file? Times the LR frame size (the output's over the scale; the file's frame size) and says, per "
        "engine, with decode and encode counted (H.264; the file's own codec) and without.", cli=Optional[str],
        parse=parse_video_target)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summarize(times_s: list[float], batch: int, out_hw: tuple[int, int]) -> dict:
    med = statistics.median(times_s)
    return {"runs": len(times_s), "median_ms": med * 1e3, "mean_ms": statistics.fmean(times_s) * 1e3,
            "p90_ms": percentile(times_s, 90) * 1e3, "p99_ms": percentile(times_s, 99) * 1e3,
            "min_ms": min(times_s) * 1e3, "max_ms": max(times_s) * 1e3,
            "images_per_s": batch / med, "megapixels_per_s": batch * out_hw[0] * out_hw[1] / 1e6 / med}


def time_runner(runner, shape: tuple[int, int], options: BenchOptions, scale: int) -> dict:
    """Measure one runner at one LR shape (height, width)."""
    if options.runs is None and options.seconds is None:
        raise ScnetDeployError("bench needs --runs N or --seconds T.")
    h, w = shape
    x = np.random.default_rng(options.seed).random((options.batch, 3, h, w), dtype=np.float32)
    t0 = time.perf_counter()
    runner.infer(x)
    first = time.perf_counter() - t0
    for _ in range(options.warmup):
        runner.infer(x)
    times = []
    deadline = time.perf_counter() + options.seconds if options.seconds else None
    while True:
        t0 = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - t0)
        if deadline is not None:
            if time.perf_counter() >= deadline and len(times) >= 3:
                break
        elif len(times) >= options.runs:
            break
    out_hw = (h * scale, w * scale)
    return {"shape": [h, w], "output": list(out_hw), "batch": options.batch, "first_inference_ms": first * 1e3,
            **summarize(times, options.batch, out_hw)}


MODES = ("latency", "throughput")


def time_throughput(runner, shape: tuple[int, int], options: BenchOptions, scale: int,
                    latency: dict | None = None) -> dict:
    """Images/s with ``inflight`` requests in flight (the median of ``throughput_rounds`` rounds of at least
    ``runs`` images). With ``latency`` (the same engine's latency-run numbers), ``vs_latency`` is the ratio of the
    two; and an engine that runs best one request at a time (ONNX Runtime on CPU: its threads already work on one),
    not asked for more with ``--inflight``, runs in flight as it does in that run: its images/s are taken from it,
    not measured a second time."""
    h, w = shape
    x = np.random.default_rng(options.seed).random((options.batch, 3, h, w), dtype=np.float32)
    inflight = options.inflight or runner.optimal_requests()
    if inflight < 1:
        raise ScnetDeployError(f"--inflight must be at least 1, got {inflight}.")
    if inflight == 1 and options.inflight is None and latency is not None:
        rate = latency["images_per_s"]
        return {"inflight": 1, "images_per_round": None, "images_per_s": rate,
                "megapixels_per_s": rate * h * scale * w * scale / 1e6, "rounds_images_per_s": [],
                "from": "latency run (one request at a time is this engine's optimum)", "vs_latency": 1.0}
    from .interrupts import run_stoppable

    runner.infer(x)  # checks the input
    # in flight: an asynchronous queue waited on in native code, so Ctrl-C ends it by leaving it (run_stoppable)
    run_stoppable(lambda: runner.run_in_flight(x, inflight, inflight))  # every request warm
    count = max(options.runs or 10, 2 * inflight)
    rates = []
    for _ in range(options.throughput_rounds):
        t0 = time.perf_counter()
        run_stoppable(lambda: runner.run_in_flight(x, count, inflight))
        rates.append(count * options.batch / (time.perf_counter() - t0))
    rate = statistics.median(rates)
    result = {"inflight": inflight, "images_per_round": count * options.batch, "images_per_s": rate,
              "megapixels_per_s": rate * h * scale * w * scale / 1e6, "rounds_images_per_s": rates}
    if latency is not None:
        result["vs_latency"] = rate / latency["images_per_s"]
    return result


def _arch_and_backend(path: Path) -> tuple[dict, str]:
    """What the memory model needs of a model, without loading its engine."""
    from .manifest import MANIFEST_NAME, read_manifest

    if path.is_dir() and (path / MANIFEST_NAME).exists():
        manifest = read_manifest(path)
        if manifest.get("arch") and manifest.get("backend"):
            return manifest["arch"], manifest["backend"]
    from .model.checkpoint import load_checkpoint

    return load_checkpoint(path).spec.to_dict(), "pytorch"


def check_memory(plan: list[tuple[str | None, Path, str]], options: BenchOptions) -> None:
    """Refuse, before anything runs, a model and shape whose run would not fit the memory limit: the models
    asked for first, then the baselines (which ``--no-baselines`` leaves out)."""
    from .memory import limit_bytes, require_fits

    limit = limit_bytes(options.max_memory_mb)
    if limit is None:
        return
    for label, path, _ in sorted(plan, key=lambda item: item[0] is not None):
        arch, backend = _arch_and_backend(path)
        name = f"{label} (a baseline: --no-baselines leaves it out)" if label else f"'{path}' ({backend})"
        for h, w in options.shapes:
            require_fits(arch, backend, name, h, w, limit, options.batch)


def bench(models: list[str | Path], options: BenchOptions, progress=None) -> dict:
    """Time each model (checkpoint or artifact directory) at each shape, here; baselines first (when asked)."""
    from .doctor import machine

    models = [Path(m) for m in models]
    video = None
    if options.video is not None:
        options, video = _video_shapes(models, options)
    plan, baselines_skipped = _plan(models, options)
    check_memory(plan, options)
    if options.profile and options.rooflines is None:
        from .profile import rooflines

        options = replace(options, rooflines=rooflines())  # measured once, in this run, for every engine
    say, results = reporter(progress), []
    for label, path, form in plan:
        entry = _time_model(label, path, form, options, lambda event: say(replace(event, done=len(results),
                                                                                   total=len(plan))))
        if video is not None and entry["shapes"]:
            entry["video"] = video_verdict(entry["shapes"][0]["median_ms"] / options.batch, video, video["target"][2])
        results.append(entry)
    official = next((r for r in results if r["name"] == "pytorch official eager"), None)
    for r in results:
        for i, s in enumerate(r["shapes"]):
            s["speedup_vs_official_eager"] = (official["shapes"][i]["median_ms"] / s["median_ms"]) if official else None
    return {"options": _options_record(options), "models": results, "machine": machine(),
            "rooflines": options.rooflines,
            "baselines_skipped": baselines_skipped, "video": video}


def _plan(models: list[Path], options: BenchOptions) -> tuple[list, str | None]:
    """(label or None, path, form) of every model to time, the PyTorch baselines first where asked and possible;
    and why the baselines were skipped (None: they were not)."""
    from .errors import EXPORT_EXTRA, has_torch, require_export_stack
    from .runtime import find_checkpoint, require_models_exist

    require_models_exist([*models, *([options.reference] if options.reference else [])])
    plan = []
    base = (options.reference or find_checkpoint(models)) if options.baselines else None
    baselines_skipped = None
    if base is not None and not has_torch():  # a device runs artifacts without PyTorch: no eager baselines there
        if options.reference is not None:
            require_export_stack("the PyTorch baselines of --reference")
        base, baselines_skipped = None, f"PyTorch is not installed here ({EXPORT_EXTRA} adds it)"
    if base is not None:
        labels = {"official": "pytorch official eager", "dwconv": "pytorch deploy form (dwconv)"}
        if not set(options.baseline_forms) <= set(labels):
            raise ScnetDeployError(f"baseline forms {list(options.baseline_forms)}: choose among {list(labels)}.")
        plan += [(labels[form], base, form) for form in options.baseline_forms]
    plan += [(None, m, "official") for m in models]
    if not plan:
        raise ScnetDeployError("bench needs at least one MODEL (checkpoint or artifact directory).")
    if options.mode not in MODES:
        raise ScnetDeployError(f"--mode {options.mode!r} is unknown; choose {' or '.join(MODES)}.")
    return plan, baselines_skipped


def _time_model(label: str | None, path: Path, form: str, options: BenchOptions, say) -> dict:
    """One model's entry: its load time and each shape's timing (and throughput where asked)."""
    from .runtime import open_model

    t0 = time.perf_counter()
    with open_model(path, options.runtime, form=form) as runner:
        load_s = time.perf_counter() - t0
        scale = runner.arch["scale"]
        entry = {"name": label or runner.name, "path": str(path), "backend": runner.backend,
                 "precision": runner.manifest.get("precision", "fp32"), "baseline": label is not None,
                 "load_s": load_s, "shapes": []}
        note = getattr(runner, "timing_note", None)
        if note is not None:  # an emulator: its milliseconds say nothing of the device's; it runs, untimed
            return _untimed(entry, runner, note, options, say)
        for shape in options.shapes:
            say(Progress(f"{entry['name']} at {shape[0]}x{shape[1]}"))
            timed_as = replace(options, runs=options.baseline_runs) if label and options.baseline_runs else options
            entry["shapes"].append(_timed_with_peak(runner, shape, timed_as, scale))
            if options.profile and label is None:
                from .profile import profile

                say(Progress(f"{entry['name']} at {shape[0]}x{shape[1]}: profile"))
                entry["shapes"][-1]["profile"] = profile(runner, shape, options.runs or 5, options.rooflines,
                                                         options.seed)
        if options.sustained and label is None:
            from .sustained import run

            entry["sustained"] = run(runner, options.shapes[0], options.sustained,
                                     lambda e: say(e.prefixed(entry["name"])), options.sustained_window_s, options.seed)
    if options.mode == "throughput" and (options.throughput_models is None or str(path) in options.throughput_models):
        # Reopened for throughput (OpenVINO: compiled with its throughput hint, streams that serve requests in
        # parallel); the ratio is against the latency numbers above, the engine as it runs one image at a time.
        with open_model(path, options.runtime.for_throughput(), form=form) as runner:
            for shape, timed in zip(options.shapes, entry["shapes"]):
                if options.throughput_shapes is not None and tuple(shape) not in options.throughput_shapes:
                    continue
                say(Progress(f"{entry['name']} at {shape[0]}x{shape[1]}, in flight"))
                timed["throughput"] = time_throughput(runner, shape, options, scale, latency=timed)
    return entry


def _timed_with_peak(runner, shape: tuple[int, int], options: BenchOptions, scale: int) -> dict:
    """``time_runner``, and the process's resident high-water mark over the runs beyond what it held before them,
    beside the memory model's estimate (``memory.peak_record``)."""
    from .cpu_load import OtherLoad
    from .memory import estimate_bytes, peak_record, peak_resident_bytes, reset_peak, resident_bytes

    before, reset = resident_bytes(), reset_peak()
    with OtherLoad() as load:
        timed = time_runner(runner, shape, options, scale)
    timed["load"] = load.record()
    peak = peak_resident_bytes() if reset and before is not None else None
    estimate = estimate_bytes(runner.arch, runner.backend if runner.manifest else "pytorch", *shape, options.batch)
    timed["peak_memory"] = peak_record(None if peak is None else max(peak - before, 0), estimate)
    return timed


def _untimed(entry: dict, runner, note: str, options: BenchOptions, say) -> dict:
    """An engine that runs here on an emulator (Qualcomm's HTP on x86-64): each shape run once, to show it runs,
    and no milliseconds anywhere (``not_timed`` says why)."""
    for h, w in options.shapes:
        say(Progress(f"{entry['name']} at {h}x{w}: {note}"))
        runner.infer(np.random.default_rng(options.seed).random((options.batch, 3, h, w), dtype=np.float32))
    entry["not_timed"] = {"reason": note, "ran_at": [list(s) for s in options.shapes]}
    if options.profile:  # the emulator's cycles are the NPU's modelled ones: where the time goes, not how long
        from .profile import profile, shares_only

        entry["not_timed"]["profile"] = shares_only(profile(runner, tuple(options.shapes[0]), 1, options.rooflines,
                                                            options.seed))
    return entry


def _options_record(options: BenchOptions) -> dict:
    """The options as results record them: each backend's own runtime options by name (the runs in flight are
    compiled for several requests in flight: ``RuntimeOptions.for_throughput``)."""
    from dataclasses import asdict

    return {"shapes": [list(s) for s in options.shapes], "runs": options.runs,
            "baseline_runs": options.baseline_runs or options.runs, "seconds": options.seconds,
            "warmup": options.warmup, "batch": options.batch, "threads": options.runtime.threads,
            "mode": options.mode, "inflight": options.inflight, "profile": options.profile,
            "sustained_s": options.sustained,
            "runtime": {name: asdict(o) for name, o in options.runtime.backends.items()},
            "in_flight_runs_compiled_for_throughput": options.mode == "throughput"}


def _video_shapes(models: list[Path], options: BenchOptions) -> tuple[BenchOptions, dict]:
    """The options with the LR frame of ``options.video`` as their one shape (one scale for every model), and what
    the video is: its target (output height, width, fps) and the codec's cost here (``codec_ms_per_frame``)."""
    import tempfile

    from .imaging.video import codec_ms_per_frame, probe, synthetic_clip

    scales = {_arch_and_backend(m)[0]["scale"] for m in models}
    if len(scales) != 1:
        raise ScnetDeployError(f"--video needs models of one scale; these upscale x{sorted(scales)}.")
    scale = scales.pop()
    if isinstance(options.video, Path):
        info, target = _file_target(options.video, scale)
        video = {"target": list(target), "source": str(options.video), **codec_ms_per_frame(info, scale)}
    else:
        h, w, fps = options.video
        if w % scale or h % scale:
            raise ScnetDeployError(f"--video {h}x{w} is not a multiple of the models' scale {scale}.")
        with tempfile.TemporaryDirectory() as tmp:
            info = probe(synthetic_clip(Path(tmp) / "lr.mp4", (h // scale, w // scale), fps), scale)
            video = {"target": [h, w, fps], **codec_ms_per_frame(info, scale)}
    h, w, _ = video["target"]
    return replace(options, shapes=((h // scale, w // scale),)), video


def video_target(models: list[Path], video: tuple[int, int, float] | Path) -> tuple[int, int, float]:
    """(output height, width, fps) of ``--video``: as given, or a file's frame size times the models' scale."""
    if not isinstance(video, Path):
        return video
    return _file_target(video, _arch_and_backend(Path(models[0]))[0]["scale"])[1]


def _file_target(src: Path, scale: int):
    """A video file through the door (``probe``) and its output: (height, width, fps) upscaled ``scale`` times."""
    from .imaging.video import probe

    info = probe(src, scale)
    return info, (info.height * scale, info.width * scale, float(info.rate))


STANDARD_RATES = (24, 25, 30, 50, 60)  # the frame rates a verdict also names (``keeps_up_with``)


def video_verdict(frame_ms: float, codec: dict, fps: float) -> dict:
    """Frames per second of the engine alone and with the codec's decode and encode counted, against ``fps``, and
    the standard rates each keeps up with."""
    with_codec = frame_ms + codec["decode_ms"] + codec["encode_ms"]
    alone, coded = 1000 / frame_ms, 1000 / with_codec
    return {"target_fps": fps, "fps": alone, "fps_with_codec": coded,
            "real_time": alone >= fps, "real_time_with_codec": coded >= fps,
            "keeps_up_with": [r for r in STANDARD_RATES if alone >= r],
            "keeps_up_with_codec": [r for r in STANDARD_RATES if coded >= r]}


def rates_text(verdict: dict) -> str:
    """The standard frame rates an engine keeps up with, the codec counted ("-": a result that did not record them)."""
    found = verdict.get("keeps_up_with_codec")
    return "-" if found is None else ", ".join(f"{r} fps" for r in found) or "none"
