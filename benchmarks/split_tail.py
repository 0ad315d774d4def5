"""Exact split execution, measured before it is built: the body whole, the x4 tail on tiles.

SCNet-T's body (conv_first and 16 blocks) runs at LR; its tail (two x2 upsampler stages, conv_hr, conv_last and the
image skip) writes 64-channel maps at 2x and 4x, far beyond the caches. This script exports the reference checkpoint
(dwconv+conv_before_upsample) as three OpenVINO models: the whole network, the body (LR image -> 64 features), and
the tail (features and image, concatenated as 67 LR channels -> SR image). The tail runs on windows of the same size
placed inside the frame (a window at the frame's border keeps that border, so the output is exact; elsewhere the
halo must cover the tail's receptive radius, checked against the whole network), either one window per call or all
windows of a frame as one batch. Each way is timed in turn with the whole network, at 180x320 -> 720p and 540x960
-> 4K, in f32 and bf16.

    python benchmarks/split_tail.py [--sizes 180x320,540x960] [--runs 5] [--halo 4] [--out FILE.md]
"""

import argparse
import sys

import numpy as np

from _output import emit  # benchmarks/ is on sys.path when a script here is run
from ov_int8_tail import to_ir


def parts(model):
    """(body, tail) modules of a deploy-form SCNet: body(x) -> features; tail(cat(features, x)) -> SR."""
    from torch import nn

    class Body(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.body(self.m.lrelu(self.m.conv_first(x)))

    class Tail(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):  # x: the features and the image, concatenated ("x": the exporter's input name)
            features, image = x[:, :-3], x[:, -3:]
            for upconv in self.m.upconvs():
                features = self.m.lrelu(upconv(features))
            return self.m.conv_last(self.m.lrelu(self.m.conv_hr(features))) + self.m.skip(image)

    return Body(model).eval(), Tail(model).eval()


def compiled(module, in_ch: int, path, hint: str):
    import openvino as ov

    request = ov.Core().compile_model(to_ir(module, path, in_ch), "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()

    def infer(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    infer.request = request
    return infer


def windows(length: int, tile: int, halo: int) -> list[tuple[int, int, int]]:
    """(tile start, window start, window length) along one axis: windows of one size inside [0, length)."""
    size = min(length, tile + 2 * halo)
    return [(start, min(max(start - halo, 0), length - size), size) for start in range(0, length, tile)]


def split_infer(body, tail, x: np.ndarray, tile: tuple[int, int], halo: int, scale: int, batched: bool):
    features = body(x)
    y = np.concatenate([features, x], axis=1)
    h, w = x.shape[2:]
    rows, cols = windows(h, tile[0], halo), windows(w, tile[1], halo)
    crops = [(r, c) for r in rows for c in cols]
    inputs = [y[:, :, r[1]:r[1] + r[2], c[1]:c[1] + c[2]] for r, c in crops]
    if batched:
        outs = list(tail(np.ascontiguousarray(np.concatenate(inputs))))
        outs = [o[None] for o in outs]
    else:
        outs = [tail(np.ascontiguousarray(i)) for i in inputs]
    out = np.empty((1, 3, h * scale, w * scale), np.float32)
    for (r, c), o in zip(crops, outs):
        th, tw = min(tile[0], h - r[0]), min(tile[1], w - c[0])
        oy, ox = (r[0] - r[1]) * scale, (c[0] - c[1]) * scale
        out[:, :, r[0] * scale:(r[0] + th) * scale, c[0] * scale:(c[0] + tw) * scale] = \
            o[:, :, oy:oy + th * scale, ox:ox + tw * scale]
    return out


def main(argv=None) -> int:
    import tempfile
    from pathlib import Path

    from scnet_deploy.model.checkpoint import load_checkpoint
    from scnet_deploy.doctor import machine, machine_line
    from scnet_deploy.pipeline import reference_checkpoint
    from scnet_deploy.model.rewrites import DeployOptions, to_deploy_form
    from scnet_deploy.timing import in_turn

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="180x320,540x960")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--halo", type=int, default=4)
    p.add_argument("--out")
    args = p.parse_args(argv)
    ckpt = load_checkpoint(reference_checkpoint())
    scale = ckpt.spec.scale
    model = to_deploy_form(ckpt.model, DeployOptions("dwconv", conv_before_upsample=True))
    body_module, tail_module = parts(model)
    lines = [f"Machine: {machine_line(machine())}. SCNet-T x4 reference, dwconv+conv_before_upsample, OpenVINO CPU, "
             f"latency hint; tail windows with a halo of {args.halo} LR px (max abs diff to the whole network shown); "
             f"median of {args.runs} runs, every way in turn with the whole network.", "",
             "| LR size | precision | way | median ms | x whole | max abs diff |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for hint in ("f32", "bf16"):
            whole = compiled(model, 3, Path(tmp) / "whole.onnx", hint)
            body = compiled(body_module, 3, Path(tmp) / "body.onnx", hint)
            tail = compiled(tail_module, 3 + 64, Path(tmp) / "tail.onnx", hint)
            for size in args.sizes.split(","):
                h, w = (int(v) for v in size.split("x"))
                x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
                reference = whole(x)
                ways = {"whole": whole}
                for tile in ((h // 4, w // 4), (h // 2, w // 2)):
                    for batched in (False, True):
                        calls = "one batch" if batched else "one call each"
                        name = f"split, tail on {tile[0]}x{tile[1]} tiles, {calls}"
                        ways[name] = (lambda x, tile=tile, batched=batched:
                                      split_infer(body, tail, x, tile, args.halo, scale, batched))
                diffs = {name: float(np.abs(infer(x) - reference).max()) for name, infer in ways.items()}
                timings = in_turn(ways, x, args.runs, warmup=1, drop_above=None)
                for name in ways:
                    ms = timings[name]["median_ms"]
                    lines.append(f"| {h}x{w} | {hint} | {name} | {ms:.1f} | "
                                 f"{timings['whole']['median_ms'] / ms:.2f}x | {diffs[name]:.1e} |")
    return emit(lines, args.out)


if __name__ == "__main__":
    sys.exit(main())
