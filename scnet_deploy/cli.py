"""The ``scnet-deploy`` command: a thin Typer layer, one library call per verb.

User mistakes (ScnetDeployError) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

import contextlib
import errno
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import interrupts
from .door import clean_text
from .gate import DEFAULT_DRIFT_DB
from .errors import EXPORT_STACK, ScnetDeployError, needs_export_stack
from .options import CANDIDATE_FORMS

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


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _parse_int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ScnetDeployError(f"{flag}: {text!r} is not an integer; write e.g. 128,256.")


# --on and how the device is reached: the same options for every verb that runs on a device (remote.py)
RUN_ON = typer.Option([], "--on", help="Run on this device instead: ssh://user@host[:port] (your ssh config, keys and "
                      "agent apply), or local; repeat for a column per device.")
REMOTE_PYTHON = typer.Option(None, "--remote-python", help="--on: the device's Python with scnet-deploy (default: "
                             "scnet-deploy on its PATH).")
PROVISION = typer.Option(False, "--provision", help="--on: install this scnet-deploy version on the device from a "
                         "wheel built here when its version differs.")
SSH_CONFIG = typer.Option(None, "--ssh-config", help="--on: ssh config file (ssh -F).")
REMOTE_DIR = typer.Option(None, "--remote-dir", help="--on: where run directories are made on the device (default: "
                          "its $TMPDIR or /tmp); removed after each run.")
JOBS = typer.Option(4, "--jobs", help="--on: devices reached at the same time; a device that fails is reported and "
                    "the others go on (exit 1; 2 when every device failed).")


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
    precision: str = typer.Option("fp32", help="fp32, fp16, bf16 or int8 (per backend: see `scnet-deploy doctor`)."),
    int8: bool = typer.Option(False, "--int8", help="Calibrated INT8 (same as --precision int8)."),
    calib_data: Optional[Path] = typer.Option(None, help="INT8 calibration images (HR; default: scikit-image's "
                                              "sample photographs). A quarter is held out, with generated line art, text, flat colours "
                                              "and textures, to measure drift."),
    calib_count: int = typer.Option(32, help="INT8: number of LR calibration crops."),
    calib_crop: int = typer.Option(48, help="INT8: LR calibration crop side."),
    calib_method: str = typer.Option("minmax", help="INT8 (ONNX Runtime/TensorRT): minmax, entropy or percentile."),
    calib_lr: bool = typer.Option(False, help="INT8: --calib-data holds LR images; crop them as they are."),
    budget: float = typer.Option(DEFAULT_DRIFT_DB, help="INT8: max mean PSNR-Y drift on the hold-out, dB; the most "
                                 "sensitive layers fall back to float until it holds, else the export fails."),
    no_budget: bool = typer.Option(False, "--no-budget", help="INT8 without a drift gate (the drift is still "
                                   "measured and recorded; the manifest says the gate was off)."),
    holdout: Optional[Path] = typer.Option(None, help="INT8: your own hold-out images for the budget (sub-folders "
                                           "name content types); default: held-out photos + generated line art, "
                                           "text, flat colours, textures."),
    content_mix: bool = typer.Option(False, help="INT8: also calibrate on generated line art, text, flat colours "
                                     "and textures (a quarter of the crops; widens ranges, costs photos)."),
    shift: str = typer.Option("dwconv", help="Shift form in the graph: dwconv (depthwise 3x3), slice (pad+slice) or "
                              "fold (into the next 1x1 conv: a sparse 3x3 conv)."),
    conv_before_upsample: bool = typer.Option(False, help="Run each bilinear stage's 1x1 conv before the upsample "
                                              "(exact, fewer MACs)."),
    upsample_as_deconv: bool = typer.Option(False, help="Run each even bilinear upsample as edge pad + depthwise "
                                            "transposed conv (exact)."),
    skip_as_conv: bool = typer.Option(False, help="Run the image skip's bilinear upsample as edge pad + a 3x3 conv "
                                      "to the output phases + depth-to-space (exact)."),
    optimize: str = typer.Option("none", help="latency: build every --candidates form, verify and time each at "
                                 "--opt-size here, keep the fastest (and exact tiling where faster); none: --shift."),
    candidates: Optional[str] = typer.Option(None, help="--optimize latency: forms to try, "
                                             "shift[+conv_before_upsample][+upsample_as_deconv][+skip_as_conv], "
                                             "comma-separated; "
                                             "default: the backend's (on a CPU the forms ever measured fastest "
                                             "there, elsewhere " + ",".join(CANDIDATE_FORMS) + ")."),
    tune_runs: int = typer.Option(5, help="--optimize latency: timed runs per candidate."),
    tune_tiles: str = typer.Option("256", help="--optimize latency: LR tile sides to try, comma-separated ('' for "
                                   "none)."),
    tune_split_tiles: str = typer.Option("64", help="--optimize latency: LR tile sides of split execution's tail to "
                                         "try (the body whole, the upsampling tail on tiles), comma-separated "
                                         "('' for none)."),
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
    on: list[str] = typer.Option([], "--on", help="-f tensorrt: build and verify the engine on this device "
                                 "(ssh://user@host[:port]) with its TensorRT, and bring the artifact back."),
    remote_python: Optional[str] = REMOTE_PYTHON,
    provision: bool = PROVISION,
    ssh_config: Optional[Path] = SSH_CONFIG,
    remote_dir: Optional[str] = REMOTE_DIR,
) -> None:
    """Export a checkpoint to verified engine artifacts (model files + manifest.json)."""
    from scnet_deploy.exporters.onnx_graph import OnnxOptions

    from .autotune import TuneOptions
    from .export import ExportOptions, export
    from .options import CoreMLOptions, OpenVINOOptions, SizeRange, TensorRTOptions
    from scnet_deploy.calibration.data import CalibOptions

    if int8 and precision not in ("fp32", "int8"):
        raise ScnetDeployError(f"--int8 and --precision {precision} contradict each other; pass one of them.")
    options = ExportOptions(
        output=output, format=format, precision="int8" if int8 else precision, scale=scale, param_key=param_key,
        calib=CalibOptions(calib_data, calib_count, calib_crop, lr_input=calib_lr, method=calib_method,
                           holdout=holdout, content_mix=content_mix),
        budget_db=None if no_budget else budget,
        sizes=SizeRange(_parse_size(min_size), _parse_size(opt_size), _parse_size(max_size)),
        onnx=OnnxOptions(shift=shift, conv_before_upsample=conv_before_upsample,
                         upsample_as_deconv=upsample_as_deconv, skip_as_conv=skip_as_conv, opset=opset,
                         exporter=exporter, simplify=simplify),
        tune=TuneOptions(optimize, None if candidates is None else _parse_list(candidates), runs=tune_runs,
                         tiles=tuple(_parse_int(t, "--tune-tiles") for t in _parse_list(tune_tiles)),
                         split_tiles=tuple(_parse_int(t, "--tune-split-tiles")
                                           for t in _parse_list(tune_split_tiles))),
        openvino=OpenVINOOptions(inference_precision=ov_hint, performance=ov_performance),
        tensorrt=TensorRTOptions(workspace_mb=workspace, timing_cache=timing_cache, max_batch=max_batch),
        coreml=CoreMLOptions(shapes=coreml_shapes, enumerated=tuple(_parse_size(s) for s in coreml_sizes.split(",")),
                             deployment_target=coreml_target),
        on=tuple(on), remote=_remote_options(remote_python, provision, ssh_config, remote_dir))
    with _progress_display(err_console, f"exporting {checkpoint}") as show:
        result = export(checkpoint, options, progress=show)
    for fmt, m in result.manifests.items():
        console.print(f"[green]wrote[/green] {result.artifacts[fmt]} ({', '.join(m['files'])}, manifest.json)")
        if "onnx" in m:
            o = m["onnx"]
            console.print(f"  graph: {sum(o['nodes_before_simplify'].values())} -> {o['node_count']} nodes "
                          f"(opset {o['options']['opset']}, {o['options']['exporter']} exporter, "
                          f"simplified by {o['simplifier']})")
        if "int8" in m and "drift_db" in m["int8"]:
            i = m["int8"]
            w = i["worst_image"]
            console.print(f"  INT8: mean drift {i['drift_db']:+.3f} dB on {len(i['holdout']['sources'])} held-out "
                          f"images (budget: {i['budget']}), worst {w['drift_db']:+.3f} dB on {escape(w['name'])} "
                          f"({w['content']}); {len(i['float_layers'])} layer(s) kept in float")
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


def _write_outputs(result: dict, json_file: Optional[Path], csv_file: Optional[Path], rows, report_dir):
    if json_file:
        from .manifest import write_json_atomic

        write_json_atomic(result, json_file)
    if csv_file:
        import csv

        with open(csv_file, "w", newline="") as f:
            writer = csv.writer(f)
            for row in rows:
                writer.writerow(row)
    if report_dir:
        from .report import report

        console.print(f"report: {report([result], report_dir)}")


@app.command("validate")
def validate_cmd(
    models: list[Path] = typer.Argument(None, help="Checkpoints and/or artifact directories."),
    dataset: list[Path] = typer.Option(..., help="Folder: DIR/HR (+ DIR/LR_bicubic/X{s}) or a plain folder of "
                                       "images; repeat for several (a table each, the worst named)."),
    scale: int = typer.Option(..., help="Upscaling factor of the models."),
    method: Optional[str] = typer.Option(None, help="Add a classical baseline row: bicubic."),
    budget: Optional[float] = typer.Option(None, help="Fail (exit 1) if any model's PSNR drift exceeds this, dB."),
    reference: Optional[Path] = typer.Option(None, help="FP32 reference checkpoint (default: first checkpoint "
                                             "among MODELS, else the artifacts' own)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N images."),
    threads: Optional[int] = typer.Option(None, help="Threads for the runtimes."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: images whose run would not fit are run "
                                             "in exact tiles (default: 70% of what this process may use)."),
    on: list[str] = RUN_ON,
    remote_python: Optional[str] = REMOTE_PYTHON,
    provision: bool = PROVISION,
    ssh_config: Optional[Path] = SSH_CONFIG,
    remote_dir: Optional[str] = REMOTE_DIR,
    jobs: int = JOBS,
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write per-image results as CSV."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write a Markdown + PNG report here."),
) -> None:
    """PSNR/SSIM-Y vs ground truth and drift vs the FP32 reference, for every model, side by side. Unreadable
    images are named and left out of the means."""
    from .options import RuntimeOptions
    from .validate import ValidateOptions, validate

    if method not in (None, "bicubic"):
        raise ScnetDeployError(f"--method {method!r} is unknown; the available baseline is bicubic.")
    options = ValidateOptions(tuple(dataset), scale, method == "bicubic", budget, reference, limit,
                              RuntimeOptions(threads=threads), visuals=report_dir, max_memory_mb=max_memory,
                              on=tuple(on),
                              remote=_remote_options(remote_python, provision, ssh_config, remote_dir, jobs))
    with _progress_display(err_console, "validating") as show:
        result = validate(models or [], options, progress=show)
    for d in result["datasets"]:
        table = Table(title=f"{d['name']} x{scale}: {d['images']} images")
        for col in ("model", "precision", "PSNR-Y", "SSIM-Y", "drift dB", "max abs diff", "worst image"):
            table.add_column(col)
        for m in d["models"]:
            drift = m.get("drift_db")
            table.add_row(escape(m["name"]) + (" (ref)" if m.get("reference") else ""), m["precision"],
                          f"{m['psnr_y']:.2f}", f"{m['ssim_y']:.4f}", "-" if drift is None else f"{drift:+.3f}",
                          f"{m['max_abs_diff']:.2e}" if "max_abs_diff" in m else "-", escape(m["worst_image"]["name"]))
        console.print(table)
    if len(result["datasets"]) > 1:
        for m in result["models"]:
            if m.get("drift_db") is not None and not m.get("reference"):
                w = m["worst_image"]
                console.print(f"{escape(m['name'])}: worst content {escape(m['worst_dataset'])} "
                              f"({m['drift_db']:+.3f} dB), worst image {escape(w['dataset'])}/{escape(w['name'])} "
                              f"({w['drift_db']:+.3f} dB)")
    if result.get("reference_skipped"):
        console.print(f"no drift (the FP32 PyTorch reference cannot run): {escape(result['reference_skipped'])}")
    if result.get("devices"):
        _device_drift_table(result)
    rows = [("model", "image", "psnr_y", "ssim_y", "drift_db", "max_abs_diff", "dataset")]
    rows += [(m["name"], r["name"], f"{r['psnr_y']:.4f}", f"{r['ssim_y']:.6f}",
              "" if r.get("drift_db") is None else f"{r['drift_db']:.4f}",
              "" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.6g}", r["dataset"])
             for m in result["models"] for r in m["per_image"]]
    _write_outputs(result, json_file, csv_file, rows, report_dir)
    for u in result["unreadable_images"]:
        err_console.print(f"[yellow]skipped unreadable image[/yellow] {escape(u['path'])}: {escape(u['error'])}",
                          soft_wrap=True)
    for m in result["models"]:
        if m["nonfinite_images"] or m["collapsed_images"]:
            err_console.print(f"[yellow]warning:[/yellow] {escape(m['name'])}: non-finite output on "
                              f"{m['nonfinite_images']}, collapsed (constant) output on {m['collapsed_images']}")
    if not result["passed"]:
        err_console.print(f"[red]over budget ({budget} dB):[/red] {escape(', '.join(result['over_budget']))}")
        raise typer.Exit(1)
    _failed_devices(result.get("failed_devices"))


def _remote_options(remote_python, provision, ssh_config, remote_dir, jobs=4):
    from .options import RemoteOptions

    return RemoteOptions(remote_python, provision, ssh_config, remote_dir, jobs=jobs)


def _failed_devices(failed: dict) -> None:
    """Each device that failed, with why, after the table of the others; exit 1."""
    for label, why in (failed or {}).items():
        err_console.print(f"[red]device failed[/red] {escape(clean_text(label))}: {escape(clean_text(why))}",
                          highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _device_bench_table(result: dict, json_file: Optional[Path], csv_file: Optional[Path]) -> None:
    """bench --on: median ms per model and shape, a column per device, then each device's description."""
    labels = list(result["devices"])
    table = Table(title="median ms per device")
    for col in ("model", "precision", "LR", *labels):
        table.add_column(col)
    rows = [("model", "precision", "lr_h", "lr_w", "device", "median_ms")]
    for r in result["table"]:
        table.add_row(escape(r["model"]), r["precision"], f"{r['shape'][0]}x{r['shape'][1]}",
                      *(f"{r['median_ms'][d]:.1f}" if d in r["median_ms"] else "-" for d in labels))
        rows += [(r["model"], r["precision"], *r["shape"], d, f"{ms:.3f}") for d, ms in r["median_ms"].items()]
    console.print(table)
    from .doctor import machine_line

    for label, bench_result in result["devices"].items():
        console.print(f"{escape(label)}: {escape(machine_line(bench_result['machine']))}", soft_wrap=True)
    _write_outputs(result, json_file, csv_file, rows, None)


