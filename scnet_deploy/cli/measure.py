"""``bench`` (latency and throughput), ``validate`` (accuracy against ground truth and FP32) and ``report``, here or
on devices (``--on``: the device layer, ``devices.fleet``)."""

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..bench import BenchOptions
from ..errors import ScnetDeployError
from ..gate import AccuracyGate
from ..options import RuntimeOptions
from ..validate import ValidateOptions
from ..door import shown
from .app import app, console, err_console
from .display import progress_display
from .groups import (DEVICES, GATE_WHEN_ASKED, MEMORY, OUTPUTS, RUNTIME, Devices, Outputs, options_group, uses)
from .output import bench_tables, flicker_lines, device_bench_table, failed_devices, validate_tables, write_outputs


BENCH = options_group("Timing", BenchOptions)
VALIDATE = options_group("Validation", ValidateOptions, make=lambda **fields: fields)


@app.command("validate")
@uses(fields=VALIDATE, gate=GATE_WHEN_ASKED, runtime=RUNTIME, max_memory=MEMORY, devices=DEVICES, outputs=OUTPUTS)
def validate_cmd(
    models: list[Path] = typer.Argument(None, help="Checkpoints and/or artifact directories."),
    dataset: list[Path] = typer.Option(..., help="Folder: DIR/HR (+ DIR/LR_bicubic/X{s}) or a plain folder of "
                                       "images, or a video file (its first 60 frames, or --limit; flicker added); "
                                       "repeat for several (a table each, the worst named)."),
    scale: int = typer.Option(..., help="Upscaling factor of the models."),
    method: Optional[str] = typer.Option(None, help="Add a classical baseline row: bicubic."),
    fields: dict = None, gate: AccuracyGate = None, runtime: RuntimeOptions = None, max_memory: Optional[int] = None,
    devices: Devices = None, outputs: Outputs = None,
) -> None:
    """PSNR/SSIM-Y vs ground truth and drift vs the FP32 reference, for every model, side by side. Unreadable
    images are named and left out of the means."""
    from ..validate import validate

    if method not in (None, "bicubic"):
        raise ScnetDeployError(f"--method {method!r} is unknown; the available baseline is bicubic.")
    options = ValidateOptions(tuple(dataset), scale, method == "bicubic", gate.drift_db, runtime=runtime,
                              visuals=outputs.report, max_memory_mb=max_memory, max_visible=gate.max_visible,
                              visible_levels=gate.visible_levels, **fields)
    options.gate().check()
    with progress_display(err_console, "validating") as show:
        if devices.on:
            from ..devices.fleet import validate_on

            result = validate_on(models or [], options, devices.on, devices.remote, progress=show)
        else:
            result = validate(models or [], options, progress=show)
    write_outputs(result, outputs, validate_tables(result))
    flicker_lines(result)
    if not result["passed"]:
        err_console.print(f"[red]over budget, the accuracy gate ({shown(gate.describe())}):[/red] "
                          f"{shown(', '.join(result['over_budget']))}")
        for m in result["models"]:
            if m.get("gate_failure"):
                err_console.print(f"  {shown(m['name'])}: {shown(m['gate_failure'])}", soft_wrap=True)
        raise typer.Exit(1)
    failed_devices(result.get("failed_devices"))


@app.command("bench")
@uses(options=BENCH, runtime=RUNTIME, max_memory=MEMORY, devices=DEVICES, outputs=OUTPUTS)
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="Checkpoints and/or artifact directories."),
    options: BenchOptions = None, runtime: RuntimeOptions = None, max_memory: Optional[int] = None,
    devices: Devices = None, outputs: Outputs = None,
) -> None:
    """Latency and throughput of each model at each size (with --baselines, PyTorch eager from the same run); with
    --on, on each device (one table, a column per device)."""
    from ..bench import bench

    options = replace(options, runs=None if options.seconds else options.runs, runtime=runtime,
                      max_memory_mb=max_memory)
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
