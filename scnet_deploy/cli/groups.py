"""Option groups, declared once and shared: the device group (``--on`` and how a device is reached), the output
files, INT8 calibration and autotuning. A command names a group as one parameter; Typer sees the group's options,
and the command gets the one value the group makes of them (``uses``)."""

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

from ..errors import ScnetDeployError
from ..gate import DEFAULT_DRIFT_DB
from ..options import (CANDIDATE_FORMS, CoreMLOptions, OpenVINOOptions, RemoteOptions, RuntimeOptions, SizeRange,
                       TensorRTOptions)

if TYPE_CHECKING:  # the export stack is an extra: made lazily
    from scnet_deploy.autotune import TuneOptions
    from scnet_deploy.calibration.data import CalibOptions
    from scnet_deploy.exporters.onnx_graph import OnnxOptions


@dataclass(frozen=True)
class Group:
    params: tuple[inspect.Parameter, ...]
    make: Callable  # the group's value from its options, by name


def group(panel: str, make: Callable, **options) -> Group:
    """``options``: name -> (annotation, typer.Option(...)), shown under ``panel`` in ``--help``; ``make(**values)``
    builds the group's value."""
    for _, option in options.values():
        option.rich_help_panel = panel
    return Group(tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
                       for name, (annotation, option) in options.items()), make)


def uses(**groups: Group):
    """A command taking each group as one parameter (by the keyword's name), its options shown to Typer."""
    def wrap(command):
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name not in groups]

        @functools.wraps(command)
        def run(**values):
            for name, g in groups.items():
                values[name] = g.make(**{p.name: values.pop(p.name) for p in g.params})
            return command(**values)

        run.__signature__ = signature.replace(parameters=[*own, *(p for g in groups.values() for p in g.params)])
        return run
    return wrap


# --- parsing ---------------------------------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise ScnetDeployError(f"--size {text!r} is not HEIGHTxWIDTH with positive integers; write e.g. 180x320.")


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(parse_size(s) for s in text.split(",") if s.strip())


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    values = []
    for t in parse_list(text):
        try:
            values.append(int(t))
        except ValueError:
            raise ScnetDeployError(f"{flag}: {t!r} is not an integer; write e.g. 128,256.") from None
    return tuple(values)


# --- devices -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Devices:
    on: tuple[str, ...]  # () = here, the verb alone
    remote: RemoteOptions


DEVICES = group(
    "Devices (--on)",
    lambda on, remote_python, provision, ssh_config, remote_dir, jobs: Devices(
        tuple(on), RemoteOptions(remote_python, provision, ssh_config, remote_dir, jobs=jobs)),
    on=(list[str], typer.Option([], "--on", help="Run on this device: ssh://user@host[:port] (your ssh config, keys "
                                "and agent apply) or local; repeat for a column per device. export -f tensorrt: the "
                                "device that builds the engine; pipeline: every engine also timed there.")),
    remote_python=(Optional[str], typer.Option(None, "--remote-python", help="--on: the device's Python with "
                                               "scnet-deploy (default: scnet-deploy on its PATH).")),
    provision=(bool, typer.Option(False, "--provision", help="--on: install this scnet-deploy version on the device "
                                  "from a wheel built here when its version differs.")),
    ssh_config=(Optional[Path], typer.Option(None, "--ssh-config", help="--on: ssh config file (ssh -F).")),
    remote_dir=(Optional[str], typer.Option(None, "--remote-dir", help="--on: where run directories are made on the "
                                            "device (default: its $TMPDIR or /tmp); removed after each run.")),
    jobs=(int, typer.Option(4, "--jobs", help="--on: devices reached at the same time; a device that fails is "
                            "reported and the others go on (exit 1; 2 when every device failed).")),
)


# --- how an engine runs --------------------------------------------------------------------------------------------

RUNTIME = group(
    "Runtime",
    lambda threads, vulkan_device: RuntimeOptions(threads=threads, vulkan_device=vulkan_device),
    threads=(Optional[int], typer.Option(None, "--threads", help="Threads for the runtimes.")),
    vulkan_device=(Optional[int], typer.Option(None, "--vulkan-device", help="ncnn on Vulkan: the device index "
                                               "(`scnet-deploy doctor` lists them; default: ncnn's choice).")),
)