def _device_drift_table(result: dict) -> None:
    """validate --on: each artifact's drift (worst content) on each device, a column per device."""
    labels = list(result["devices"])
    drift: dict = {}
    for m in result["models"]:
        if m.get("reference") or m.get("kind") == "method":
            continue
        drift.setdefault(Path(m["artifact"]).name, {})[m.get("device") or "local"] = m.get("drift_db")
    table = Table(title="drift dB vs the FP32 reference here, per device")
    for col in ("artifact", *labels):
        table.add_column(col)
    for name, by_device in drift.items():
        table.add_row(escape(name), *("-" if by_device.get(d) is None else f"{by_device[d]:+.3f}" for d in labels))
    console.print(table)


def _parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(_parse_size(s) for s in text.split(",") if s.strip())


@app.command("bench")
def bench_cmd(
    models: list[Path] = typer.Argument(..., help="Checkpoints and/or artifact directories."),
    shape: str = typer.Option("180x320", help="LR shapes HxW, comma-separated."),
    runs: int = typer.Option(10, help="Timed runs per model and shape."),
    seconds: Optional[float] = typer.Option(None, help="Time each model and shape for this long instead of --runs."),
    warmup: int = typer.Option(2, help="Untimed runs after the first inference."),
    batch: int = typer.Option(1, help="Batch size."),
    threads: Optional[int] = typer.Option(None, help="Threads for the runtimes."),
    baselines: bool = typer.Option(True, help="Also time PyTorch official-form eager and deploy form."),
    mode: str = typer.Option("latency", help="latency, or throughput: also images/s with several requests in "
                             "flight."),
    inflight: Optional[int] = typer.Option(None, help="Throughput mode: requests in flight (default: the engine's "
                                           "optimal number; 1 where it has none)."),
    ov_performance: str = typer.Option("latency", help="OpenVINO performance hint of the latency runs: latency or "
                                       "throughput (throughput mode's in-flight runs always use throughput)."),
    ov_streams: Optional[int] = typer.Option(None, help="OpenVINO streams."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: a shape whose run would not fit is "
                                             "refused before anything runs (default: 70% of what this process may "
                                             "use)."),
    on: list[str] = RUN_ON,
    remote_python: Optional[str] = REMOTE_PYTHON,
    provision: bool = PROVISION,
    ssh_config: Optional[Path] = SSH_CONFIG,
    remote_dir: Optional[str] = REMOTE_DIR,
    jobs: int = JOBS,
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write results as CSV."),
    report_dir: Optional[Path] = typer.Option(None, "--report", help="Write a Markdown + PNG report here."),
) -> None:
    """Latency and throughput of each model at each shape, with PyTorch baselines from the same run; with --on, on
    each device (one table, a column per device)."""
    from .bench import BenchOptions, bench
    from .options import OpenVINOOptions, RuntimeOptions

    runtime = RuntimeOptions(threads=threads, openvino=OpenVINOOptions(performance=ov_performance, streams=ov_streams))
    options = BenchOptions(_parse_shapes(shape), None if seconds else runs, seconds, warmup, batch, baselines,
                           runtime=runtime, max_memory_mb=max_memory, mode=mode, inflight=inflight, on=tuple(on),
                           remote=_remote_options(remote_python, provision, ssh_config, remote_dir, jobs))
    with _progress_display(err_console, "benchmarking") as show:
        result = bench(models, options, progress=show)
    if on:
        _device_bench_table(result, json_file, csv_file)
        _failed_devices(result.get("failed"))
        return

    table = Table(title="latency")
    for col in ("model", "precision", "LR", "first ms", "median ms", "p90 ms", "p99 ms", "img/s", "MP/s", "vs eager"):
        table.add_column(col)
    rows = [("model", "precision", "lr_h", "lr_w", "batch", "first_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms",
             "min_ms", "max_ms", "images_per_s", "megapixels_per_s", "speedup_vs_official_eager")]
    for m in result["models"]:
        for s in m["shapes"]:
            ratio = s["speedup_vs_official_eager"]
            table.add_row(escape(m["name"]), m["precision"], f"{s['shape'][0]}x{s['shape'][1]}",
                          f"{s['first_inference_ms']:.0f}", f"{s['median_ms']:.1f}", f"{s['p90_ms']:.1f}",
                          f"{s['p99_ms']:.1f}", f"{s['images_per_s']:.2f}", f"{s['megapixels_per_s']:.1f}",
                          f"{ratio:.1f}x" if ratio else "-")
            rows.append((m["name"], m["precision"], *s["shape"], s["batch"], *(f"{s[k]:.3f}" for k in (
                "first_inference_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "images_per_s",
                "megapixels_per_s")), "" if ratio is None else f"{ratio:.3f}"))
    console.print(table)
    if result.get("baselines_skipped"):
        console.print(f"no PyTorch baselines: {escape(result['baselines_skipped'])}")
    if mode == "throughput":
        table = Table(title="throughput (requests in flight)")
        for col in ("model", "precision", "LR", "in flight", "img/s", "MP/s", "vs latency run"):
            table.add_column(col)
        for m in result["models"]:
            for s in m["shapes"]:
                if "throughput" not in s:
                    continue
                t = s["throughput"]
                table.add_row(escape(m["name"]), m["precision"], f"{s['shape'][0]}x{s['shape'][1]}",
                              str(t["inflight"]), f"{t['images_per_s']:.2f}", f"{t['megapixels_per_s']:.1f}",
                              f"{t['vs_latency']:.2f}x")
        console.print(table)
    _write_outputs(result, json_file, csv_file, rows, report_dir)


