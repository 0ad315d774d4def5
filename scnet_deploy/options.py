"""Options shared by several verbs, as dataclasses: engine precisions and deploy forms, each backend's own options
(OpenVINO, TensorRT, Core ML), LR size ranges, the runtime options every runner takes, and how devices are reached.
Each verb's own options live with it (``ExportOptions`` in export.py, ``BenchOptions`` in bench.py, ...); the CLI
maps its flags onto them one to one."""

from dataclasses import dataclass, field, replace
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
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
class OpenVINOOptions:
    # Runtime inference precision hint: None = from --precision (fp32 -> f32, bf16 -> bf16, fp16 -> f16 where the
    # CPU has it, else f32 over FP16-compressed weights). Always explicit: the CPU plugin's own default is bf16 on
    # CPUs with AMX/AVX512-BF16, which is not FP32.
    inference_precision: str | None = None
    performance: str = "latency"  # or "throughput"
    streams: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class TensorRTOptions:
    workspace_mb: int = 1024
    timing_cache: Path | None = None  # reused and updated across builds
    max_batch: int = 1


@dataclass(frozen=True)
class CoreMLOptions:
    shapes: str = "range"  # "range" (flexible RangeDim) or "enumerated" (runs on the Neural Engine)
    enumerated: tuple[tuple[int, int], ...] = ((180, 320), (360, 640), (540, 960))
    deployment_target: str = "iOS17"  # ML Program with RangeDim/EnumeratedShapes needs iOS15+; iOS17 for int8 later


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
    """How a built artifact is run (not what it is): threads, OpenVINO hints, the Vulkan device."""

    threads: int | None = None
    openvino: OpenVINOOptions = field(default_factory=OpenVINOOptions)
    cuda: bool = True  # ONNX Runtime: use the CUDA provider where present
    vulkan_device: int | None = None  # ncnn on Vulkan: which device (None: ncnn's default)

    def for_throughput(self) -> "RuntimeOptions":
        """The same, with OpenVINO compiled for several requests in flight (its throughput hint: streams)."""
        return replace(self, openvino=replace(self.openvino, performance="throughput"))


@dataclass(frozen=True)
class RemoteOptions:
    remote_python: str | None = None  # the device's Python with scnet-deploy; None: `scnet-deploy` on its PATH
    provision: bool = False  # versions differ: install this version there from a wheel built here
    ssh_config: Path | None = None  # ssh -F FILE (default: ssh's own, ~/.ssh/config)
    remote_dir: str | None = None  # where run directories are made on the device (default: its $TMPDIR or /tmp)
    connect_timeout_s: int = 15
    jobs: int = 4  # devices reached at the same time (each one's work is its own; this machine mostly waits)