# --- output files --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outputs:
    json: Optional[Path]
    csv: Optional[Path]
    report: Optional[Path]


OUTPUTS = group(
    "Result files",
    Outputs,
    json=(Optional[Path], typer.Option(None, "--json", help="Write results as JSON.")),
    csv=(Optional[Path], typer.Option(None, "--csv", help="Write results as CSV (one row per measurement).")),
    report=(Optional[Path], typer.Option(None, "--report", help="Write a Markdown + PNG report here.")),
)


# --- INT8 ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Int8:
    calib: "CalibOptions"
    budget_db: Optional[float]


def _int8(calib_data, calib_count, calib_crop, calib_method, calib_lr, budget, no_budget, holdout,
          content_mix, content) -> Int8:
    from scnet_deploy.calibration.data import CalibOptions

    return Int8(CalibOptions(calib_data, calib_count, calib_crop, lr_input=calib_lr, method=calib_method,
                             holdout=holdout, content_mix=content_mix,
                             content=parse_list(content) if content else None), None if no_budget else budget)


INT8 = group(
    "INT8 calibration",
    _int8,
    calib_data=(Optional[Path], typer.Option(None, help="INT8 calibration images (HR; default: scikit-image's sample "
                                             "photographs). A quarter is held out, with generated line art, text, "
                                             "flat colours and textures, to measure drift.")),
    calib_count=(int, typer.Option(32, help="INT8: number of LR calibration crops.")),
    calib_crop=(int, typer.Option(48, help="INT8: LR calibration crop side.")),
    calib_method=(str, typer.Option("minmax", help="INT8 (ONNX Runtime/TensorRT): minmax, entropy or percentile.")),
    calib_lr=(bool, typer.Option(False, help="INT8: --calib-data holds LR images; crop them as they are.")),
    budget=(float, typer.Option(DEFAULT_DRIFT_DB, help="INT8: the accuracy gate on the hold-out, as validate "
                                "--budget judges: per content type, at most this PSNR-Y drift, dB, and 0.1% of an "
                                "image's pixels visibly changed; the most sensitive layers fall back to float until "
                                "every content type passes, else the export fails.")),
    no_budget=(bool, typer.Option(False, "--no-budget", help="INT8 without the accuracy gate (drift and visible change "
                                  "are still measured and recorded; the manifest says the gate was off).")),
    holdout=(Optional[Path], typer.Option(None, help="INT8: your own hold-out images for the budget (sub-folders name "
                                          "content types); default: held-out photos + generated line art, text, flat "
                                          "colours, textures.")),
    content_mix=(bool, typer.Option(False, help="INT8: also calibrate on generated line art, text, flat colours and "
                                    "textures (a quarter of the crops; widens ranges, costs photos).")),
    content=(Optional[str], typer.Option(None, help="INT8: the hold-out's content types the gate judges, comma-"
                                         "separated (photo, line-art, text, flat-colours, textures; default: every "
                                         "one); the others are measured and recorded.")),
)


# --- autotuning ----------------------------------------------------------------------------------------------------

def _tune(optimize, candidates, tune_runs, tune_tiles, tune_split_tiles) -> "TuneOptions":
    from ..autotune import TuneOptions

    return TuneOptions(optimize, None if candidates is None else parse_list(candidates), runs=tune_runs,
                       tiles=parse_ints(tune_tiles, "--tune-tiles"),
                       split_tiles=parse_ints(tune_split_tiles, "--tune-split-tiles"))


AUTOTUNE = group(
    "Autotuning",
    _tune,
    optimize=(str, typer.Option("none", help="latency: build every --candidates form, verify and time each at "
                                "--opt-size here, keep the fastest (and exact tiling where faster); none: --shift.")),
    candidates=(Optional[str], typer.Option(None, help="--optimize latency: forms to try, shift[+conv_before_upsample]"
                                            "[+upsample_as_deconv][+skip_as_conv], comma-separated; default: the "
                                            "backend's (on a CPU the forms measured fastest there, elsewhere "
                                            + ",".join(CANDIDATE_FORMS) + ").")),
    tune_runs=(int, typer.Option(5, help="--optimize latency: timed runs per candidate.")),
    tune_tiles=(str, typer.Option("256", help="--optimize latency: LR tile sides to try, comma-separated ('' for "
                                  "none).")),
    tune_split_tiles=(str, typer.Option("64", help="--optimize latency: LR tile sides of split execution's tail to "
                                        "try (the body whole, the upsampling tail on tiles), comma-separated ('' for "
                                        "none).")),
)


