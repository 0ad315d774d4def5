"""``info`` (a checkpoint's architecture and cost) and ``doctor`` (what this machine can build and run)."""

from pathlib import Path
from typing import Optional

import typer

from .app import app
from ..options import parse_size
from .groups import PRINT_JSON, uses
from .output import doctor_tables, info_rows, key_value_table, print_json


@app.command("info")
@uses(as_json=PRINT_JSON)
def info_cmd(
    checkpoint: Path = typer.Argument(..., help="SCNet checkpoint (.pth, .safetensors)."),
    size: str = typer.Option("180x320", help="LR input size HEIGHTxWIDTH for the MAC count."),
    scale: Optional[int] = typer.Option(None, help="Scale, only needed for one-stage shift-MLP checkpoints (2 or 3)."),
    param_key: Optional[str] = typer.Option(None, help="Which weights of a BasicSR file: params or params_ema."),
    as_json: bool = False,
) -> None:
    """Show the architecture, parameter count and MACs of a checkpoint (detected from its weights)."""
    from ..info import info

    result = info(checkpoint, parse_size(size), scale=scale, param_key=param_key)  # --size: HxW, as every size
    print_json(result) if as_json else key_value_table(f"{checkpoint}", info_rows(result))


@app.command("doctor")
@uses(as_json=PRINT_JSON)
def doctor_cmd(as_json: bool = False) -> None:
    """List each backend (available or not, version, or the pip install that enables it) and the CPU/GPU features."""
    from ..doctor import doctor

    report = doctor()
    print_json(report) if as_json else doctor_tables(report)


