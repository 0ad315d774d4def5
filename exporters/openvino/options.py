"""OpenVINO's own options: what an export asks of its engine (``Build``: ``--ov-hint``), how it is run (``Run``:
``--ov-performance``, ``--ov-streams``), and what its CPU plugin is compiled with (``CompileOptions``, made from
both). No import of openvino here: the CLI reads these to make its options."""

from dataclasses import dataclass
from typing import Optional

from scnet_deploy.options import option


@dataclass(frozen=True)
class Build:
    # Runtime inference precision hint: None = from --precision (fp32 -> f32, bf16 -> bf16, fp16 -> f16 where the
    # CPU has it, else f32 over FP16-compressed weights). Always explicit: the CPU plugin's own default is bf16 on
    # CPUs with AMX/AVX512-BF16, which is not FP32.
    inference_precision: str | None = option(None, "OpenVINO inference precision f32|bf16|f16 (default: from "
                                             "--precision).", flag="--ov-hint", cli=Optional[str])


@dataclass(frozen=True)
class Run:
    performance: str = option("latency", "OpenVINO performance hint of runs one image at a time: latency or "
                              "throughput (runs with several requests in flight always use throughput).",
                              flag="--ov-performance")
    streams: int | None = option(None, "OpenVINO streams.", flag="--ov-streams", cli=Optional[int])


@dataclass(frozen=True)
class CompileOptions:
    """What the CPU plugin is compiled with: the hint (None: from the precision), performance, streams, threads."""

    inference_precision: str | None = None
    performance: str = "latency"
    streams: int | None = None
    threads: int | None = None