# --- the ONNX graph's form and each backend's own options (export) --------------------------------------------------

def _graph(shift, conv_before_upsample, upsample_as_deconv, skip_as_conv, opset, exporter, simplify) -> "OnnxOptions":
    from scnet_deploy.exporters.onnx_graph import OnnxOptions

    return OnnxOptions(shift=shift, conv_before_upsample=conv_before_upsample, upsample_as_deconv=upsample_as_deconv,
                       skip_as_conv=skip_as_conv, opset=opset, exporter=exporter, simplify=simplify)


GRAPH = group(
    "ONNX graph form",
    _graph,
    shift=(str, typer.Option("dwconv", help="Shift form in the graph: dwconv (depthwise 3x3), slice (pad+slice) or "
                             "fold (into the next 1x1 conv: a sparse 3x3 conv).")),
    conv_before_upsample=(bool, typer.Option(False, help="Run each bilinear stage's 1x1 conv before the upsample "
                                             "(exact, fewer MACs).")),
    upsample_as_deconv=(bool, typer.Option(False, help="Run each even bilinear upsample as edge pad + depthwise "
                                           "transposed conv (exact).")),
    skip_as_conv=(bool, typer.Option(False, help="Run the image skip's bilinear upsample as edge pad + a 3x3 conv to "
                                     "the output phases + depth-to-space (exact).")),
    opset=(Optional[int], typer.Option(None, help="ONNX opset, 17 or 18 (default: the exporter's, 18 for dynamo).")),
    exporter=(str, typer.Option("dynamo", help="torch.onnx exporter: dynamo or torchscript.")),
    simplify=(bool, typer.Option(True, help="Simplify with onnxsim (onnxslim as fallback).")),
)


@dataclass(frozen=True)
class Engines:
    sizes: SizeRange
    openvino: OpenVINOOptions
    tensorrt: TensorRTOptions
    coreml: CoreMLOptions


ENGINES = group(
    "Engine options",
    lambda min_size, opt_size, max_size, ov_hint, ov_performance, workspace, timing_cache, max_batch, coreml_shapes,
    coreml_sizes, coreml_target: Engines(
        SizeRange(parse_size(min_size), parse_size(opt_size), parse_size(max_size)),
        OpenVINOOptions(inference_precision=ov_hint, performance=ov_performance),
        TensorRTOptions(workspace_mb=workspace, timing_cache=timing_cache, max_batch=max_batch),
        CoreMLOptions(shapes=coreml_shapes, enumerated=tuple(parse_size(s) for s in coreml_sizes.split(",")),
                      deployment_target=coreml_target)),
    min_size=(str, typer.Option("16x16", help="Smallest LR input HxW (TensorRT profile, Core ML range).")),
    opt_size=(str, typer.Option("180x320", help="LR input HxW to optimize for (TensorRT, Core ML).")),
    max_size=(str, typer.Option("1080x1920", help="Largest LR input HxW (TensorRT profile, Core ML range).")),
    ov_hint=(Optional[str], typer.Option(None, help="OpenVINO inference precision f32|bf16|f16 (default: from "
                                         "--precision).")),
    ov_performance=(str, typer.Option("latency", help="OpenVINO performance hint: latency or throughput.")),
    workspace=(int, typer.Option(1024, help="TensorRT workspace limit, MiB.")),
    timing_cache=(Optional[Path], typer.Option(None, help="TensorRT timing cache file to reuse and update.")),
    max_batch=(int, typer.Option(1, help="TensorRT profile's largest batch.")),
    coreml_shapes=(str, typer.Option("range", help="Core ML flexible shapes: range or enumerated.")),
    coreml_sizes=(str, typer.Option("180x320,360x640,540x960", help="Core ML enumerated LR sizes.")),
    coreml_target=(str, typer.Option("iOS17", help="Core ML minimum deployment target.")),
)
