"""Quantization-aware fine-tuning with NVIDIA's ModelOpt (``modelopt.torch.quantization``), distilled from FP32.

Why ModelOpt: its INT8 scheme is the one every INT8 backend of ours accepts (symmetric int8 activations per tensor,
symmetric int8 weights per output channel: TensorRT's, which ONNX Runtime, OpenVINO and QNN also take), and its
ranges are plain ``amax`` buffers per convolution (``<conv>.input_quantizer``, ``<conv>.weight_quantizer``), which
the checkpoint carries under official module names and the exporters turn into Q/DQ scales without calibrating.
NNCF's ranges are learned per insertion point and unsigned after ReLU (uint8: not TensorRT's); AIMET's and torchao's
export paths are their own graphs, not our verified hub graph.

The student is the checkpoint in its ``dwconv`` form (the same function; its backward is fast), its channels first
equalized (``equalization.py``: the same function, each per-tensor range shared evenly by its channels), and the
convolutions ``options.quantize`` names quantized (``quantized_convs``: by default those at the output resolution;
never the first, which reads the image: a symmetric int8 step of 1/127 would halve its 8-bit levels). Ranges are
calibrated once (the 99.99th percentile of each input over half photo, half generated patches), then fixed; the
weights learn. Loss: L1 of the fake-quantized student to the FP32 teacher, plus L1 of the student's own float
forward to the teacher, so the checkpoint's FP32 engine (the accuracy gate's reference) stays where the INT8 engines
are. Patches: LR crops of the given images (HR, bicubic-degraded: no HR is needed for distillation) and, for
``content_share`` of each batch, of generated line art, text, flat colours and textures (the hold-out's content).
Float32 throughout: fake quantization's 255-step grid needs float32's precision (bf16 keeps 8 significant bits).
"""

import contextlib
import copy
import hashlib
import io
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from scnet_deploy.calibration.content import GENERATORS
from scnet_deploy.calibration.equalization import ALPHA, equalize, observe_inputs
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.imaging.images import list_images, read_rgb_u8
from scnet_deploy.imaging.resize import bicubic_degrade
from scnet_deploy.model.quant_ranges import QuantRanges, SCHEME
from scnet_deploy.model.network import ResidualBlockShift
from scnet_deploy.model.rewrites import replace_shift
from scnet_deploy.model.training import save_atomic
from scnet_deploy.progress import Progress

FLOAT_CONVS = ("conv_first",)  # read the image: kept float (module docstring)
GENERATED_SEEDS = range(1000, 1012)  # per generator; none the hold-out, calibration or pipeline validation use
CALIBRATION_BATCHES = 16
CALIBRATION_CONTENT_SHARE = 0.5  # of the patches that equalize and set the ranges: generated content
RANGE_PERCENTILE = 99.99


def _config(float_convs: tuple[str, ...] = FLOAT_CONVS):
    import modelopt.torch.quantization as mtq

    config = copy.deepcopy(mtq.INT8_DEFAULT_CFG)  # weights per output channel, inputs per tensor, max calibration
    config["quant_cfg"] += [{"quantizer_name": f"{name}.*", "enable": False} for name in float_convs]
    return config


def quantized_convs(model, which: str) -> tuple[str, ...]:
    """Official names of the learned convolutions ``which`` ("hr" or "all") quantizes in ``model`` (any form).

    "all": every one but the first. "hr": the two that write features at the output resolution, the last upsampling
    stage's last convolution and ``conv_hr``: 36% of SCNet-T x4's multiply-adds (in the export's fastest forms, where
    the upsampling stages' first convolutions run before their upsampling, 43%), and within the accuracy gate on line
    art and text, where quantizing the residual body's 32 convolutions too moves 1-3% of such images' pixels 4+ levels
    and the last stage's first convolution alone takes line art over it (benchmarks/results/qat_recipe.md).
    ``conv_last`` writes the image itself: its input's rounding costs the most of any one convolution's, for under
    1% of the work."""
    learned = _learned(model)
    if which == "all":
        return tuple(n for n in learned if n not in FLOAT_CONVS)
    last = f"upconv{len(model.upconvs())}."
    return ([n for n in learned if n.startswith(last)][-1], "conv_hr")


def float_convs_of(model, which: str) -> tuple[str, ...]:
    """The learned convolutions ``which`` leaves float (``quantized_convs``' complement)."""
    quantized = quantized_convs(model, which)
    return tuple(n for n in _learned(model) if n not in quantized)


def _learned(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]


