"""Train the reference SCNet checkpoint (resumable; CPU or GPU).

    python -m scnet_deploy.model.training --data ../shared/datasets/BSD68/HR ../shared/datasets/SunHays80/HR \
        --eval ../shared/datasets/Set5 --out runs/reference --steps 16000

L1 loss, Adam, cosine learning-rate decay, random LR crops with flips and transposes, LR made by the project's
MATLAB-compatible bicubic. Initialisation: Kaiming for every conv, with each residual branch's last conv and
``conv_last`` scaled by 0.1 (the official all-x0.1 init learns nothing in the first hundreds of steps on a CPU
budget). On a CPU it trains the deploy form (depthwise-conv shift, the same function) in channels-last with bf16
autocast where the CPU has it; weights and Adam state stay float32. Evaluation is float32 on Set5.
State is saved atomically every ``--save-every`` steps; rerunning the same command resumes.
"""

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..imaging.datasets import load_dataset
from ..imaging.images import to_float_chw, to_u8_hwc
from ..imaging.metrics import psnr_ssim_y
from .network import SCNet, SCNetConfig
from .rewrites import replace_shift


@dataclass(frozen=True, kw_only=True)
class TrainOptions(SCNetConfig):
    """What to train (the architecture: ``SCNetConfig``'s fields, by keyword) and how."""

    data: list[str]
    out: str
    eval: str | None = None
    steps: int = 16000
    batch: int = 16
    patch: int = 32  # LR crop size
    lr: float = 1e-3
    min_lr: float = 1e-5
    seed: int = 0
    save_every: int = 250
    eval_every: int = 1000
    bf16: bool = True
    extra: dict = field(default_factory=dict)


def init_weights(model: SCNet) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for block in model.body:
            block.conv2.weight.mul_(0.1)
        model.conv_last.weight.mul_(0.1)


def load_pairs(folders: list[str], scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(pair.lr, pair.hr) for folder in folders for pair in load_dataset(folder, scale)]


