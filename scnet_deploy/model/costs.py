"""What each stage of SCNet costs at an LR size, from the architecture alone: multiply-accumulates and the bytes a
runtime that runs each operator on its own moves (every input and output map read or written once, float32). The
profile sets each stage's measured time against these and this machine's rooflines (``bench --profile``)."""

from .stages import stage_scales

FLOAT = 4  # bytes


def stage_costs(arch: dict, height: int, width: int, element_bytes: int = FLOAT) -> dict[str, dict]:
    """{stage: {"macs", "bytes"}} at LR ``height`` x ``width``: head, body.0 .. body.N-1, upsampler, tail, skip;
    ``element_bytes``: per feature-map element as the engine computes (4 float32, 2 bf16/fp16, 1 int8)."""
    nf, s, cin, cout = arch["num_feat"], arch["scale"], arch.get("num_in_ch", 3), arch.get("num_out_ch", 3)
    lr = height * width
    hr = lr * s * s
    costs = {"head": _cost(lr * cin * nf, (cin + nf) * lr + 2 * nf * lr, element_bytes)}  # conv, LeakyReLU
    block = _cost(2 * lr * nf * nf + 9 * lr * nf,  # two 1x1 convs, the shift as a 3x3 depthwise at most
                  11 * nf * lr, element_bytes)  # conv1 in/out, shift in/out, ReLU in/out, conv2 in/out, add 2 in/1 out
    for i in range(arch["num_block"]):
        costs[f"body.{i}"] = dict(block)
    costs["upsampler"] = _upsampler(arch, lr, element_bytes)
    costs["tail"] = _cost(hr * nf * nf + hr * nf * cout, 2 * nf * hr + 2 * nf * hr + (nf + cout) * hr, element_bytes)
    costs["skip"] = _cost(4 * hr * cin, cin * lr + cin * hr + 3 * cin * hr, FLOAT)  # image space: float; the add
    return costs


def _upsampler(arch: dict, lr: int, element_bytes: int) -> dict:
    nf, s = arch["num_feat"], arch["scale"]
    factors = stage_scales(s)
    macs = maps = 0
    pixels = lr
    for f in factors:
        out = pixels * f * f
        if arch.get("upsampler", "mlp") == "mlp":  # resize, conv, LeakyReLU, shift, conv at the stage's output size
            macs += 4 * out * nf + 2 * out * nf * nf + 9 * out * nf
            maps += pixels * nf + 9 * out * nf
        else:  # conv, LeakyReLU, shift, conv to nf*f*f, pixel shuffle at the stage's input size
            macs += pixels * nf * nf + 9 * pixels * nf + pixels * nf * nf * f * f
            maps += 7 * pixels * nf + 3 * out * nf
        maps += 2 * out * nf  # the LeakyReLU after the stage
        pixels = out
    return _cost(macs, maps, element_bytes)


def _cost(macs: int, maps: int, element_bytes: int) -> dict:
    return {"macs": int(macs), "bytes": int(maps * element_bytes)}
