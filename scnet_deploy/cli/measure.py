"""``bench`` (latency and throughput), ``validate`` (accuracy against ground truth and FP32) and ``report``, here or
on devices (``--on``: the device layer, ``devices.fleet``)."""

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..errors import ScnetDeployError
from .app import app, console, err_console
from .display import progress_display
from ..options import RuntimeOptions
from .groups import DEVICES, OUTPUTS, RUNTIME, Devices, Outputs, parse_list, parse_shapes, uses
from .output import bench_tables, flicker_lines, device_bench_table, failed_devices, validate_tables, write_outputs


@app.command("validate")
@uses(runtime=RUNTIME, devices=DEVICES, outputs=OUTPUTS)
def validate_cmd(
    models: list[Path] = typer.Argument(None, help="Checkpoints and/or artifact directories."),
    dataset: list[Path] = typer.Option(..., help="Folder: DIR/HR (+ DIR/LR_bicubic/X{s}) or a plain folder of "
                                       "images, or a video file (its first 60 frames, or --limit; flicker added); "
                                       "repeat for several (a table each, the worst named)."),
    scale: int = typer.Option(..., help="Upscaling factor of the models."),
    method: Optional[str] = typer.Option(None, help="Add a classical baseline row: bicubic."),
    budget: Optional[float] = typer.Option(None, help="Turn on the accuracy gate with this PSNR-Y drift, dB: fail (exit "
                                           "1) if any model changes a content type visibly (0.1%+ of an image's "
                                           "pixels 4+ levels off FP32) or drifts more than this on it."),
    content: Optional[str] = typer.Option(None, help="The datasets the gate judges, by name, comma-separated "
                                          "(default: every one); the others are shown, not judged."),
    reference: Optional[Path] = typer.Option(None, help="FP32 reference checkpoint (default: first checkpoint "
                                             "among MODELS, else the artifacts' own)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images."),
    frames: bool = typer.Option(False, "--frames", help="Each dataset folder is consecutive frames of a video (in "
                                "name order): add flicker, how differently from FP32 each engine's output changes "
                                "from frame to frame (a video file given as --dataset always gets it)."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: images whose run would not fit are run "
                                             "in exact tiles (default: 70% of what this process may use)."),
    runtime: RuntimeOptions = None, devices: Devices = None, outputs: Outputs = None,
) -> None:
    """PSNR/SSIM-Y vs ground truth and drift vs the FP32 reference, for every model, side by side. Unreadable
    images are named and left out of the means."""
    from ..validate import ValidateOptions, validate

    if method not in (None, "bicubic"):
        raise ScnetDeployError(f"--method {method!r} is unknown; the available baseline is bicubic.")
    options = ValidateOptions(tuple(dataset), scale, method == "bicubic", budget, reference, limit,
                              runtime, visuals=outputs.report, max_memory_mb=max_memory,
                              content=parse_list(content) if content else None, frames=frames)
    with progress_display(err_console, "validating") as show:
        if devices.on:
            from ..devices.fleet import validate_on

            result = validate_on(models or [], options, devices.on, devices.remote, progress=show)
        else:
            result = validate(models or [], options, progress=show)
    write_outputs(result, outputs, validate_tables(result))
    flicker_lines(result)
    if not result["passed"]:
        err_console.print(f"[red]over budget ({budget} dB, the accuracy gate):[/red] {escape(', '.join(result['over_budget']))}")
        for m in result["models"]:
            if m.get("gate_failure"):
                err_console.print(f"  {escape(m['name'])}: {escape(m['gate_failure'])}", soft_wrap=True)
        raise typer.Exit(1)
    failed_devices(result.get("failed_devices"))


@app.command("bench")
@uses(runtime=RUNTIME, devices=DEVICES, outputs=OUTPUTS)
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="Checkpoints and/or artifact directories."),
    shape: str = typer.Option("180x320", help="LR shapes HxW, comma-separated."),
    video: Optional[str] = typer.Option(None, help="Can each engine keep up with this output video, WxH@FPS (e.g. "
                                        "1920x1080@30), or with upscaling this video file? Times the LR frame size "
                                        "(WxH over the scale; the file's frame size) and says, per engine, with "
                                        "decode and encode counted (H.264; the file's own codec) and without."),
    runs: int = typer.Option(10, help="Timed runs per model and shape."),
    seconds: Optional[float] = typer.Option(None, help="Time each model and shape for this long instead of --runs."),
    warmup: int = typer.Option(2, help="Untimed runs after the first inference."),
    batch: int = typer.Option(1, help="Batch size."),
    baselines: bool = typer.Option(True, help="Also time PyTorch official-form eager and deploy form."),
    mode: str = typer.Option("latency", help="latency, or throughput: also images/s with several requests in "
                             "flight."),
    inflight: Optional[int] = typer.Option(None, help="Throughput mode: requests in flight (default: the engine's "
                                           "optimal number; 1 where it has none)."),
    ov_performance: str = typer.Option("latency", help="OpenVINO performance hint of the latency runs: latency or "
                                       "throughput (throughput mode's in-flight runs always use throughput)."),
    ov_streams: Optional[int] = typer.Option(None, help="OpenVINO streams."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: a shape whose run would not fit is "
                                             "refused before anything runs (default: 70% of what this process may "
                                             "use)."),
    runtime: RuntimeOptions = None, devices: Devices = None, outputs: Outputs = None,
) -> None:
    """Latency and throughput of each model at each shape, with PyTorch baselines from the same run; with --on, on
    each device (one table, a column per device)."""
    from ..bench import BenchOptions, bench
    from ..video import parse_video_target
    from ..options import OpenVINOOptions

    runtime = replace(runtime, openvino=OpenVINOOptions(performance=ov_performance, streams=ov_streams))
    options = BenchOptions(parse_shapes(shape), None if seconds else runs, seconds, warmup, batch, baselines,
                           runtime=runtime, max_memory_mb=max_memory, mode=mode, inflight=inflight,
                           video=parse_video_target(video) if video else None)
    with progress_display(err_console, "benchmarking") as show:
        if devices.on:
            from ..devices.fleet import bench_on

            result = bench_on(models, options, devices.on, devices.remote, progress=show)
        else:
            result = bench(models, options, progress=show)
    if devices.on:
        write_outputs(result, replace(outputs, report=None), device_bench_table(result))
        failed_devices(result.get("failed"))
    else:
        write_outputs(result, outputs, bench_tables(result))


@app.command("report")
def report_cmd(
    results: list[Path] = typer.Argument(..., help="JSON files written by bench/validate --json."),
    output: Path = typer.Option(..., "--output", "-o", help="Report directory."),
) -> None:
    """Markdown tables and PNG plots (latency vs resolution, drift, latency vs drift) from saved results."""
    from ..report import load_results, report

    console.print(f"wrote {report(load_results(results), output)}")
