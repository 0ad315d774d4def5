"""``pipeline``: the main job, from a checkpoint (default: the shipped reference) to a recommended engine."""

from pathlib import Path
from typing import Optional

import typer

from ..gate import DEFAULT_DRIFT_DB
from .app import app, console
from .display import progress_display
from .groups import DEVICES, Devices, parse_list, parse_shapes, uses
from .output import failed_devices, pipeline_lines


@app.command("pipeline")
@uses(devices=DEVICES)
def pipeline_cmd(
    checkpoint: Optional[Path] = typer.Argument(None, help="Checkpoint (default: the shipped reference SCNet-T x4)."),
    output: Path = typer.Option(Path("scnet-deploy-out"), "--output", "-o", help="Output directory."),
    dataset: Optional[list[Path]] = typer.Option(None, help="Validation images, repeat for several content types "
                                                 "(default: photos, line art, text, flat colours, textures)."),
    calib_data: Optional[Path] = typer.Option(None, help="INT8 calibration images (default: scikit-image photos)."),
    calib_count: int = typer.Option(16, help="INT8 calibration crops."),
    budget: float = typer.Option(DEFAULT_DRIFT_DB, help="Drift budget, dB: INT8 fallback, and with the visible-change "
                                 "check the accuracy gate of the recommendation."),
    content: Optional[str] = typer.Option(None, help="The content types the gate judges, comma-separated (default: "
                                          "every validation dataset); the others are shown in the report."),
    shape: str = typer.Option("90x160,180x320", help="LR sizes to benchmark."),
    runs: int = typer.Option(5, help="Timed runs per engine and size."),
    formats: str = typer.Option("onnx,openvino,coreml,tensorrt,ncnn", help="Formats to consider."),
    compute: str = typer.Option("cpu", help="Compute units for backends that have several, comma-separated: cpu, "
                                "vulkan (ncnn)."),
    optimize: str = typer.Option("latency", help="latency: each engine in its fastest measured form (see export "
                                 "--optimize); none: the default form."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: validation runs larger images in exact "
                                             "tiles (default: 70% of what this process may use)."),
    devices: Devices = None,
) -> None:
    """The main job: export to every engine this machine can build, validate, benchmark, report, recommend."""
    from ..pipeline import PipelineOptions, pipeline

    options = PipelineOptions(output, tuple(dataset) if dataset else None, calib_data, calib_count, budget,
                              parse_shapes(shape), runs, parse_list(formats), optimize, max_memory,
                              content=parse_list(content) if content else None, compute=parse_list(compute))
    with progress_display(console, "starting", transient=False) as show:
        if devices.on:
            from ..devices.fleet import pipeline_on

            summary = pipeline_on(checkpoint, options, devices.on, devices.remote, progress=show)
        else:
            summary = pipeline(checkpoint, options, progress=show)
    pipeline_lines(summary, budget)
    failed_devices((summary.get("on_devices") or {}).get("failed"))
