"""Core ML's own export options (``Build``): flexible shapes (a range, or enumerated sizes for the Neural Engine) and
the deployment target. No import of coremltools here: the CLI reads these to make its options."""

from dataclasses import dataclass

from scnet_deploy.options import option, parse_sizes, sizes_text


@dataclass(frozen=True)
class Build:
    shapes: str = option("range", "Core ML flexible shapes: range or enumerated (runs on the Neural Engine).",
                         flag="--coreml-shapes")
    enumerated: tuple[tuple[int, int], ...] = option(
        ((180, 320), (360, 640), (540, 960)), "Core ML enumerated LR sizes, HxW, comma-separated.",
        flag="--coreml-sizes", cli=str, parse=lambda text: parse_sizes(text, "--coreml-sizes"), show=sizes_text)
    # ML Program with RangeDim/EnumeratedShapes needs iOS15+; iOS17 for int8 later
    deployment_target: str = option("iOS17", "Core ML minimum deployment target.", flag="--coreml-target")
