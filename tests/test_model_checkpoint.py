"""scnet_deploy/model/checkpoint.py: checkpoint formats, architecture detection, every bad-file path (one-line
ScnetDeployError each, never a traceback, fuzzed too), and non-finite weights."""

import pickle
import shutil

import pytest
import torch
from hypothesis import given, HealthCheck, settings, strategies as st
from safetensors.torch import save_file

from conftest import cli, FIXTURES, mutate, need, save_basicsr, tiny_model
from scnet_deploy.errors import ArchitectureError, CheckpointError, ScnetDeployError
from scnet_deploy.model.arch import detect_arch, scale_from_filename
from scnet_deploy.model.checkpoint import load_checkpoint, NonFiniteWeightsWarning


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("scale,upsampler", [(2, "pixelshuffle"), (3, "pixelshuffle"), (4, "mlp"), (4, "pixelshuffle"),
                                             (8, "mlp"), (8, "pixelshuffle")])
def test_architecture_detected_from_weights_alone(tmp_path, scale, upsampler):
    model = tiny_model(scale, upsampler, num_feat=24, num_block=3)
    ckpt = load_checkpoint(save_basicsr(model, tmp_path / "m.pth"))
    spec = ckpt.spec
    assert (spec.num_feat, spec.num_block, spec.scale, spec.upsampler) == (24, 3, scale, upsampler)
    assert spec.scale_source == "weights"
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert same_weights(ckpt.model, model)


def test_mlp_x2_x3_ambiguity_settled_by_argument_then_file_name(tmp_path):
    model = tiny_model(3, "mlp")
    plain = save_basicsr(model, tmp_path / "model.pth")
    with pytest.raises(ArchitectureError, match="--scale 2 or --scale 3"):
        load_checkpoint(plain)
    assert load_checkpoint(plain, scale=3).spec.scale == 3
    assert load_checkpoint(plain, scale=3).spec.scale_source == "argument"
    named = shutil.copy(plain, tmp_path / "SCNet-T-x3.pth")
    spec = load_checkpoint(named).spec
    assert (spec.scale, spec.scale_source) == (3, "file name")
    assert load_checkpoint(named, scale=2).spec.scale == 2  # the argument wins over the name
    with pytest.raises(ArchitectureError, match="x2 or x3"):
        load_checkpoint(plain, scale=4)


def test_scale_argument_contradicting_weights_is_refused(tmp_path):
    path = save_basicsr(tiny_model(4, "mlp"), tmp_path / "m.pth")
    with pytest.raises(ArchitectureError, match="x4"):
        load_checkpoint(path, scale=2)


@pytest.mark.parametrize("name,expected", [("SCNet-T-x3.pth", 3), ("scnet_x2_final.pth", 2), ("model_X4.pth", 4),
                                           ("max3.pth", None), ("net_x32.pth", None), ("plain.pth", None)])
def test_scale_from_filename(name, expected):
    assert scale_from_filename(name) == expected


def test_params_ema_preferred_and_selectable(tmp_path):
    a, b = tiny_model(4, seed=1), tiny_model(4, seed=2)
    path = tmp_path / "both.pth"
    torch.save({"params": a.state_dict(), "params_ema": b.state_dict()}, path)
    default = load_checkpoint(path)
    assert default.param_key == "params_ema" and same_weights(default.model, b)
    chosen = load_checkpoint(path, param_key="params")
    assert chosen.param_key == "params" and same_weights(chosen.model, a)
    with pytest.raises(CheckpointError, match="params_ema"):
        load_checkpoint(path, param_key="weights")


@pytest.mark.parametrize("wrap", ["raw", "module", "state_dict", "params_ema"])
def test_wrappers_and_prefixes(tmp_path, wrap):
    model = tiny_model(4)
    sd = model.state_dict()
    obj = {"raw": sd, "module": {f"module.{k}": v for k, v in sd.items()}, "state_dict": {"state_dict": sd},
           "params_ema": {"params_ema": sd}}[wrap]
    torch.save(obj, tmp_path / "m.pth")
    assert same_weights(load_checkpoint(tmp_path / "m.pth").model, model)


def test_safetensors(tmp_path):
    model = tiny_model(4, "pixelshuffle")
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    ckpt = load_checkpoint(tmp_path / "m.safetensors")
    assert ckpt.spec.upsampler == "pixelshuffle" and same_weights(ckpt.model, model)


