"""``pipeline``: the main job, from a checkpoint (default: the shipped reference) to a recommended engine."""

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from ..build_options import CalibOptions, PipelineOptions, TuneOptions
from ..gate import AccuracyGate
from .app import app, console
from .display import progress_display
from .groups import DEVICES, GATE, MEMORY, Devices, options_group, uses
from .output import failed_devices, pipeline_lines

DEFAULTS = PipelineOptions()
PIPELINE = options_group("Pipeline", PipelineOptions, make=lambda **fields: fields)
# the export's INT8 and autotune options, with the pipeline's own defaults (16 crops; autotuned for latency)
INT8 = options_group("INT8 calibration", DEFAULTS.calib)
TUNE = options_group("Autotuning", DEFAULTS.tune, only=("optimize", "candidates", "tiles", "split_tiles"))


@app.command("pipeline")
@uses(fields=PIPELINE, gate=GATE, calib=INT8, tune=TUNE, max_memory=MEMORY, devices=DEVICES)
def pipeline_cmd(
    checkpoint: Optional[Path] = typer.Argument(None, help="Checkpoint (default: the shipped reference SCNet-T x4)."),
    output: Path = typer.Option(DEFAULTS.output, "--output", "-o", help="Output directory."),
    fields: dict = None, gate: AccuracyGate = None, calib: CalibOptions = None, tune: TuneOptions = None,
    max_memory: Optional[int] = None, devices: Devices = None,
) -> None:
    """The main job: export to every engine this machine can build, validate, benchmark, report, recommend."""
    from ..pipeline import pipeline

    options = PipelineOptions(output=output, **fields, calib=calib, budget_db=gate.drift_db,
                              max_visible=gate.max_visible, visible_levels=gate.visible_levels,
                              tune=replace(tune, runs=fields["runs"]), max_memory_mb=max_memory)
    with progress_display(console, "starting", transient=False) as show:
        if devices.on:
            from ..devices.fleet import pipeline_on

            summary = pipeline_on(checkpoint, options, devices.on, devices.remote, progress=show)
        else:
            summary = pipeline(checkpoint, options, progress=show)
    pipeline_lines(summary, options.gate())
    failed_devices((summary.get("on_devices") or {}).get("failed"))
