"""``export`` (a checkpoint to verified engine artifacts) and ``build-engine`` (TensorRT's engine, on its device)."""

from pathlib import Path
from typing import Optional

import typer

from ..errors import ScnetDeployError
from .app import app, console, err_console
from .display import progress_display
from ..build_options import CalibOptions, ExportOptions, OnnxOptions, TuneOptions
from ..gate import AccuracyGate
from ..options import SizeRange
from ..qat import QatOptions
from .groups import (AUTOTUNE, BACKEND_BUILD, DEVICES, GATE, GRAPH, INT8, SIZES, Devices, options_group, uses)
from .output import export_lines


def _export_fields(**fields) -> dict:
    return fields


EXPORT = options_group("Export", ExportOptions, make=_export_fields)


@app.command("export")
@uses(fields=EXPORT, gate=GATE, calib=INT8, onnx=GRAPH, tune=AUTOTUNE, sizes=SIZES, backends=BACKEND_BUILD,
      devices=DEVICES)
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="SCNet checkpoint (.pth, .safetensors)."),
    output: Path = typer.Option(..., "--output", "-o", help="Artifact directory to write."),
    int8: bool = typer.Option(False, "--int8", help="Calibrated INT8 (same as --precision int8)."),
    fields: dict = None, gate: AccuracyGate = None, calib: CalibOptions = None, onnx: OnnxOptions = None,
    tune: TuneOptions = None, sizes: SizeRange = None, backends: dict = None, devices: Devices = None,
) -> None:
    """Export a checkpoint to verified engine artifacts (model files + manifest.json)."""
    from ..export import export

    if int8 and fields["precision"] not in ("fp32", "int8"):
        raise ScnetDeployError(f"--int8 and --precision {fields['precision']} contradict each other; pass one of "
                               "them.")
    options = ExportOptions(output=output, **{**fields, "precision": "int8" if int8 else fields["precision"]},
                            calib=calib, budget_db=gate.drift_db, max_visible=gate.max_visible,
                            visible_levels=gate.visible_levels, sizes=sizes, onnx=onnx, tune=tune, backends=backends)
    with progress_display(err_console, f"exporting {checkpoint}") as show:
        if devices.on:
            from ..devices.fleet import export_on

            result = export_on(checkpoint, options, devices.on, devices.remote, progress=show)
        else:
            result = export(checkpoint, options, progress=show)
    export_lines(result)


QAT = options_group("Fine-tuning", QatOptions, make=lambda **fields: fields)


@app.command("qat")
@uses(fields=QAT)
def qat_cmd(
    checkpoint: Path = typer.Argument(..., help="The FP32 SCNet checkpoint to fine-tune (.pth, .safetensors)."),
    data: list[Path] = typer.Option(..., "--data", help="Image folders (HR) to cut LR patches from; repeat the flag "
                                    "for several."),
    output: Path = typer.Option(..., "--output", "-o", help="The quantization-aware checkpoint to write "
                                "(.safetensors)."),
    fields: dict = None,
) -> None:
    """Fine-tune a checkpoint with fake INT8 quantization, distilled from its FP32 self: export --int8 from the result
    uses its ranges (rerun the same command to resume)."""
    from ..door import shown
    from ..qat import qat

    with progress_display(err_console, f"qat {checkpoint}") as show:
        result = qat(checkpoint, QatOptions(output=output, data=tuple(data), **fields), progress=show)
    console.print(f"wrote {shown(result['checkpoint'])}: {shown(result['summary'])}; "
                  f"{result['quantization_aware']['seconds']:.0f} s of training")


@app.command("build-engine")
def build_engine_cmd(
    artifact: Path = typer.Argument(..., help="An artifact of a backend whose engine is built on the device that "
                                    "runs it (doctor lists them)."),
    verification: Optional[Path] = typer.Option(None, help="Inputs and PyTorch FP32 outputs to verify the engine on "
                                                "(.npz; export --on ships one)."),
) -> None:
    """On the target device: build an artifact's engine with this machine's runtime and verify it (export --on runs
    this there)."""
    from ..door import read_manifest, shown
    from scnet_deploy.exporters.registry import backends, get_backend

    backend = get_backend(read_manifest(artifact).get("backend"))
    if not backend.built_on_device:
        raise ScnetDeployError(f"'{artifact}' is a {backend.format} artifact, whose engine is built at export; "
                               "build-engine builds those of "
                               f"{', '.join(b.format for b in backends() if b.built_on_device)}.")
    manifest = backend.build_on_device(artifact, verification)
    v, section = manifest.get("verification", {}), manifest[backend.name]
    console.print(f"built {shown(str(artifact / section['engine']))} with {backend.distribution} "
                  f"{shown(str(section['version']))}" + (f"; verified: {shown(v['rule'])}" if v.get("passed") else ""))
