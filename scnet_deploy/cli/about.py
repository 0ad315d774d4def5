"""``info`` (a checkpoint's architecture and cost) and ``doctor`` (what this machine can build and run)."""

from pathlib import Path

import typer

from .app import app
from ..build_options import ExportOptions
from ..info import SIZE
from ..options import parse_size, size_text
from .groups import PRINT_JSON, options_group, uses
from .output import doctor_tables, info_rows, key_value_table, print_json


# How a checkpoint is read: export's own options (--scale, --param-key), declared once, in ExportOptions
CHECKPOINT = options_group("Checkpoint", ExportOptions, make=lambda **fields: fields, only=("scale", "param_key"))


@app.command("info")
@uses(reading=CHECKPOINT, as_json=PRINT_JSON)
def info_cmd(
    checkpoint: Path = typer.Argument(..., help="SCNet checkpoint (.pth, .safetensors)."),
    size: str = typer.Option(size_text(SIZE), help="LR input size HEIGHTxWIDTH for the MAC count."),
    reading: dict = None, as_json: bool = False,
) -> None:
    """Show the architecture, parameter count and MACs of a checkpoint (detected from its weights)."""
    from ..info import info

    result = info(checkpoint, parse_size(size), **reading)  # --size: HxW, as every size
    print_json(result) if as_json else key_value_table(f"{checkpoint}", info_rows(result))


@app.command("doctor")
@uses(as_json=PRINT_JSON)
def doctor_cmd(as_json: bool = False) -> None:
    """List each backend (available or not, version, or the pip install that enables it) and the CPU/GPU features."""
    from ..doctor import doctor

    report = doctor()
    print_json(report) if as_json else doctor_tables(report)


