"""``upscale`` (images through any model, tiled exactly) and ``infer`` (arrays in, arrays out: what a device runs
for ``validate --on``)."""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from .app import app, console, err_console
from .display import progress_display
from ..options import RuntimeOptions
from .groups import RUNTIME, Outputs, uses
from .output import upscale_lines, write_outputs


@app.command("upscale")
@uses(runtime=RUNTIME)
def upscale_cmd(
    model: Path = typer.Argument(..., help="Checkpoint or artifact directory."),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder, or a file (.png/.jpg/.webp) for one "
                                "input (.mp4/.mkv/.mov/.webm for a video)."),
    codec: Optional[str] = typer.Option(None, help="Video: the FFmpeg encoder (default: the input's codec, else "
                                        "libx264; ffv1 is lossless)."),
    crf: Optional[int] = typer.Option(None, help="Video: quality for x264/x265/VP9/AV1 (default 18)."),
    pix_fmt: Optional[str] = typer.Option(None, help="Video: pixel format (default: the input's; 10-bit stays "
                                          "10-bit)."),
    tile: Optional[int] = typer.Option(None, help="Tile size in LR pixels (default: from --max-memory)."),
    overlap: Optional[int] = typer.Option(None, help="Tile halo in LR pixels (default and minimum: the receptive "
                                          "radius, so tiles are exact)."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB; sets the tile size (default: 70% of what "
                                             "this process may use: free memory, cgroup and address-space limits)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Resume a batch: keep outputs that exist, "
                                       "when complete: a readable image of the expected size)."),
    inflight: Optional[int] = typer.Option(None, help="Images (or video frames) in flight (default: the engine's "
                                           "optimal number in its throughput mode; 1: one at a time)."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on a Ray cluster: local (start Ray here), auto (the "
                                      "cluster this machine is part of) or its address; inputs and outputs on a "
                                      "filesystem every node sees (docs/cluster.md)."),
    ray_actors: Optional[int] = typer.Option(None, help="--ray: actors (default: as many as the nodes hold, by "
                                             "CPUs / --threads and the memory model)."),
    runtime: RuntimeOptions = None,
) -> None:
    """Upscale images with a checkpoint or any engine, tiled exactly; keeps grey, alpha and 16-bit. A file that
    cannot be read or written is reported and skipped; exit code 1 when any failed."""
    from ..upscale import DONE, FAILED_STATUS, UpscaleOptions, upscale
    from ..video import VideoOptions

    options = UpscaleOptions(output, tile=tile, overlap=overlap, max_memory_mb=max_memory,
                             runtime=runtime, skip_existing=skip_existing, inflight=inflight,
                             video=VideoOptions(codec, crf, pix_fmt))
    with progress_display(err_console, "upscaling") as show:
        if ray is not None:
            from ..devices.cluster import RayOptions, upscale_on_ray

            results = upscale_on_ray(model, inputs, options, RayOptions(ray, ray_actors), progress=show)
        else:
            results = upscale(model, inputs, options, progress=show)
    if upscale_lines(results, DONE, FAILED_STATUS):
        raise typer.Exit(1)


@app.command("infer")
@uses(runtime=RUNTIME)
def infer_cmd(
    model: Path = typer.Argument(..., help="Artifact directory (or checkpoint, where PyTorch is installed)."),
    inputs: Path = typer.Argument(..., help=".npz of float32 CHW LR arrays in [0, 1]."),
    output: Path = typer.Option(..., "--output", "-o", help=".npz to write the outputs to (same keys)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write what ran (engine, tiles, seconds) as JSON."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: larger images run in exact tiles."),
    runtime: RuntimeOptions = None,
) -> None:
    """Run a model on arrays (.npz in, .npz out): what validate --on runs on a device."""
    from ..infer import InferOptions, infer

    with progress_display(err_console, "inferring") as show:
        result = infer(model, inputs, InferOptions(output, runtime, max_memory), progress=show)
    write_outputs(result, Outputs(json_file, None, None), [])
    console.print(f"{len(result['runs'])} array(s) through {escape(result['name'])} -> {escape(str(output))}")