def test_official_fixture_with_both_keys_style_loads():
    path = need(FIXTURES / "scnet_small_x2_ps_ema.pth")
    assert load_checkpoint(path).param_key == "params_ema"


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": _RunsCode(str(marker))}, f)
    torch.save({"params": _RunsCode(str(marker))}, tmp_path / "evil_zip.pth")
    assert not marker.exists()
    for p in (path, tmp_path / "evil_zip.pth"):
        with pytest.raises(CheckpointError, match="could run code"):
            load_checkpoint(p)
    assert not marker.exists()


def test_bad_files(tmp_path):
    good = save_basicsr(tiny_model(4), tmp_path / "good.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("hello, I am not a checkpoint\n")
    (tmp_path / "trunc.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    cases = {"missing.pth": "does not exist", "empty.pth": "empty", "text.pth": "not a readable",
             "trunc.pth": "not a readable", "bad.safetensors": "safetensors", "list.pth": "not a state dict"}
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(info.value)


def test_state_dict_of_another_network_names_the_keys(tmp_path):
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(ArchitectureError, match="conv_first.weight"):
        load_checkpoint(tmp_path / "other.pth")
    sd = tiny_model(4).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["conv_hr.bias"]
    torch.save(sd, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \['conv_hr.bias'\].*unexpected keys \['extra.weight'\]"):
        load_checkpoint(tmp_path / "mixed.pth")


def test_inconsistent_shapes_and_bad_num_feat(tmp_path):
    sd = tiny_model(4).state_dict()
    sd["body.1.conv1.weight"] = torch.zeros(16, 8, 1, 1)
    torch.save(sd, tmp_path / "shapes.pth")
    with pytest.raises(CheckpointError, match="body.1.conv1.weight"):
        load_checkpoint(tmp_path / "shapes.pth")
    odd = {k: v for k, v in tiny_model(4).state_dict().items()}
    odd["conv_first.weight"] = torch.zeros(12, 3, 1, 1)
    with pytest.raises(ArchitectureError, match="multiple of 8"):
        detect_arch(odd)


def test_every_error_is_a_scnet_deploy_error():
    assert issubclass(CheckpointError, ScnetDeployError) and issubclass(ArchitectureError, ScnetDeployError)


@FAST
@given(data=st.data(), which=st.sampled_from(["pth", "safetensors"]))
def test_checkpoint_loader_never_tracebacks(tmp_path_factory, valid_files, data, which):
    path = tmp_path_factory.mktemp("fz") / f"x.{which}"
    path.write_bytes(mutate(valid_files[which], data.draw))
    try:
        load_checkpoint(path, scale=4)
    except ScnetDeployError as exc:
        assert "\n" not in str(exc)


def test_nonfinite_weights_warn_and_refuse_a_finite_only_purpose(tmp_path):
    sd = tiny_model(2, "pixelshuffle").state_dict()
    sd["body.0.conv1.weight"][0, 0] = float("nan")
    sd["conv_last.bias"][0] = float("inf")
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.warns(NonFiniteWeightsWarning, match="NaN/Inf"):
        ckpt = load_checkpoint(tmp_path / "nan.pth")
    assert ckpt.nonfinite == ["body.0.conv1.weight", "conv_last.bias"]
    with pytest.raises(CheckpointError, match="refusing to calibrate"):
        ckpt.require_finite("calibrate")
    out = cli("info", tmp_path / "nan.pth")
    assert out.returncode == 0 and "warning:" in out.stderr and "NaN/Inf" in out.stderr


def test_integer_typed_weights_are_refused(tmp_path):
    """Row 18 of issue 38: a checkpoint with int8-typed weights upscaled without a word (its codes cast to float)."""
    import torch

    from conftest import tiny_model
    from scnet_deploy.errors import CheckpointError
    from scnet_deploy.model.checkpoint import load_checkpoint

    sd = tiny_model(2).state_dict()
    name = next(k for k in sd if k.endswith("weight"))
    sd[name] = (sd[name] * 100).round().clamp(-128, 127).to(torch.int8)
    torch.save({"params": sd}, tmp_path / "int8_x2.pth")
    with pytest.raises(CheckpointError, match=r"holds integer weights .*int8"):
        load_checkpoint(tmp_path / "int8_x2.pth")
