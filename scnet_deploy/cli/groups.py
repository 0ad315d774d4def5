"""Option groups, declared once and shared: the device group (``--on`` and how a device is reached), the result
files, memory, the accuracy gate, INT8 calibration, autotuning, the graph's form, and each backend's own options
(mounted from the registry: a backend brings its group in its folder). A command names a group as one parameter;
Typer sees the group's options, and the command gets the one value the group makes of them (``uses``).

Where a group's options are fields of a dataclass (``options.option``), the group is made from it
(``options_group``): each default, help and flag is written once, in the dataclass."""

import functools
import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import typer

from ..build_options import CalibOptions, OnnxOptions, TuneOptions
from ..gate import AccuracyGate
from ..options import (EXPORT_SIZES, RemoteOptions, RuntimeOptions, SizeRange, cli_fields, cli_value, default_of,
                       flag_of, parse_size)


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

        params = [*own, *(p for g in groups.values() for p in g.params)]
        for p in params:  # a flag takes no value: no "<bool>" beside it in --help
            if p.annotation is bool and getattr(p.default, "metavar", False) is None:
                p.default.metavar = ""
        run.__signature__ = signature.replace(parameters=params)
        return run
    return wrap


def options_group(panel: str, cls, make: Callable | None = None, prefix: str = "", only=None) -> Group:
    """The group of CLI options made from the ``option`` fields of dataclass ``cls`` (``only``: those names): each
    flag's default and help are the field's own; ``cls`` may be an instance, whose values are then the defaults (a
    verb whose own defaults differ: the pipeline's 16 calibration crops). ``make(**field values)`` makes the group's
    value (default: the dataclass, or the instance with those values); ``prefix`` keeps the Python names of several
    groups apart in one command."""
    base = None if isinstance(cls, type) else cls
    if base is not None:
        cls, make = type(base), make or (lambda **values: replace(base, **values))
    fields = [f for f in cli_fields(cls) if only is None or f.name in only]
    options = {}
    for f in fields:
        meta = f.metadata["cli"]
        default = default_of(f) if base is None else getattr(base, f.name)
        annotation = meta["type"] or type(default)
        flag = flag_of(f)
        names = (f"{flag}/--no-{flag[2:]}",) if annotation is bool else (flag, *filter(None, [meta["short"]]))
        options[prefix + f.name] = (annotation, typer.Option(cli_value(f, default), *names, help=meta["help"]))

    def build(**values):
        parsed = {}
        for f in fields:
            value, parse = values[prefix + f.name], f.metadata["cli"]["parse"]
            parsed[f.name] = parse(value) if parse is not None and value is not None else value
        return (make or cls)(**parsed)

    return group(panel, build, **options)


def merged(make: Callable, **groups: Group) -> Group:
    """One group of several: ``make(**{name: that group's value})``."""
    def build(**values):
        return make(**{name: g.make(**{p.name: values[p.name] for p in g.params}) for name, g in groups.items()})
    return Group(tuple(p for g in groups.values() for p in g.params), build)


def backend_options(kind: str) -> Group:
    """Every backend's own options of ``kind`` ("Build": export, "Run": runtime), each under its own panel, made from
    its ``options`` module; the value: {backend name: its options}. The CLI names no backend: the registry does."""
    from scnet_deploy.exporters.registry import backends

    parts = {b.name: options_group(f"{b.format} options", b.option_types()[kind], prefix=f"{b.name}__")
             for b in backends() if kind in b.option_types()}
    return merged(lambda **by_name: by_name, **parts)


# --- devices -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Devices:
    on: tuple[str, ...]  # () = here, the verb alone
    remote: RemoteOptions


DEVICES = group(
    "Devices (--on)",
    lambda on, remote_python, provision, ssh_config, remote_dir, jobs, device_timeout: Devices(
        tuple(on), RemoteOptions(remote_python, provision, ssh_config, remote_dir, jobs=jobs,
                                 device_timeout_s=device_timeout)),
    on=(list[str], typer.Option([], "--on", help="Run on this device: ssh://user@host[:port] (your ssh config, keys "
                                "and agent apply) or local; repeat for a column per device. export of an engine "
                                "built where it runs: the device that builds it; pipeline: every engine also timed "
                                "there.")),
    remote_python=(Optional[str], typer.Option(None, "--remote-python", help="--on: the device's Python with "
                                               "scnet-deploy (default: scnet-deploy on its PATH).")),
    provision=(bool, typer.Option(False, "--provision", help="--on: install this scnet-deploy version on the device "
                                  "from a wheel built here when its version differs.")),
    ssh_config=(Optional[Path], typer.Option(None, "--ssh-config", help="--on: ssh config file (ssh -F).")),
    remote_dir=(Optional[str], typer.Option(None, "--remote-dir", help="--on: where run directories are made on the "
                                            "device (default: its $TMPDIR or /tmp); removed after each run.")),
    jobs=(int, typer.Option(RemoteOptions.jobs, "--jobs", help="--on: devices reached at the same time; a device that "
                            "fails is reported and the others go on (exit 1; 2 when every device failed).")),
    device_timeout=(Optional[float], typer.Option(None, "--device-timeout", help="--on: seconds a run on one device "
                                                  "may take, every command of it together (default: derived from "
                                                  "what was asked); a device past it is reported as failed.")),
)


