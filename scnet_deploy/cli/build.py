"""``export`` (a checkpoint to verified engine artifacts) and ``build-engine`` (TensorRT's engine, on its device)."""

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..errors import ScnetDeployError
from .app import app, console, err_console
from .display import progress_display
from .groups import AUTOTUNE, DEVICES, ENGINES, GRAPH, INT8, Devices, Engines, Int8, uses
from .output import export_lines


@app.command("export")
@uses(int8_options=INT8, graph=GRAPH, tune=AUTOTUNE, engines=ENGINES, devices=DEVICES)
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="SCNet checkpoint (.pth, .safetensors)."),
    output: Path = typer.Option(..., "--output", "-o", help="Artifact directory to write."),
    format: str = typer.Option("onnx", "--format", "-f",
                               help="onnx, openvino, tensorrt, coreml, ncnn; comma-separated for several (one "
                               "ONNX)."),
    precision: str = typer.Option("fp32", help="fp32, fp16, bf16 or int8 (per backend: see `scnet-deploy doctor`)."),
    compute: Optional[str] = typer.Option(None, help="The compute unit the engine is built for and verified on: cpu, "
                                          "or vulkan for ncnn (default: the backend's own: cpu; TensorRT: gpu)."),
    int8: bool = typer.Option(False, "--int8", help="Calibrated INT8 (same as --precision int8)."),
    scale: Optional[int] = typer.Option(None, help="Scale, only needed for one-stage shift-MLP checkpoints (2 or 3)."),
    param_key: Optional[str] = typer.Option(None, help="Which weights of a BasicSR file: params or params_ema."),
    int8_options: Int8 = None, graph=None, tune=None, engines: Engines = None, devices: Devices = None,
) -> None:
    """Export a checkpoint to verified engine artifacts (model files + manifest.json)."""
    from ..export import ExportOptions, export

    if int8 and precision not in ("fp32", "int8"):
        raise ScnetDeployError(f"--int8 and --precision {precision} contradict each other; pass one of them.")
    options = ExportOptions(output=output, format=format, precision="int8" if int8 else precision, compute=compute,
                            scale=scale,
                            param_key=param_key, calib=int8_options.calib, budget_db=int8_options.budget_db,
                            sizes=engines.sizes, onnx=graph, tune=tune, openvino=engines.openvino,
                            tensorrt=engines.tensorrt, coreml=engines.coreml)
    with progress_display(err_console, f"exporting {checkpoint}") as show:
        if devices.on:
            from ..devices.fleet import export_on

            result = export_on(checkpoint, options, devices.on, devices.remote, progress=show)
        else:
            result = export(checkpoint, options, progress=show)
    export_lines(result)


@app.command("build-engine")
def build_engine_cmd(
    artifact: Path = typer.Argument(..., help="A TensorRT artifact directory (export -f tensorrt)."),
    verification: Optional[Path] = typer.Option(None, help="Inputs and PyTorch FP32 outputs to verify the engine on "
                                                "(.npz; export --on ships one)."),
) -> None:
    """On the target device: build a TensorRT artifact's engine with this machine's TensorRT and verify it (export -f
    tensorrt --on runs this there)."""
    from scnet_deploy.exporters.registry import get_backend

    get_backend("tensorrt").require()
    from scnet_deploy.exporters.tensorrt.engine import build_here

    manifest = build_here(artifact, verification)
    v = manifest.get("verification", {})
    console.print(f"built {escape(str(artifact / manifest['tensorrt']['engine']))} with TensorRT "
                  f"{manifest['tensorrt']['version']}" + (f"; verified: {escape(v['rule'])}" if v.get("passed") else ""))
