"""Options shared by several verbs, as dataclasses: engine precisions and deploy forms, LR size ranges, the runtime
options every runner takes, and how devices are reached. Each verb's own options live with it (``ExportOptions`` in
export.py, ``BenchOptions`` in bench.py, ...); each backend's own live in its folder (``exporters/<b>/options.py``).

A field made with ``option(...)`` is also a command-line option: its default, help and flag are written once, here
in the dataclass, and the CLI makes its options from them (``cli/groups.py: options_group``); the device layer
turns a value back into the same flags (``cli_args``).
"""

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

MB = 2**20  # bytes in a mebibyte: every --max-memory and size cap is in these


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """An image size as every option writes it: HEIGHTxWIDTH (180x320), positive integers."""
    from .errors import ScnetDeployError

    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise ScnetDeployError(f"{flag} {text!r} is not HEIGHTxWIDTH with positive integers; write e.g. "
                               "180x320.") from None


def size_text(size) -> str:
    """``parse_size``'s inverse: (180, 320) -> "180x320"."""
    return f"{size[0]}x{size[1]}"


def parse_sizes(text: str, flag: str = "--size") -> tuple[tuple[int, int], ...]:
    """Comma-separated sizes, HEIGHTxWIDTH each."""
    return tuple(parse_size(s, flag) for s in str(text).split(",") if s.strip())


