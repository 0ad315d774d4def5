"""``upscale`` (images through any model, tiled exactly) and ``infer`` (arrays in, arrays out: what a device runs
for ``validate --on``)."""

from pathlib import Path
from typing import Optional

import typer

from ..door import shown
from .app import app, console, err_console
from .display import progress_display
from ..options import RuntimeOptions
from ..imaging.video import VideoOptions
from ..upscale import UpscaleOptions
from .groups import JSON_FILE, MEMORY, RUNTIME, Outputs, options_group, uses
from .output import upscale_lines, write_outputs


UPSCALE = options_group("Upscaling", UpscaleOptions, make=lambda **fields: fields)
VIDEO = options_group("Video", VideoOptions)


@app.command("upscale")
@uses(fields=UPSCALE, video=VIDEO, runtime=RUNTIME, max_memory=MEMORY)
def upscale_cmd(
    model: Path = typer.Argument(..., help="Checkpoint or artifact directory."),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder, or a file (.png/.jpg/.webp) for one "
                                "input (.mp4/.mkv/.mov/.webm for a video)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on a Ray cluster: local (start Ray here), auto (the "
                                      "cluster this machine is part of) or its address; inputs and outputs on a "
                                      "filesystem every node sees (docs/cluster.md)."),
    ray_actors: Optional[int] = typer.Option(None, help="--ray: actors (default: as many as the nodes hold, by "
                                             "CPUs / --threads and the memory model)."),
    fields: dict = None, video: VideoOptions = None, runtime: RuntimeOptions = None, max_memory: Optional[int] = None,
) -> None:
    """Upscale images with a checkpoint or any engine, tiled exactly; keeps grey, alpha and 16-bit. A file that
    cannot be read or written is reported and skipped; exit code 1 when any failed."""
    from ..upscale import DONE, FAILED_STATUS, upscale

    options = UpscaleOptions(output, **fields, max_memory_mb=max_memory, runtime=runtime, video=video)
    with progress_display(err_console, "upscaling") as show:
        if ray is not None:
            from ..devices.cluster import RayOptions, upscale_on_ray

            results = upscale_on_ray(model, inputs, options, RayOptions(ray, ray_actors), progress=show)
        else:
            results = upscale(model, inputs, options, progress=show)
    if upscale_lines(results, DONE, FAILED_STATUS):
        raise typer.Exit(1)


@app.command("infer")
@uses(runtime=RUNTIME, max_memory=MEMORY, outputs=JSON_FILE)
def infer_cmd(
    model: Path = typer.Argument(..., help="Artifact directory (or checkpoint, where PyTorch is installed)."),
    inputs: Path = typer.Argument(..., help=".npz of float32 CHW LR arrays in [0, 1]."),
    output: Path = typer.Option(..., "--output", "-o", help=".npz to write the outputs to (same keys)."),
    runtime: RuntimeOptions = None, max_memory: Optional[int] = None, outputs: Outputs = None,
) -> None:
    """Run a model on arrays (.npz in, .npz out): what validate --on runs on a device."""
    from ..infer import InferOptions, infer

    with progress_display(err_console, "inferring") as show:
        result = infer(model, inputs, InferOptions(output, runtime, max_memory), progress=show)
    write_outputs(result, outputs, [])
    console.print(f"{len(result['runs'])} array(s) through {shown(result['name'])} -> {shown(str(output))}")
