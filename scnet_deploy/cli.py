"""The ``scnet-deploy`` command: a thin Typer layer, one library call per verb.

User mistakes (ScnetDeployError) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ScnetDeployError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Export, profile and validate SCNet super-resolution models.")
console = Console()
err_console = Console(stderr=True)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise ScnetDeployError(f"--size {text!r} is not HEIGHTxWIDTH with positive integers; write e.g. 180x320.")


@app.command("info")
def info_cmd(
    checkpoint: Path = typer.Argument(..., help="SCNet checkpoint (.pth, .safetensors)."),
    size: str = typer.Option("180x320", help="LR input size HEIGHTxWIDTH for the MAC count."),
    scale: Optional[int] = typer.Option(None, help="Scale, only needed for one-stage shift-MLP checkpoints (2 or 3)."),
    param_key: Optional[str] = typer.Option(None, help="Which weights of a BasicSR file: params or params_ema."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the architecture, parameter count and MACs of a checkpoint (detected from its weights)."""
    from .info import info

    result = info(checkpoint, _parse_size(size), scale=scale, param_key=param_key)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"{checkpoint}", show_header=False)
    s = result["size"]
    rows = [("architecture", f"SCNet num_feat={result['num_feat']} num_block={result['num_block']} "
                             f"x{result['scale']} ({result['upsampler']} upsampler)"),
            ("scale told by", result["scale_source"]),
            ("weights", str(result["param_key"] or "raw state dict")),
            ("parameters", f"{result['params']:,}"),
            ("MACs per LR pixel", f"{result['macs_per_lr_pixel']:,.0f}"),
            (f"MACs at {s['lr'][0]}x{s['lr'][1]} -> {s['sr'][0]}x{s['sr'][1]}", f"{s['macs'] / 1e9:,.2f} G"),
            ("receptive radius (LR px)", str(result["receptive_radius"])),
            ("sha256", result["sha256"][:16] + "...")]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


@app.command("export")
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="SCNet checkpoint (.pth, .safetensors)."),
    output: Path = typer.Option(..., "--output", "-o", help="Artifact directory to write."),
    format: str = typer.Option("onnx", "--format", "-f",
                               help="onnx, openvino, tensorrt, coreml; comma-separated for several (one ONNX)."),
    precision: str = typer.Option("fp32", help="fp32, fp16 or bf16 (per backend: see `scnet-deploy doctor`)."),
    shift: str = typer.Option("dwconv", help="Shift form in the graph: dwconv (depthwise 3x3) or slice (pad+slice)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset, 17 or 18 (default: the exporter's, 18 for dynamo)."),
    exporter: str = typer.Option("dynamo", help="torch.onnx exporter: dynamo or torchscript."),
    simplify: bool = typer.Option(True, help="Simplify with onnxsim (onnxslim as fallback)."),
    min_size: str = typer.Option("16x16", help="Smallest LR input HxW (TensorRT profile, Core ML range)."),
    opt_size: str = typer.Option("180x320", help="LR input HxW to optimize for (TensorRT, Core ML)."),
    max_size: str = typer.Option("1080x1920", help="Largest LR input HxW (TensorRT profile, Core ML range)."),
    ov_hint: Optional[str] = typer.Option(None, help="OpenVINO inference precision f32|bf16|f16 (default: from "
                                          "--precision)."),
    ov_performance: str = typer.Option("latency", help="OpenVINO performance hint: latency or throughput."),
    workspace: int = typer.Option(1024, help="TensorRT workspace limit, MiB."),
    timing_cache: Optional[Path] = typer.Option(None, help="TensorRT timing cache file to reuse and update."),
    max_batch: int = typer.Option(1, help="TensorRT profile's largest batch."),
    coreml_shapes: str = typer.Option("range", help="Core ML flexible shapes: range or enumerated."),
    coreml_sizes: str = typer.Option("180x320,360x640,540x960", help="Core ML enumerated LR sizes."),
    coreml_target: str = typer.Option("iOS17", help="Core ML minimum deployment target."),
    scale: Optional[int] = typer.Option(None, help="Scale, only needed for one-stage shift-MLP checkpoints (2 or 3)."),
    param_key: Optional[str] = typer.Option(None, help="Which weights of a BasicSR file: params or params_ema."),
) -> None:
    """Export a checkpoint to verified engine artifacts (model files + manifest.json)."""
    from scnet_deploy.exporters.onnx_export import OnnxOptions

    from .export import ExportOptions, export
    from .options import CoreMLOptions, OpenVINOOptions, SizeOptions, TensorRTOptions

    options = ExportOptions(
        output=output, format=format, precision=precision, scale=scale, param_key=param_key,
        sizes=SizeOptions(_parse_size(min_size), _parse_size(opt_size), _parse_size(max_size)),
        onnx=OnnxOptions(shift=shift, opset=opset, exporter=exporter, simplify=simplify),
        openvino=OpenVINOOptions(inference_precision=ov_hint, performance=ov_performance),
        tensorrt=TensorRTOptions(workspace_mb=workspace, timing_cache=timing_cache, max_batch=max_batch),
        coreml=CoreMLOptions(shapes=coreml_shapes, enumerated=tuple(_parse_size(s) for s in coreml_sizes.split(",")),
                             deployment_target=coreml_target))
    with console.status(f"exporting {checkpoint} ...") as status:
        result = export(checkpoint, options, progress=lambda msg: status.update(msg))
    for fmt, m in result.manifests.items():
        console.print(f"[green]wrote[/green] {result.artifacts[fmt]} ({', '.join(m['files'])}, manifest.json)")
        if "onnx" in m:
            o = m["onnx"]
            console.print(f"  graph: {sum(o['nodes_before_simplify'].values())} -> {o['node_count']} nodes "
                          f"(opset {o['options']['opset']}, {o['options']['exporter']} exporter, "
                          f"simplified by {o['simplifier']})")
        v = m["verification"]
        if v.get("skipped"):
            console.print(f"  not run here: {v['skipped']}")
        else:
            console.print(f"  verified vs PyTorch FP32 in {v['runtime']}: max abs diff {v['max_abs_diff']:.2e}"
                          + (f", PSNR vs FP32 {v['min_psnr_vs_fp32_db']:.1f} dB" if 'min_psnr_vs_fp32_db' in v else "")
                          + f" at {len(v['cases'])} input shapes")


@app.command("doctor")
def doctor_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List each backend (available or not, version, or the pip install that enables it) and the CPU/GPU features."""
    from .doctor import doctor

    report = doctor()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title="backends")
    for col in ("backend", "format", "status", "precisions"):
        table.add_column(col)
    for b in report["backends"]:
        status = (f"[green]available[/green] {b['version']}" if b["available"]
                  else f"[red]missing[/red]: {escape(b['install'])}")
        table.add_row(b["backend"], b["format"], status, ", ".join(b["precisions"]))
    console.print(table)
    cpu = report["cpu"]
    features = " ".join(f"{k}" for k, v in cpu["features"].items() if v) or "none of interest"
    console.print(f"CPU: {cpu['model']}, {cpu['cores']} cores, {cpu['arch']}; features: {features}")
    console.print(f"GPUs: {', '.join(report['gpus']) or 'none visible'}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except ScnetDeployError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.Abort):
            err_console.print("aborted")
            sys.exit(130)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