def sizes_text(sizes) -> str:
    return ",".join(map(size_text, sizes))


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, short: str | None = None,
           cli: Any = None, parse: Callable | None = None, show: Callable | None = None,
           default_factory: Any = dataclasses.MISSING):
    """A dataclass field that is also a CLI option. ``flag``: its name (default ``--field-name``), ``short`` its
    one-letter alias; ``cli``: the type
    the CLI reads (default: the default's type; required where the default is None); ``parse(cli value) -> field
    value`` and ``show(field value) -> cli value`` where the two differ (sizes: "180x320" <-> (180, 320))."""
    meta = {"cli": {"help": help, "flag": flag, "short": short, "type": cli, "parse": parse, "show": show}}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def cli_fields(cls) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` that are CLI options (made with ``option``)."""
    return [f for f in dataclasses.fields(cls) if "cli" in f.metadata]


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata["cli"]["flag"] or "--" + f.name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def cli_value(f: dataclasses.Field, value: Any) -> Any:
    """A field's value as its CLI option reads it (``show``)."""
    show = f.metadata["cli"]["show"]
    return show(value) if show is not None and value is not None else value


def cli_args(options) -> list[str]:
    """The CLI flags that make ``options`` (a dataclass of ``option`` fields) from its defaults: only the values that
    differ from them (the device layer passes a verb's options on to the device's own CLI)."""
    args = []
    for f in cli_fields(type(options)):
        value = getattr(options, f.name)
        if value == default_of(f) or value is None:
            continue
        flag = flag_of(f)
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(cli_value(f, value))]
    return args

PRECISIONS = ("fp32", "fp16", "bf16", "int8", "a16w8")
# Precisions whose engines are calibrated and held to the accuracy gate on the hold-out: INT8, and the NPUs' 16-bit
# activations with 8-bit weights (Qualcomm writes it "w8a16": the same precision, accepted under that name too)
QUANTIZED = ("int8", "a16w8")
PRECISION_ALIASES = {"w8a16": "a16w8"}


def canonical_precision(precision: str) -> str:
    return PRECISION_ALIASES.get(str(precision).lower(), precision)
DEFAULT_SHIFT = "dwconv"  # measured fastest in ONNX Runtime (see README, benchmarks/shift_forms.py)
# Deploy forms the latency autotuner builds and times by default (scnet_deploy/autotune.py), shift[+rewrite].
# upsample_as_deconv is exact but measured slower in every backend here (OpenVINO picks a slow grouped-deconv kernel
# inside the model), so it is a candidate only when asked for (--candidates).
CANDIDATE_FORMS = ("dwconv", "dwconv+conv_before_upsample", "slice+conv_before_upsample", "fold+conv_before_upsample")
# The forms ever measured fastest on a CPU (ONNX Runtime's and OpenVINO's CPU engines), on both CPU classes seen: AMD
# EPYC without AMX (benchmarks/results/speed_suite.md) and Intel Xeon with AMX (speed_suite_intel_amx.md and the
# benchmarks/pipeline_time.py runs README quotes). slice+conv_before_upsample never was (1.4-4x the winner in every
# engine and precision); fold+conv_before_upsample only in OpenVINO INT8 while the dwconv forms' budget loops did not
# converge, and no longer (benchmarks/results/ov_int8_forms.md). Each with skip_as_conv: the image skip as a conv at
# the input size made OpenVINO's f32, bf16 and int8 engines 1.04-1.10x faster and was within 3% elsewhere (ONNX
# Runtime, OpenVINO fp16), with the same INT8 drift (benchmarks/results/skip_as_conv.md). A CPU backend's autotuner
# builds these by default (each candidate costs an ONNX export, for INT8 a quantization, and its timing); a GPU
# engine tries every CANDIDATE_FORMS (slice+conv_before_upsample was the fastest PyTorch FP32 form on an H200;
# skip_as_conv is not measured on a GPU); --candidates asks for any.
CPU_FORMS = ("dwconv+skip_as_conv", "dwconv+conv_before_upsample+skip_as_conv")


@dataclass(frozen=True)
class SizeRange:
    """The one LR size type, (height, width) min/opt/max: what an export must accept (``EXPORT_SIZES`` unless
    asked; TensorRT profiles and Core ML ranges are made from it) and what a built engine declares it accepts
    (``None`` bounds: any size)."""

    min: tuple[int, int] | None = None
    opt: tuple[int, int] | None = None
    max: tuple[int, int] | None = None

    def contains(self, h: int, w: int) -> bool:
        lo_ok = self.min is None or (h >= self.min[0] and w >= self.min[1])
        hi_ok = self.max is None or (h <= self.max[0] and w <= self.max[1])
        return lo_ok and hi_ok

    def check(self) -> None:
        """An export's range: every bound given and 1 <= min <= opt <= max per dimension."""
        from .errors import ExportError

        ok = None not in (self.min, self.opt, self.max) and all(
            1 <= lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max))
        if not ok:
            raise ExportError(f"size range must satisfy 1 <= min <= opt <= max per dimension; got min {self.min}, "
                              f"opt {self.opt}, max {self.max}.")

    def to_dict(self) -> dict:
        return {k: list(v) if v else None for k, v in (("min", self.min), ("opt", self.opt), ("max", self.max))}

    @classmethod
    def from_dict(cls, d: dict | None) -> "SizeRange":
        d = d or {}
        return cls(*(tuple(d[k]) if d.get(k) else None for k in ("min", "opt", "max")))


EXPORT_SIZES = SizeRange((16, 16), (180, 320), (1080, 1920))  # export's default --min/--opt/--max-size


@dataclass(frozen=True)
class RuntimeOptions:
    """How a built artifact is run (not what it is): threads, whether several requests will be in flight, and each
    backend's own runtime options (its ``options.Run``, by backend name; absent: its defaults)."""

    threads: int | None = None
    cuda: bool = True  # a GPU provider where present (a runtime with one: ONNX Runtime's CUDA)
    inflight: bool = False  # compiled for several requests in flight (a runtime with a throughput mode uses it)
    backends: dict = field(default_factory=dict, hash=False)  # backend name -> its options.Run
    trust: tuple[Path, ...] = ()  # public keys: an artifact must be signed by one of them (signing.check)

    def backend(self, name: str, default):
        """Backend ``name``'s runtime options, or ``default`` (its ``Run()``) where none were given."""
        return self.backends.get(name, default)

    def for_throughput(self) -> "RuntimeOptions":
        """The same, compiled for several requests in flight (OpenVINO: its throughput hint, streams)."""
        return replace(self, inflight=True)


@dataclass(frozen=True)
class RemoteOptions:
    remote_python: str | None = None  # the device's Python with scnet-deploy; None: `scnet-deploy` on its PATH
    provision: bool = False  # versions differ: install this version there from a wheel built here
    ssh_config: Path | None = None  # ssh -F FILE (default: ssh's own, ~/.ssh/config)
    remote_dir: str | None = None  # where run directories are made on the device (default: its $TMPDIR or /tmp)
    connect_timeout_s: int = 15
    jobs: int = 4  # devices reached at the same time (each one's work is its own; this machine mostly waits)
    # how long a run on one device may take, every command of it together; None: derived from what was asked
    device_timeout_s: float | None = None
