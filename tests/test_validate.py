"""scnet_deploy/validate.py: the protocol, drift, several datasets, budget exit codes, NaN and collapse flags,
unreadable images named and excluded, memory collected between models."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cli, DATASETS, folder_with_a_corrupt_second_image, need, save_basicsr, tiny_model
from scnet_deploy.errors import ScnetDeployError
from scnet_deploy.model.checkpoint import NonFiniteWeightsWarning
from scnet_deploy.validate import validate, ValidateOptions


def test_nan_guard_in_validate(tmp_path, monkeypatch):
    from scnet_deploy import validate as validate_module

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "HR" / "a.png")
    sd = tiny_model(2, "pixelshuffle").state_dict()
    sd["conv_last.bias"][:] = float("nan")
    torch.save(sd, tmp_path / "nan_x2.pth")
    with pytest.warns(NonFiniteWeightsWarning):
        result = validate_module.validate([tmp_path / "nan_x2.pth"], validate_module.ValidateOptions(tmp_path, 2))
    assert result["models"][0]["nonfinite_images"] == ["a"] and result["models"][0]["per_image"][0]["nonfinite"]


def test_validate_flags_collapsed_constant_outputs(tmp_path):
    from scnet_deploy.validate import ValidateOptions, validate

    (tmp_path / "HR").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "HR" / "a_black.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "HR" / "b.png")
    flat = {k: torch.zeros_like(v) for k, v in tiny_model(2, "pixelshuffle").state_dict().items()}
    torch.save(flat, tmp_path / "flat_x2.pth")  # zero weights on a black image: a constant output
    live = save_basicsr(tiny_model(2, "pixelshuffle"), tmp_path / "live_x2.pth")
    result = validate([live, tmp_path / "flat_x2.pth"], ValidateOptions(tmp_path, 2))
    by_path = {m["path"]: m for m in result["models"]}
    assert "a_black" in by_path[str(tmp_path / "flat_x2.pth")]["collapsed_images"]
    assert "b" not in by_path[str(live)]["collapsed_images"]


def test_validate_names_and_excludes_an_unreadable_image(tiny_ckpt_module, tmp_path):
    import json

    names = folder_with_a_corrupt_second_image(tmp_path / "set")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "set" / "tiny.png")  # too small for SSIM
    out = cli("validate", tiny_ckpt_module, "--dataset", tmp_path / "set", "--scale", "2", "--json",
              tmp_path / "r.json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["images"] == len(names) - 1
    assert [Path(u["path"]).name for u in result["unreadable_images"]] == ["1.png", "tiny.png"]
    assert "too small to score" in result["unreadable_images"][1]["error"]
    assert {r["name"] for r in result["models"][0]["per_image"]} == {Path(n).stem for n in names if n != "1.png"}
    assert "unreadable" in out.stderr and "1.png" in out.stderr


def test_validate_drift_and_per_image(dataset, models):
    ref, other, artifact = models
    result = validate([ref, artifact, other], ValidateOptions(dataset, 4, bicubic=True, budget_db=0.1))
    by_name = {m["path"]: m for m in result["models"] if m["path"]}
    assert by_name[str(ref)]["reference"] and by_name[str(ref)]["drift_db"] == 0
    onnx = by_name[str(artifact)]
    assert abs(onnx["drift_db"]) < 1e-3 and onnx["max_abs_diff"] < 1e-4 and onnx["within_budget"]
    assert {"name", "psnr_y", "ssim_y", "drift_db"} <= set(onnx["per_image"][0]) and len(onnx["per_image"]) == 3
    bad = by_name[str(other)]
    assert bad["drift_db"] != 0 and bad["worst_image"]["name"].startswith("img")
    assert result["passed"] == bad["within_budget"]
    assert result["models"][-1]["kind"] == "method" and "within_budget" not in result["models"][-1]


def test_validation_collects_the_garbage_each_model_leaves_scanning_only_new_objects():
    """What exists when validation starts is frozen (not scanned by the collection after each model: after the
    pipeline's builds that scan took 0.4 s a model); cycles made during it, a closed engine's, are still collected;
    afterwards nothing stays frozen."""
    import gc
    import weakref

    from scnet_deploy.validate import _collecting_only_new_objects, _release_freed_memory

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    with _collecting_only_new_objects():
        assert gc.get_freeze_count() > 0
        made = cycle()
        _release_freed_memory()
        assert made() is None
    assert gc.get_freeze_count() == 0


def test_artifact_alone_finds_its_reference(dataset, models):
    _, _, artifact = models
    result = validate([artifact], ValidateOptions(dataset, 4))
    assert result["models"][0]["reference"] and result["models"][0]["implicit"]
    assert abs(result["models"][1]["drift_db"]) < 1e-3


def test_validate_several_datasets_names_the_worst(dataset, second_dataset, models):
    ref, other, artifact = models
    result = validate([ref, artifact, other], ValidateOptions((dataset, second_dataset), 4, budget_db=0.1))
    names = [d["name"] for d in result["datasets"]]
    assert names == [dataset.name, second_dataset.name] and result["images"] == 5
    assert [d["images"] for d in result["datasets"]] == [3, 2]
    bad = next(m for m in result["models"] if m["path"] == str(other))
    per_set = {d["name"]: next(m for m in d["models"] if m["path"] == str(other))["drift_db"]
               for d in result["datasets"]}
    # a model's drift is that of its worst dataset, which is named; its worst image is the worst over both
    assert bad["drift_db"] == min(per_set.values()) and bad["worst_dataset"] == min(per_set, key=per_set.get)
    assert bad["worst_image"]["drift_db"] == min(r["drift_db"] for r in bad["per_image"])
    assert {r["dataset"] for r in bad["per_image"]} == set(names)
    assert result["passed"] == bad["within_budget"]
    with pytest.raises(ScnetDeployError, match="different names"):
        validate([ref], ValidateOptions((dataset, dataset), 4))


def test_validate_cli_budget_exit_codes(dataset, models, tmp_path):
    ref, other, artifact = models
    ok = cli("validate", ref, artifact, "--dataset", dataset, "--scale", "4", "--budget", "0.05", "--json",
             tmp_path / "v.json", "--csv", tmp_path / "v.csv")
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "v.json").read_text())
    assert all({"psnr_y", "ssim_y", "drift_db", "per_image"} <= set(m) for m in data["models"])
    assert (tmp_path / "v.csv").read_text().startswith("model,image,psnr_y,ssim_y,drift_db")
    over = cli("validate", ref, other, "--dataset", dataset, "--scale", "4", "--budget", "0.05")
    assert over.returncode == 1 and "over budget" in over.stderr
    wrong = cli("validate", ref, "--dataset", dataset, "--scale", "2")
    assert wrong.returncode == 2 and "x4 model" in wrong.stderr


def test_bicubic_rows_on_set5_via_cli(tmp_path):
    need(DATASETS / "Set5")
    out = cli("validate", "--dataset", DATASETS / "Set5", "--scale", "3", "--method", "bicubic", "--json",
              tmp_path / "b.json")
    assert out.returncode == 0, out.stderr
    row = json.loads((tmp_path / "b.json").read_text())["models"][0]
    assert abs(row["psnr_y"] - 30.39) <= 0.02 and abs(row["ssim_y"] - 0.8682) <= 0.002


def test_the_gate_judges_each_content_type_and_only_those_named(dataset, second_dataset, models):
    """Each dataset is judged by the accuracy gate (visible change and drift) and the worst decides; --content
    judges only the named ones and shows the rest. An artifact of the reference passes everywhere."""
    ref, other, artifact = models
    both = validate([ref, artifact, other], ValidateOptions((dataset, second_dataset), 4, budget_db=0.1))
    bad = next(m for m in both["models"] if m["path"] == str(other))
    good = next(m for m in both["models"] if m["path"] == str(artifact))
    assert set(bad["gate"]) == {dataset.name, second_dataset.name} and not bad["within_budget"]
    assert bad["visible_share"] > 0.5 and "4+ levels off FP32" in bad["gate_failure"]
    assert good["within_budget"] and good["visible_share"] == 0
    assert both["gate"]["visible_levels"] == 4 and both["content"] == [dataset.name, second_dataset.name]
    one = validate([ref, other], ValidateOptions((dataset, second_dataset), 4, budget_db=0.1,
                                                 content=(second_dataset.name,)))
    bad = next(m for m in one["models"] if m["path"] == str(other))
    assert set(bad["gate"]) == {second_dataset.name} and one["content"] == [second_dataset.name]
    assert [d["gated"] for d in one["datasets"]] == [False, True]
    with pytest.raises(ScnetDeployError, match="--content nope: no dataset of that name"):
        validate([ref], ValidateOptions((dataset,), 4, budget_db=0.1, content=("nope",)))


def test_the_gates_visible_share_and_level_are_user_options_recorded_in_the_result(dataset, models):
    """--max-visible and --visible-levels change what the gate admits, and the result records the gate it applied:
    a model that moves every pixel passes only a gate that admits every pixel moving (its drift admitted too)."""
    ref, other, _ = models
    strict = validate([ref, other], ValidateOptions(dataset, 4, budget_db=100.0))
    loose = validate([ref, other], ValidateOptions(dataset, 4, budget_db=100.0, max_visible=1.0))
    judged = {r["name"]: r for r in strict["models"] if r.get("kind") != "checkpoint" or not r.get("reference")}
    assert not strict["passed"] and any("levels off FP32" in (m.get("gate_failure") or "") for m in judged.values())
    assert loose["passed"] and loose["gate"]["visible_share"] == 1.0 and strict["gate"]["visible_share"] == 0.001
    blind = validate([ref, other], ValidateOptions(dataset, 4, budget_db=100.0, visible_levels=255))
    assert blind["gate"]["visible_levels"] == 255
    assert max(m.get("visible_share", 0) for m in blind["models"]) <= max(m.get("visible_share", 0)
                                                                            for m in strict["models"])
