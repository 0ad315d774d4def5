"""What an export is asked, as dataclasses that are also its command-line options (``options.option``): the ONNX
graph's form (``OnnxOptions``), INT8 calibration (``CalibOptions``), latency autotuning (``TuneOptions``), and the
export as a whole (``ExportOptions``, the ``export`` verb's options) and the main job's (``PipelineOptions``).

Data only, no import of the export stack: the CLI makes its options from these at start-up, on a device too, and
the build side (``exporters/onnx_graph.py``, ``calibration/data.py``, ``autotune.py``) reads them.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from .errors import ExportError
from .gate import DEFAULT_DRIFT_DB, VISIBLE_LEVELS, VISIBLE_SHARE, AccuracyGate
from .options import CANDIDATE_FORMS, DEFAULT_SHIFT, EXPORT_SIZES, SizeRange, option, parse_sizes, sizes_text

EXPORTERS = {"dynamo": 18, "torchscript": 17}  # torch.onnx exporter -> its default opset
OPSETS = (17, 18)
OPTIMIZE = ("none", "latency")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in str(text).split(",") if t.strip())


def _ints(flag: str):
    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(t) for t in parse_list(text))
        except ValueError:
            raise ExportError(f"{flag} {text!r}: a value is not an integer; write integers, comma-separated, e.g. "
                              "128,256.") from None
    return parse


def join_list(values) -> str:
    return ",".join(map(str, values))


@dataclass(frozen=True)
class OnnxOptions:
    shift: str = option(DEFAULT_SHIFT, "Shift form in the graph: dwconv (depthwise 3x3), slice (pad+slice) or fold (into "
                        "the next 1x1 conv: a sparse 3x3 conv).")
    conv_before_upsample: bool = option(False, "Run each bilinear stage's 1x1 conv before the upsample (exact, fewer "
                                        "MACs).")
    upsample_as_deconv: bool = option(False, "Run each even bilinear upsample as edge pad + depthwise transposed "
                                      "conv (exact).")
    skip_as_conv: bool = option(False, "Run the image skip's bilinear upsample as edge pad + a 3x3 conv to the "
                                "output phases + depth-to-space (exact).")
    opset: int | None = option(None, "ONNX opset, 17 or 18 (default: the exporter's, 18 for dynamo).",
                               cli=Optional[int])
    exporter: str = option("dynamo", "torch.onnx exporter: dynamo or torchscript.")
    simplify: bool = option(True, "Simplify with onnxsim (onnxslim as fallback).")
    # (batch, height, width) LR sizes the export is verified at: odd, non-square, and a second batch size.
    verify_shapes: tuple[tuple[int, int, int], ...] = ((1, 17, 23), (2, 32, 24))
    tolerance: float = 1e-4

    def resolved_opset(self) -> int:
        return self.opset if self.opset is not None else EXPORTERS[self.exporter]

    def deploy(self):
        """The deploy form (``model.forms.DeployOptions``) this graph is built in."""
        from .model.forms import DeployOptions

        return DeployOptions(self.shift, self.conv_before_upsample, self.upsample_as_deconv, self.skip_as_conv)

    def with_form(self, form) -> "OnnxOptions":
        """These options with the graph built in deploy ``form``."""
        return replace(self, shift=form.shift, conv_before_upsample=form.conv_before_upsample,
                       upsample_as_deconv=form.upsample_as_deconv, skip_as_conv=form.skip_as_conv)

    def check(self) -> None:
        from .model.forms import check_shift

        check_shift(self.shift)
        if self.exporter not in EXPORTERS:
            raise ExportError(f"--exporter {self.exporter!r} is unknown; choose one of {sorted(EXPORTERS)}.")
        if self.resolved_opset() not in OPSETS:
            raise ExportError(f"--opset {self.opset} is not supported; choose one of {list(OPSETS)}.")


@dataclass(frozen=True)
class CalibOptions:
    # image folder (HR, degraded with MATLAB bicubic; or LR as is with lr_input)
    data: Path | None = option(None, "INT8 calibration images (HR; default: scikit-image's sample photographs). A "
                               "quarter is held out, with generated line art, text, flat colours and textures, to "
                               "measure drift.", flag="--calib-data", cli=Optional[Path])
    count: int = option(32, "INT8: number of LR calibration crops.", flag="--calib-count")
    crop: int = option(48, "INT8: LR calibration crop side.", flag="--calib-crop")
    seed: int = 0
    lr_input: bool = option(False, "INT8: --calib-data holds LR images; crop them as they are.", flag="--calib-lr")
    holdout_fraction: float = 0.25  # of a folder's images, kept out of calibration for the budget check
    method: str = option("minmax", "INT8 calibration method of the ONNX Q/DQ graphs: minmax, entropy or percentile.",
                         flag="--calib-method")
    holdout: Path | None = option(None, "INT8: your own hold-out images for the accuracy gate (sub-folders name "
                                  "content types); default: held-out photos + generated line art, text, flat "
                                  "colours, textures.", cli=Optional[Path])
    # add generated line art, text, flat colours, textures to the calibration crops (a quarter). Off by default: it
    # widens ranges, which costs photographs more than it gains elsewhere (benchmarks/results/int8_variants.md).
    content_mix: bool = option(False, "INT8: also calibrate on generated line art, text, flat colours and textures "
                               "(a quarter of the crops; widens ranges, costs photos).")
    # the hold-out's content types whose drift gates the budget (None: every one); the others are measured and shown
    content: tuple[str, ...] | None = option(None, "The content types the accuracy gate judges, comma-separated "
                                             "(photo, line-art, text, flat-colours, textures; default: every one); "
                                             "the others are measured and shown.", cli=Optional[str], parse=parse_list,
                                             show=join_list)


@dataclass(frozen=True)
class TuneOptions:
    optimize: str = option("none", "latency: build every --candidates form, verify and time each at --opt-size here, "
                           "keep the fastest (and exact tiling where faster); none: --shift.")
    # None: the backend's default for the precision (Backend.candidate_forms: on a CPU, the forms ever measured
    # fastest there; elsewhere every CANDIDATE_FORMS)
    candidates: tuple[str, ...] | None = option(
        None, "--optimize latency: forms to try, shift[+conv_before_upsample][+upsample_as_deconv][+skip_as_conv], "
        "comma-separated; default: the backend's (on a CPU the forms measured fastest there, elsewhere "
        + ",".join(CANDIDATE_FORMS) + ").", cli=Optional[str], parse=parse_list, show=join_list)
    size: tuple[int, int] | None = None  # LR (height, width) to time at; None: the export's --opt-size
    # timed runs of the two fastest candidates in turn and of the tiles (the medians decide); with more than two
    # candidates each is first screened alone with half as many (rounded up) after one warm-up run, as is an INT8
    # candidate within budget when one over budget is taken up again (its speed limit)
    runs: int = option(5, "--optimize latency: timed runs per candidate.", flag="--tune-runs")
    # LR tile sides tried on the winner; () tries none. 128 is no longer tried by default: it was slower than 256 in
    # every measurement on both CPU classes (its halo of the 21-px receptive radius adds 76% pixels, 256's 36%)
    tiles: tuple[int, ...] = option((256,), "--optimize latency: LR tile sides to try, comma-separated ('' for none).",
                                    flag="--tune-tiles", cli=str, parse=_ints("--tune-tiles"), show=join_list)
    # LR tile sides of split execution's tail tried on the winner (backends that can cut their graph); () tries none.
    # Measured slower than the whole graph at every size tried on this project's CPUs (benchmarks/split_tail.py); it
    # is tried because the tail's maps stay in a smaller cache on other devices, and each try costs a run or two.
    split_tiles: tuple[int, ...] = option((64,), "--optimize latency: LR tile sides of split execution's tail to try "
                                          "(the body whole, the upsampling tail on tiles), comma-separated ('' for "
                                          "none).", flag="--tune-split-tiles", cli=str,
                                          parse=_ints("--tune-split-tiles"), show=join_list)

    def check(self) -> None:
        from .model.forms import DeployOptions

        if self.optimize not in OPTIMIZE:
            raise ExportError(f"--optimize {self.optimize!r} is unknown; choose one of {list(OPTIMIZE)}.")
        if self.candidates is not None and not self.candidates:
            raise ExportError("--candidates is empty; name at least one form, e.g. dwconv.")
        for name in self.candidates or ():
            DeployOptions.from_name(name)
        if self.runs < 1 or any(t < 8 for t in self.tiles + self.split_tiles):
            raise ExportError("--tune-runs must be >= 1 and every tile >= 8 LR pixels.")


@dataclass(frozen=True)
class ExportOptions:
    output: Path
    # one format, or several comma-separated: one sub-directory each
    format: str = option("onnx", "The engine format(s), comma-separated for several (one ONNX build shared); "
                         "`scnet-deploy doctor` lists them.", flag="--format", short="-f")
    precision: str = option("fp32", "fp32, fp16, bf16, int8 or a16w8 (alias w8a16), per backend: see "
                            "`scnet-deploy doctor`.")
    # The compute unit the engine is built for and verified on; None: the backend's first (its default)
    compute: str | None = option(None, "The compute unit the engine is built for and verified on (default: the "
                                 "backend's first; `scnet-deploy doctor` lists each backend's).", cli=Optional[str])
    # only for one-stage shift-MLP checkpoints, whose weights cannot tell x2 from x3
    scale: int | None = option(None, "Scale, only needed for one-stage shift-MLP checkpoints (2 or 3).",
                               cli=Optional[int])
    # "params" or "params_ema" when a BasicSR file has both
    param_key: str | None = option(None, "Which weights of a BasicSR file: params or params_ema.", cli=Optional[str])
    sizes: SizeRange = EXPORT_SIZES
    onnx: OnnxOptions = field(default_factory=OnnxOptions)
    # each backend's own export options (its ``options.Build``), by backend name; absent: its defaults
    backends: dict = field(default_factory=dict, hash=False)
    calib: CalibOptions = field(default_factory=CalibOptions)  # INT8 calibration data (precision "int8")
    # INT8: the accuracy gate on the hold-out (gate.AccuracyGate: layers fall back to float until every content type
    # passes, else the export fails): its PSNR-Y drift, dB (None opts out explicitly, recorded in the manifest), the
    # share of an image's pixels that may change visibly and the level that is visible
    budget_db: float | None = DEFAULT_DRIFT_DB
    max_visible: float = VISIBLE_SHARE
    visible_levels: int = VISIBLE_LEVELS
    tune: TuneOptions = field(default_factory=TuneOptions)  # --optimize latency: time candidate forms, keep fastest
    # INT8: keep an engine that is not faster than its backend's FP32 engine here (this machine is not the one it will
    # run on); recorded in the manifest's int8_speed. Off: such an engine is refused (int8_speed.py)
    keep_slower_int8: bool = option(False, "INT8: keep an engine no faster than its backend's FP32 one here (this "
                                    "machine is not its target; time it there with bench): recorded.")
    # sign the artifact (signing.sign: OpenSSF model-signing, an elliptic-curve private key in PEM)
    sign: Path | None = option(None, "Sign the artifact with this private key (PEM, elliptic curve; OpenSSF "
                               "model-signing): users check it with --trust on its public key.", cli=Optional[Path])

    def formats(self) -> list[str]:
        return [f.strip() for f in self.format.split(",") if f.strip()]

    def gate(self) -> AccuracyGate:
        return AccuracyGate(self.budget_db, self.max_visible, self.visible_levels)

    def backend(self, name: str, default):
        """Backend ``name``'s export options, or ``default`` (its ``Build()``) where none were given."""
        return self.backends.get(name, default)