def sample_batch(pairs, rng: np.random.Generator, batch: int, patch: int, scale: int):
    lrs, hrs = [], []
    for _ in range(batch):
        lr, hr = pairs[rng.integers(len(pairs))]
        y, x = rng.integers(lr.shape[0] - patch + 1), rng.integers(lr.shape[1] - patch + 1)
        lr_c = lr[y:y + patch, x:x + patch]
        hr_c = hr[y * scale:(y + patch) * scale, x * scale:(x + patch) * scale]
        k, flip = rng.integers(4), rng.integers(2)  # the 8 dihedral transforms
        lr_c, hr_c = np.rot90(lr_c, k), np.rot90(hr_c, k)
        if flip:
            lr_c, hr_c = lr_c[:, ::-1], hr_c[:, ::-1]
        lrs.append(lr_c)
        hrs.append(hr_c)
    to_t = lambda a: torch.from_numpy(np.stack(a).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return to_t(lrs), to_t(hrs)


def super_resolve_u8(model: nn.Module, lr_u8: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return to_u8_hwc(model(torch.from_numpy(to_float_chw(lr_u8)[None]))[0].numpy())


def evaluate(model: nn.Module, pairs) -> tuple[float, float]:
    scores = [psnr_ssim_y(super_resolve_u8(model, lr), hr, crop=model.scale) for lr, hr in pairs]
    return tuple(float(v) for v in np.mean(scores, axis=0))


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to ``path`` whole or not at all (a temporary beside it, renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resume(state_path: Path, train_model, optim, rng, device: str) -> tuple[int, float]:
    """(step, elapsed seconds) of a run to resume from ``state_path`` (its model, optimizer and RNG restored), or a
    new run's (0, 0.0)."""
    if not state_path.exists():
        return 0, 0.0
    state = torch.load(state_path, map_location=device, weights_only=False)  # our own file
    train_model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    rng.bit_generator.state = state["rng"]
    print(f"resumed at step {state['step']}")
    return state["step"], state["elapsed_s"]


def _step(train_model, optim, opts: TrainOptions, pairs, rng, step: int, device: str, use_bf16: bool):
    """One optimizer step on a sampled batch, at the cosine schedule's learning rate; returns (loss, lr)."""
    lr_now = opts.min_lr + 0.5 * (opts.lr - opts.min_lr) * (1 + math.cos(math.pi * step / opts.steps))
    for group in optim.param_groups:
        group["lr"] = lr_now
    lr_b, hr_b = sample_batch(pairs, rng, opts.batch, opts.patch, opts.scale)
    lr_b = lr_b.to(device).contiguous(memory_format=torch.channels_last)
    hr_b = hr_b.to(device)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
        sr = train_model(lr_b)
    loss = (sr.float() - hr_b).abs().mean()
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return loss, lr_now


def _evaluate_and_log(train_model, eval_pairs, step: int, elapsed: float, log) -> None:
    train_model.eval()
    p, s = evaluate(train_model.float(), eval_pairs)
    train_model.train()
    record = {"step": step, "set5_psnr_y": round(p, 3), "set5_ssim_y": round(s, 4), "elapsed_s": round(elapsed, 1)}
    print(json.dumps(record), flush=True)
    log.write(json.dumps(record) + "\n")
    log.flush()


def train(opts: TrainOptions) -> Path:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(opts.seed)
    config = SCNetConfig(**{f.name: getattr(opts, f.name) for f in fields(SCNetConfig)})
    model = SCNet(config)
    init_weights(model)
    train_model = replace_shift(model, "dwconv")  # same function, faster backward
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_model.to(device=device, memory_format=torch.channels_last)
    optim = torch.optim.Adam(train_model.parameters(), lr=opts.lr)
    rng = np.random.default_rng(opts.seed)
    state_path = out / "state.pt"
    step, elapsed = _resume(state_path, train_model, optim, rng, device)
    pairs = load_pairs(opts.data, opts.scale)
    eval_pairs = load_pairs([opts.eval], opts.scale) if opts.eval else []
    print(f"{len(pairs)} training images, {len(eval_pairs)} eval images, device {device}")
    use_bf16 = opts.bf16 and device == "cpu"
    with open(out / "log.jsonl", "a") as log:
        while step < opts.steps:
            t0 = time.time()
            loss, lr_now = _step(train_model, optim, opts, pairs, rng, step, device, use_bf16)
            step += 1
            elapsed += time.time() - t0
            if step % 50 == 0:
                print(f"step {step} loss {loss.item():.5f} lr {lr_now:.2e} {elapsed / step:.3f} s/step", flush=True)
            if (step % opts.eval_every == 0 or step == opts.steps) and eval_pairs:
                _evaluate_and_log(train_model, eval_pairs, step, elapsed, log)
            if step % opts.save_every == 0 or step == opts.steps:
                save_atomic({"model": train_model.state_dict(), "optim": optim.state_dict(),
                              "rng": rng.bit_generator.state, "step": step, "elapsed_s": elapsed,
                              "options": asdict(opts)}, state_path)
    # Back to the official module layout and parameter names.
    sd = {k: v.detach().float().cpu().contiguous() for k, v in train_model.state_dict().items()}
    model.load_state_dict(sd)
    final = out / "weights.pth"
    save_atomic({"params": model.state_dict()}, final)
    return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--eval")
    for name, default in [("steps", 16000), ("batch", 16), ("patch", 32), ("seed", 0), ("save-every", 250),
                          ("eval-every", 1000), ("num-feat", 64), ("num-block", 16), ("scale", 4)]:
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    args = vars(parser.parse_args(argv))
    opts = TrainOptions(**{k.replace("-", "_"): v for k, v in args.items()})
    print(train(opts))


if __name__ == "__main__":
    main()