# --- how an engine runs --------------------------------------------------------------------------------------------

RUNTIME = merged(
    lambda common, backends: RuntimeOptions(threads=common[0], trust=common[1], backends=backends),
    common=group("Runtime", lambda threads, trust: (threads, tuple(trust)),
                 threads=(Optional[int], typer.Option(None, "--threads", help="Threads for the runtimes.")),
                 trust=(list[Path], typer.Option([], "--trust", help="A public key (PEM): every artifact must be "
                                                 "signed by it (export --sign) or is refused; repeat for several "
                                                 "keys. Without it, unsigned artifacts run and say so."))),
    backends=backend_options("Run"),
)

MEMORY = group(
    "Memory",
    lambda max_memory: max_memory,
    max_memory=(Optional[int], typer.Option(None, "--max-memory", help="Memory limit, MB: a run that would not fit "
                                            "is done in exact tiles where the verb can, else refused before it "
                                            "starts (default: 70% of what this process may use: free memory, "
                                            "cgroup and address-space limits).")),
)


# --- output files --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outputs:
    json: Optional[Path]
    csv: Optional[Path] = None
    report: Optional[Path] = None


_JSON_FILE = (Optional[Path], typer.Option(None, "--json", help="Write the results as JSON to this file."))
OUTPUTS = group(
    "Result files",
    Outputs,
    json=_JSON_FILE,
    csv=(Optional[Path], typer.Option(None, "--csv", help="Write results as CSV (one row per measurement).")),
    report=(Optional[Path], typer.Option(None, "--report", help="Write a Markdown + PNG report here.")),
)
JSON_FILE = group("Result files", Outputs, json=_JSON_FILE)  # the result group of a verb with no table or report
# info and doctor print what they find: as tables, or as JSON on stdout (what the device layer reads of a device)
PRINT_JSON = group("Output", lambda as_json: as_json,
                   as_json=(bool, typer.Option(False, "--json", help="Print JSON instead of tables.")))


# --- the accuracy gate ---------------------------------------------------------------------------------------------

def gate_group(on_by_default: bool) -> Group:
    """The accuracy gate's options, as every verb that judges takes them (``AccuracyGate``: its defaults, help and
    check): export and pipeline judge by default (``--no-budget`` to opt out, recorded), validate when ``--budget``
    is given."""
    def make(budget, max_visible, visible_levels, no_budget=False):
        drift = None if no_budget else budget
        return AccuracyGate(drift, max_visible / 100, visible_levels)

    default = AccuracyGate()
    options = {
        "budget": (Optional[float], typer.Option(default.drift_db if on_by_default else None, "--budget", help=(
            "The accuracy gate's PSNR-Y drift, dB, per content type" + ("" if on_by_default else
                                                                        " (given: the gate is on)") + "; with "
            "--max-visible at --visible-levels: " + default.describe() + ".")))
    }
    options["max_visible"] = (float, typer.Option(100 * default.max_visible, "--max-visible", help="The accuracy "
                                                  "gate: the largest share of an image's pixels, %, that may change "
                                                  "visibly."))
    options["visible_levels"] = (int, typer.Option(default.visible_levels, "--visible-levels", help="The accuracy "
                                                   "gate: a pixel this many 8-bit levels off FP32 (any channel) has "
                                                   "changed visibly."))
    if on_by_default:
        options["no_budget"] = (bool, typer.Option(False, "--no-budget", help="No accuracy gate (drift and visible "
                                                   "change are still measured and recorded; results say the gate "
                                                   "was off)."))
    return group("Accuracy gate", make, **options)


GATE = gate_group(on_by_default=True)
GATE_WHEN_ASKED = gate_group(on_by_default=False)


# --- INT8, autotuning, the graph's form, sizes (export) ------------------------------------------------------------

INT8 = options_group("INT8 calibration", CalibOptions)
AUTOTUNE = options_group("Autotuning", TuneOptions)
GRAPH = options_group("ONNX graph form", OnnxOptions)

SIZES = group(
    "Sizes",
    lambda min_size, opt_size, max_size: SizeRange(parse_size(min_size, "--min-size"),
                                                   parse_size(opt_size, "--opt-size"),
                                                   parse_size(max_size, "--max-size")),
    min_size=(str, typer.Option("x".join(map(str, EXPORT_SIZES.min)), help="Smallest LR input HxW the engine "
                                "accepts (fixed at export where the backend fixes it).")),
    opt_size=(str, typer.Option("x".join(map(str, EXPORT_SIZES.opt)), help="LR input HxW to optimize for: "
                                "autotuning times at it, backends with profiles build for it.")),
    max_size=(str, typer.Option("x".join(map(str, EXPORT_SIZES.max)), help="Largest LR input HxW the engine "
                                "accepts (fixed at export where the backend fixes it).")),
)
BACKEND_BUILD = backend_options("Build")