def _paths(text):
    return tuple(Path(t) for t in text) if text else None


@dataclass(frozen=True)
class PipelineOptions:
    output: Path = Path("scnet-deploy-out")
    # validation images (DIR/HR ... or plain folders, several allowed); default: photos, line art, text, flat colours
    # and textures (VALIDATION_CONTENT), none of them used by calibration or the INT8 hold-out
    dataset: Path | tuple[Path, ...] | None = option(None, "Validation images, repeat for several content types "
                                                     "(default: photos, line art, text, flat colours, textures).",
                                                     cli=Optional[list[Path]], parse=_paths)
    # INT8 calibration (the export's INT8 options; 16 crops here, half the export's: the main job's time)
    calib: CalibOptions = field(default_factory=lambda: CalibOptions(count=16))
    budget_db: float | None = DEFAULT_DRIFT_DB  # the accuracy gate of INT8 engines and of the recommendation
    max_visible: float = VISIBLE_SHARE
    visible_levels: int = VISIBLE_LEVELS
    shapes: tuple[tuple[int, int], ...] = option(((90, 160), (180, 320)), "LR sizes to benchmark, HxW, "
                                                 "comma-separated (the largest decides the recommendation).",
                                                 flag="--size", cli=str, parse=parse_sizes, show=sizes_text)
    runs: int = option(5, "Timed runs per engine and size.")
    formats: tuple[str, ...] | None = option(None, "Formats to consider, comma-separated (default: every one).",
                                             cli=Optional[str], parse=parse_list, show=join_list)
    # each engine in the form measured fastest here, at the largest of ``shapes`` (the export's autotune options)
    tune: TuneOptions = field(default_factory=lambda: TuneOptions("latency"))
    max_memory_mb: int | None = None  # validation tiles and bench refuses beyond it; None: the memory model's default
    # The compute units engines are built for where a backend has several (each one's default, unless asked)
    compute: tuple[str, ...] | None = option(None, "Compute units for backends that have several, comma-separated "
                                             "(default: each one's first; see doctor).", cli=Optional[str],
                                             parse=parse_list, show=join_list)
    # INT8 engines from this quantization-aware checkpoint of the same model (scnet-deploy qat); None: the one shipped
    # beside the reference when the checkpoint is the reference, else INT8 is calibrated
    qat: Path | None = option(None, "INT8 engines from this quantization-aware checkpoint of the same model "
                              "(scnet-deploy qat; default: the shipped one for the reference, else calibrated).",
                              cli=Optional[Path])

    def gate(self) -> AccuracyGate:
        return AccuracyGate(self.budget_db, self.max_visible, self.visible_levels)