def training_images(folders: list[Path], scale: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """(photo LR images, generated LR images, the data's hash: every file's bytes and the generators' seeds)."""
    digest = hashlib.sha256()
    photos = []
    for folder in folders:
        folder = folder / "HR" if (folder / "HR").is_dir() else folder  # a dataset's DIR/HR layout
        found = list_images(folder)
        if not found:
            raise ScnetDeployError(f"--data '{folder}' holds no images; pass folders of HR images (PNG, JPEG, ...).")
        for path in found:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            photos.append(bicubic_degrade(read_rgb_u8(path), scale))
    digest.update(json.dumps([sorted(GENERATORS), list(GENERATED_SEEDS)]).encode())
    generated = [bicubic_degrade(make(seed), scale) for make in GENERATORS.values() for seed in GENERATED_SEEDS]
    return photos, generated, digest.hexdigest()


def sample(photos, generated, rng: np.random.Generator, batch: int, patch: int, content_share: float):
    crops = []
    n_generated = int(round(batch * content_share)) if generated else 0
    for i in range(batch):
        pool = generated if i < n_generated else photos
        lr = pool[rng.integers(len(pool))]
        p = min(patch, lr.shape[0], lr.shape[1])
        y, x = rng.integers(lr.shape[0] - p + 1), rng.integers(lr.shape[1] - p + 1)
        crop = np.rot90(lr[y:y + p, x:x + p], rng.integers(4))
        crops.append(crop[:, ::-1] if rng.integers(2) else crop)
    p = min(c.shape[0] for c in crops)
    return torch.from_numpy(np.stack([c[:p, :p] for c in crops]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)


def quantize_residual_streams(student) -> int:
    """Make each residual block's add read its input as quantized by its first convolution's input quantizer (the
    same ModelOpt quantizer, applied once more to the same tensor: idempotent on its grid), as ONNX Runtime's fast
    INT8 graph computes it (the add reads the dequantized tensor, which lets ORT fuse the block: 555 ms against
    1330 ms with float adds at 180x320, AMD EPYC, 2 vCPUs; OpenVINO is as fast either way). It costs accuracy: the
    stream is quantized 16 times (``--quantized-residual``; off by default). Returns how many blocks."""
    blocks = [m for m in student.modules() if isinstance(m, ResidualBlockShift)]
    for block in blocks:
        def forward(x, block=block):
            x = block.conv1.input_quantizer(x)
            return x + block.conv2(block.relu(block.shift(block.conv1(x))))

        block.forward = forward
    return len(blocks)


def quantizers(model) -> list:
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [m for m in model.modules() if isinstance(m, TensorQuantizer) and m.is_enabled]


def ranges_of(model, info: dict) -> QuantRanges:
    """The calibrated-then-fixed ranges of the quantized student, under official module names."""
    inputs, weights = {}, {}
    for name, module in model.named_modules():
        q_in, q_w = getattr(module, "input_quantizer", None), getattr(module, "weight_quantizer", None)
        if q_in is not None and q_in.is_enabled and q_in.amax is not None:
            inputs[name] = float(q_in.amax.detach().float().reshape(-1)[0])
        if q_w is not None and q_w.is_enabled and q_w.amax is not None:
            weights[name] = q_w.amax.detach().float().reshape(-1).cpu().numpy()
    return QuantRanges(inputs, weights, info)


@contextlib.contextmanager
def _quiet():
    """ModelOpt's own chatter off: its "Inserted N quantizers" line, and its warning (on import, or lazily on the
    first quantize) that transformers, for Hugging Face modules, is missing: neither is ours to show."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _quantized_student(teacher, photos, generated, rng, options, device):
    """A copy of ``teacher`` (channel-equalized where ``options.equalize``) with ModelOpt's fake quantizers, their
    activation ranges the 99.99th percentile of each input over half photo, half generated patches."""
    import modelopt.torch.quantization as mtq

    # photos and generated content alike: the photos' ranges alone clip flat colours' and line art's saturated
    # extremes; the percentile keeps the generated content's rarest extremes from coarsening every step
    calibration = [sample(photos, generated, rng, options.batch, options.patch, CALIBRATION_CONTENT_SHARE).to(device)
                   for _ in range(CALIBRATION_BATCHES)]
    student = equalize(teacher, calibration) if options.equalize else copy.deepcopy(teacher)  # a copy either way
    for p in student.parameters():
        p.requires_grad_(True)
    with torch.no_grad(), _quiet():  # weights' ranges (per channel, max); inputs' replaced just below
        mtq.quantize(student, _config(float_convs_of(teacher, options.quantize)), lambda m: [m(x) for x in calibration])
    percentile_ranges(student, calibration)
    if options.quantized_residual:
        quantize_residual_streams(student)
    return student


def percentile_ranges(student, batches: list[torch.Tensor], percentile: float = RANGE_PERCENTILE) -> None:
    """Set each quantized convolution's input range to the ``percentile`` of its absolute float input over
    ``batches`` (ModelOpt's HistogramCalibrator: TensorRT's percentile method). The maximum lets one saturated edge
    set the step of a whole tensor; the percentile clips the rarest extremes instead (benchmarks/README.md,
    "Quantization-aware INT8")."""
    from modelopt.torch.quantization.calib import HistogramCalibrator

    convs = {m: HistogramCalibrator(num_bits=8, axis=None, unsigned=False) for m in student.modules()
             if getattr(m, "input_quantizer", None) is not None and m.input_quantizer.is_enabled}
    fake = quantizers(student)
    for q in fake:  # the float inputs
        q.disable()
    try:
        observe_inputs(student, list(convs), batches, lambda conv, x: convs[conv].collect(x))
    finally:
        for q in fake:
            q.enable()
    for m, calibrator in convs.items():
        amax = calibrator.compute_amax("percentile", percentile=percentile)
        m.input_quantizer.amax = torch.as_tensor(float(amax), device=m.weight.device)


def _resume(state_path: Path, key: str, student, optim, rng, device: str) -> tuple[int, float]:
    """(step, seconds) of the run saved at ``state_path`` with the same ``key``, its state restored; else (0, 0)."""
    if not state_path.exists():
        return 0, 0.0
    state = torch.load(state_path, map_location=device, weights_only=False)  # our own file, beside the output
    if state.get("identity") != key:
        return 0, 0.0
    student.load_state_dict(state["student"])
    optim.load_state_dict(state["optim"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    return state["step"], state["elapsed_s"]


def _distil(teacher, student, fake: list, optim, x) -> float:
    """One step: L1 of the fake-quantized student and of its float forward to the teacher; returns the loss."""
    with torch.no_grad():
        target = teacher(x)
    quantized = student(x)
    for q in fake:
        q.disable()
    floating = student(x)
    for q in fake:
        q.enable()
    loss = (quantized - target).abs().mean() + (floating - target).abs().mean()
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return float(loss.detach())


def fine_tune(checkpoint, options, progress) -> tuple[dict, QuantRanges]:
    """Fine-tune ``checkpoint`` (a loaded ``Checkpoint``) as ``options`` (``scnet_deploy.qat.QatOptions``) ask;
    returns (the weights under official names, the ranges with their record). Resumes from ``options.state_path``
    where a run of the same options left one; saves it every ``options.save_every`` steps."""
    with _quiet():
        import modelopt

    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    photos, generated, data_hash = training_images([Path(d) for d in options.data], checkpoint.spec.scale)
    teacher = replace_shift(checkpoint.model, "dwconv").eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = _quantized_student(teacher, photos, generated, rng, options, device)
    fake = quantizers(student)
    optim = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=options.lr)
    key, state_path = options.identity(checkpoint.sha256, data_hash), Path(options.state_path)
    step, elapsed = _resume(state_path, key, student, optim, rng, device)
    if step:
        progress(Progress(f"resumed at step {step} of {options.steps}", done=step, total=options.steps))
    student.train()
    loss_now = None  # no step taken: --steps 0
    while step < options.steps:
        t0 = time.perf_counter()
        for group in optim.param_groups:  # cosine decay to a tenth
            group["lr"] = options.lr * (0.55 + 0.45 * math.cos(math.pi * step / options.steps))
        x = sample(photos, generated, rng, options.batch, options.patch, options.content_share).to(device)
        loss_now = _distil(teacher, student, fake, optim, x)
        step += 1
        elapsed += time.perf_counter() - t0
        eta = elapsed / step * (options.steps - step)
        progress(Progress(f"qat: loss {loss_now:.5f}, {elapsed / step:.2f} s/step, ETA {eta / 60:.1f} min",
                          done=step, total=options.steps))
        if step % options.save_every == 0 or step == options.steps:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            save_atomic({"identity": key, "student": student.state_dict(), "optim": optim.state_dict(),
                          "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                          "elapsed_s": elapsed}, state_path)
    official = set(checkpoint.model.state_dict())
    weights = {k: v.detach().float().cpu().contiguous() for k, v in student.state_dict().items() if k in official}
    info = {"scheme": SCHEME, "library": f"nvidia-modelopt {modelopt.__version__}", "steps": options.steps,
            "batch": options.batch, "patch": options.patch, "lr": options.lr, "seed": options.seed,
            "content_share": options.content_share, "data": [str(d) for d in options.data],
            "data_sha256": data_hash, "teacher_sha256": checkpoint.sha256, "seconds": round(elapsed, 1),
            "device": device, "quantize": options.quantize,
            "float_convs": list(float_convs_of(checkpoint.model, options.quantize)), "final_loss": loss_now,
            "scale": checkpoint.spec.scale,  # x2 and x3 shift-MLP weights look alike: the loader reads it here
            "residual_stream": "quantized" if options.quantized_residual else "float",
            "ranges": {"method": "percentile", "percentile": RANGE_PERCENTILE,
                       "content_share": CALIBRATION_CONTENT_SHARE, "patches": CALIBRATION_BATCHES * options.batch},
            "equalization": ({"alpha": ALPHA, "content_share": CALIBRATION_CONTENT_SHARE} if options.equalize
                             else None),
            "loss": "L1(fake-quantized student, FP32 teacher) + L1(float student, FP32 teacher)"}
    return weights, ranges_of(student, info)
