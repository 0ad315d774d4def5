"""The official upsampler's stages, as arithmetic without PyTorch: the network builds them, and the profile's cost
model (``model/costs.py``, read on torch-free devices) counts them."""


def stage_scales(scale: int) -> list[int]:
    """The per-stage factors of the official upsampler: x2/x3 one stage, x4 two x2 stages, x8 three."""
    return {2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]
