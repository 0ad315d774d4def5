import json
from pathlib import Path

import pytest
import torch

from scnet_deploy.model import SCNet, SCNetConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "official"
DATASETS = SHARED / "datasets"


def official_cases() -> list[dict]:
    manifest = FIXTURES / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else []


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the project's shared test data; see README)")
    return path


def tiny_model(scale: int = 2, upsampler: str = "mlp", num_feat: int = 16, num_block: int = 2,
               seed: int = 0) -> SCNet:
    """A random-weight SCNet small enough for fast tests; every weight random so every layer matters."""
    torch.manual_seed(seed)
    model = SCNet(SCNetConfig(num_feat, num_block, scale, upsampler))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def smooth_hr_folder(root: Path, count: int, size: tuple[int, int]) -> Path:
    """A DIR/HR folder of ``count`` smooth images of ``size`` (width, height), so an SR model's output is
    meaningful; the same images for the same arguments."""
    import numpy as np
    from PIL import Image

    (root / "HR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        base = rng.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        Image.fromarray(base).resize(size, Image.BICUBIC).save(root / "HR" / f"img{i}.png")
    return root


def save_basicsr(model: torch.nn.Module, path: Path, key: str = "params") -> Path:
    torch.save({key: model.state_dict()}, path)
    return path


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    return save_basicsr(tiny_model(scale=4), tmp_path / "tiny.pth")
