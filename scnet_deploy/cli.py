"""The ``scnet-deploy`` command: a thin Typer layer, one library call per verb.

User mistakes (ScnetDeployError) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
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
    format: str = typer.Option("onnx", "--format", "-f", help="Target format."),
    shift: str = typer.Option("dwconv", help="Shift form in the graph: dwconv (depthwise 3x3) or slice (pad+slice)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset, 17 or 18 (default: the exporter's, 18 for dynamo)."),
    exporter: str = typer.Option("dynamo", help="torch.onnx exporter: dynamo or torchscript."),
    simplify: bool = typer.Option(True, help="Simplify with onnxsim (onnxslim as fallback)."),
    scale: Optional[int] = typer.Option(None, help="Scale, only needed for one-stage shift-MLP checkpoints (2 or 3)."),
    param_key: Optional[str] = typer.Option(None, help="Which weights of a BasicSR file: params or params_ema."),
) -> None:
    """Export a checkpoint to a verified engine artifact (model file + manifest.json)."""
    from scnet_deploy.exporters.onnx_export import OnnxOptions

    from .export import ExportOptions, export

    options = ExportOptions(output=output, format=format, scale=scale, param_key=param_key,
                            onnx=OnnxOptions(shift=shift, opset=opset, exporter=exporter, simplify=simplify))
    with console.status(f"exporting {checkpoint} to {format} ..."):
        result = export(checkpoint, options)
    m = result.manifest
    v = m["verification"]
    console.print(f"[green]wrote[/green] {result.directory} "
                  f"({', '.join(m['files'])}, manifest.json)")
    if "onnx" in m:
        o = m["onnx"]
        console.print(f"  graph: {sum(o['nodes_before_simplify'].values())} -> {o['node_count']} nodes "
                      f"(opset {o['options']['opset']}, {o['options']['exporter']} exporter, "
                      f"simplified by {o['simplifier']})")
    console.print(f"  verified vs PyTorch FP32 in {v['runtime']}: max abs diff {v['max_abs_diff']:.2e} "
                  f"(tolerance {v['tolerance']:g}) at {len(v['cases'])} input shapes")


def main() -> None:
    try:
        app(standalone_mode=False)
    except ScnetDeployError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
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