@app.command("report")
def report_cmd(
    results: list[Path] = typer.Argument(..., help="JSON files written by bench/validate --json."),
    output: Path = typer.Option(..., "--output", "-o", help="Report directory."),
) -> None:
    """Markdown tables and PNG plots (latency vs resolution, drift, latency vs drift) from saved results."""
    from .report import load_results, report

    console.print(f"wrote {report(load_results(results), output)}")


@app.command("upscale")
def upscale_cmd(
    model: Path = typer.Argument(..., help="Checkpoint or artifact directory."),
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder, or a file (.png/.jpg/.webp) for one "
                                "input."),
    tile: Optional[int] = typer.Option(None, help="Tile size in LR pixels (default: from --max-memory)."),
    overlap: Optional[int] = typer.Option(None, help="Tile halo in LR pixels (default and minimum: the receptive "
                                          "radius, so tiles are exact)."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB; sets the tile size (default: 70% of what "
                                             "this process may use: free memory, cgroup and address-space limits)."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Resume a batch: keep outputs that exist, "
                                       "when complete: a readable image of the expected size)."),
    inflight: Optional[int] = typer.Option(None, help="Images in flight for a folder (default: the engine's optimal "
                                           "number in its throughput mode; 1: one image at a time)."),
    threads: Optional[int] = typer.Option(None, help="Threads for the runtime."),
) -> None:
    """Upscale images with a checkpoint or any engine, tiled exactly; keeps grey, alpha and 16-bit. A file that
    cannot be read or written is reported and skipped; exit code 1 when any failed."""
    from .options import RuntimeOptions
    from .upscale import DONE, FAILED_STATUS, UpscaleOptions, upscale

    options = UpscaleOptions(output, tile=tile, overlap=overlap, max_memory_mb=max_memory,
                             runtime=RuntimeOptions(threads=threads), skip_existing=skip_existing, inflight=inflight)
    with _progress_display(err_console, "upscaling") as show:
        results = upscale(model, inputs, options, progress=show)
    for r in results:
        if r["status"] != DONE:
            continue
        flags = [f for f in ("nonfinite", "collapsed") if r[f]]
        note = f" [yellow]warning: {' and '.join(flags)} output[/yellow]" if flags else ""
        console.print(f"{escape(r['input'])} -> {escape(r['output'])} ({r['tiles']} tile(s), {r['bits']}-bit, "
                      f"{r['channels']} ch){note}", soft_wrap=True)
    failed = [r for r in results if r["status"] == FAILED_STATUS]
    ignored = [r for r in results if r["status"] == "skipped" and r["output"] is None]  # not images
    counts = {status: sum(r["status"] == status for r in results) for status in (DONE, FAILED_STATUS, "skipped")}
    console.print(f"{counts[DONE]} upscaled, {counts[FAILED_STATUS]} failed, {counts['skipped'] - len(ignored)} "
                  f"skipped (output exists) of {len(results) - len(ignored)}"
                  + (f"; {len(ignored)} other file(s) skipped" if ignored else ""))
    for r in ignored:
        console.print(f"[yellow]skipped[/yellow] {escape(clean_text(r['input']))}: {r['reason']}", soft_wrap=True)
    for r in failed:
        console.print(f"[red]failed[/red] {escape(r['input'])}: {escape(r['error'])}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command("infer")
def infer_cmd(
    model: Path = typer.Argument(..., help="Artifact directory (or checkpoint, where PyTorch is installed)."),
    inputs: Path = typer.Argument(..., help=".npz of float32 CHW LR arrays in [0, 1]."),
    output: Path = typer.Option(..., "--output", "-o", help=".npz to write the outputs to (same keys)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Write what ran (engine, tiles, seconds) as JSON."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: larger images run in exact tiles."),
    threads: Optional[int] = typer.Option(None, help="Threads for the runtime."),
) -> None:
    """Run a model on arrays (.npz in, .npz out): what validate --on runs on a device."""
    from .infer import InferOptions, infer
    from .options import RuntimeOptions

    with _progress_display(err_console, "inferring") as show:
        result = infer(model, inputs, InferOptions(output, RuntimeOptions(threads=threads), max_memory), progress=show)
    _write_outputs(result, json_file, None, [], None)
    console.print(f"{len(result['runs'])} array(s) through {escape(result['name'])} -> {escape(str(output))}")


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


@app.command("pipeline")
def pipeline_cmd(
    checkpoint: Optional[Path] = typer.Argument(None, help="Checkpoint (default: the shipped reference SCNet-T x4)."),
    output: Path = typer.Option(Path("scnet-deploy-out"), "--output", "-o", help="Output directory."),
    dataset: Optional[list[Path]] = typer.Option(None, help="Validation images, repeat for several content types "
                                                 "(default: photos, line art, text, flat colours, textures)."),
    calib_data: Optional[Path] = typer.Option(None, help="INT8 calibration images (default: scikit-image photos)."),
    calib_count: int = typer.Option(16, help="INT8 calibration crops."),
    budget: float = typer.Option(DEFAULT_DRIFT_DB, help="Drift budget, dB: INT8 fallback and the recommendation."),
    shape: str = typer.Option("90x160,180x320", help="LR sizes to benchmark."),
    runs: int = typer.Option(5, help="Timed runs per engine and size."),
    formats: str = typer.Option("onnx,openvino,coreml,tensorrt", help="Formats to consider."),
    optimize: str = typer.Option("latency", help="latency: each engine in its fastest measured form (see export "
                                 "--optimize); none: the default form."),
    max_memory: Optional[int] = typer.Option(None, help="Memory limit, MB: validation runs larger images in exact "
                                             "tiles (default: 70% of what this process may use)."),
    on: list[str] = typer.Option([], "--on", help="Also bench every runnable engine on this device "
                                 "(ssh://user@host[:port]); repeat for several: rows in the report."),
    remote_python: Optional[str] = REMOTE_PYTHON,
    provision: bool = PROVISION,
    ssh_config: Optional[Path] = SSH_CONFIG,
    remote_dir: Optional[str] = REMOTE_DIR,
    jobs: int = JOBS,
) -> None:
    """The main job: export to every engine this machine can build, validate, benchmark, report, recommend."""
    from .pipeline import PipelineOptions, pipeline

    options = PipelineOptions(output, tuple(dataset) if dataset else None, calib_data, calib_count, budget,
                              _parse_shapes(shape), runs, _parse_list(formats), optimize, max_memory, on=tuple(on),
                              remote=_remote_options(remote_python, provision, ssh_config, remote_dir, jobs))
    with _progress_display(console, "starting", transient=False) as show:
        summary = pipeline(checkpoint, options, progress=show)
    best = summary["recommendation"]
    if best:
        console.print(f"[bold]recommendation:[/bold] {escape(best['name'])} ({best['precision']}), "
                      f"{best['median_ms']:.1f} ms at {best['shape'][0]}x{best['shape'][1]}, drift "
                      f"{best['drift_db']:+.3f} dB on its worst content")
    else:
        console.print(f"[bold]no engine is within the {budget} dB budget[/bold]")
    t = summary.get("recommendation_throughput")
    if t:
        console.print(f"[bold]for throughput:[/bold] {escape(t['name'])} ({t['precision']}), {t['images_per_s']:.2f} "
                      f"images/s at {t['shape'][0]}x{t['shape'][1]} with {t['inflight']} in flight")
    console.print(f"report: {summary['report']} ({summary['seconds']:.0f} s)")
    _failed_devices((summary.get("on_devices") or {}).get("failed"))


OUTCOME_STYLE = {"built": "[green]built[/green]", "skipped": "[yellow]skip[/yellow]", "failed": "[red]failed[/red]"}


@contextlib.contextmanager
def _progress_display(on: Console, first: str, transient: bool = True):
    """The one display of every verb's ``Progress`` events: a spinner with the current step (and a count where the
    work is counted), the time so far, and a line of its own for each outcome (built, skipped, failed)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=on, transient=transient) as bar:
        task = bar.add_task(escape(first), total=None)

        def show(event) -> None:
            if interrupts.interrupted():  # a library turned the interrupt into its own error: stop here
                raise KeyboardInterrupt
            if event.kind in OUTCOME_STYLE:
                bar.console.print(f"{OUTCOME_STYLE[event.kind]} {escape(clean_text(event.message))}")
                if event.done is not None:
                    bar.update(task, total=event.total, completed=event.done)
            else:
                bar.update(task, description=escape(clean_text(event.message)), total=event.total,
                           completed=event.done or 0)

        yield show


# Failures of the user's machine, not of this code: a read-only or full disk, a path that is a folder, no permission.
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EISDIR,
                      errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG, errno.EMLINK}


def environment_error(exc: OSError) -> str:
    where = f"'{exc.filename}': " if exc.filename else ""
    fix = {errno.ENOSPC: "free space there or choose another output", errno.EDQUOT: "free space there or choose "
           "another output", errno.EISDIR: "name a file, not a folder", errno.ENOTDIR: "a part of the path is a file",
           errno.EEXIST: "choose another output or remove it"}.get(exc.errno, "check the path and its permissions")
    return f"{where}{exc.strerror or exc}; {fix}."


def _exit_interrupted() -> None:
    interrupts.exit_interrupted(err_console.print)


def main() -> None:
    # A KeyboardInterrupt that escapes the handlers below (raised by a signal that lands inside one of them, or by a
    # library between its own handlers) must still end as an interruption: exit 130, never death by SIGINT (-2).
    try:
        _main()
    except KeyboardInterrupt:
        _exit_interrupted()


def _main() -> None:
    import warnings

    interrupts.install()
    warnings.showwarning = lambda message, category, *a, **k: err_console.print(
        f"[yellow]warning:[/yellow] {escape(clean_text(str(message)))}", highlight=False, soft_wrap=True)
    try:
        code = app(standalone_mode=False)  # typer.Exit(n) comes back as n in this mode
        if interrupts.interrupted():  # typer turns a KeyboardInterrupt into a silent Exit(130)
            _exit_interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except KeyboardInterrupt:
        _exit_interrupted()
    except ScnetDeployError as exc:
        if interrupts.interrupted():
            _exit_interrupted()
        err_console.print(f"[red]error:[/red] {escape(clean_text(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        if interrupts.interrupted():
            _exit_interrupted()
        if exc.errno not in ENVIRONMENT_ERRNOS:
            raise
        err_console.print(f"[red]error:[/red] {escape(clean_text(environment_error(exc)))}", highlight=False,
                          soft_wrap=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        if interrupts.interrupted():
            _exit_interrupted()
        if (exc.name or "").split(".")[0] not in EXPORT_STACK:
            raise
        what = f"scnet-deploy {sys.argv[1]}" if len(sys.argv) > 1 else "this"
        err_console.print(f"[red]error:[/red] {escape(str(needs_export_stack(what, exc.name.split('.')[0])))}",
                          highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        # Matched by name and shape, not by import: the click that typer uses is vendored in some typer versions.
        if interrupts.interrupted() or type(exc).__name__ == "Abort":  # Ctrl-C / SIGTERM, after every finally:
            _exit_interrupted()
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error (unknown option, missing argument)
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
