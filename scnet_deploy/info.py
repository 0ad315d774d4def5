"""The ``info`` verb: what a checkpoint is, from its weights alone."""

from pathlib import Path

from . import callable_verb



SIZE = (180, 320)  # the LR size (height, width) MACs are counted at, unless asked


def info(checkpoint: str | Path, size: tuple[int, int] | None = SIZE, scale: int | None = None,
         param_key: str | None = None) -> dict:
    """Architecture, parameter count and MACs (per LR pixel, and for one LR ``size`` = (height, width))."""
    from .errors import require_export_stack

    require_export_stack("info (it reads a checkpoint)")
    from .model.checkpoint import load_checkpoint
    from .model.complexity import count_macs, macs_per_lr_pixel

    ckpt = load_checkpoint(checkpoint, scale=scale, param_key=param_key)
    spec = ckpt.spec
    result = {
        "checkpoint": str(ckpt.path),
        "sha256": ckpt.sha256,
        "param_key": ckpt.param_key,
        **spec.to_dict(),
        "macs_per_lr_pixel": macs_per_lr_pixel(ckpt.model, spec.num_in_ch),
    }
    if ckpt.quant is not None:  # a quantization-aware checkpoint (scnet-deploy qat): what export --int8 will use
        result["quantization_aware"] = {**ckpt.quant.info, "activation_ranges": len(ckpt.quant.inputs),
                                        "weight_ranges": len(ckpt.quant.weights),
                                        "quantized_convs": sorted(ckpt.quant.inputs)}
    if size is not None:
        h, w = size
        result["size"] = {"lr": [h, w], "sr": [h * spec.scale, w * spec.scale],
                          "macs": count_macs(ckpt.model, h, w, spec.num_in_ch)}
    return result


callable_verb(__name__)  # scnet_deploy.info(...) calls the verb, imported or not
