"""scnet_deploy/model/shift.py: both deploy shift forms equal the official shift exactly (fuzzed too), and the shift
matches its documented definition."""

import pytest
import torch
from hypothesis import given, HealthCheck, settings, strategies as st

from scnet_deploy.model.shift import OFFSETS, Shift8, ShiftDWConv, ShiftSlice


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def shift_by_definition(x: torch.Tensor) -> torch.Tensor:
    # out[y, x] = in[y + dy, x + dx], zero outside, group i moved by OFFSETS[i]
    g = x.shape[1] // 8
    out = torch.zeros_like(x)
    h, w = x.shape[2:]
    for i, (dy, dx) in enumerate(OFFSETS):
        for y in range(h):
            for xx in range(w):
                if 0 <= y + dy < h and 0 <= xx + dx < w:
                    out[:, i * g:(i + 1) * g, y, xx] = x[:, i * g:(i + 1) * g, y + dy, xx + dx]
    return out


@FAST
@given(batch=st.integers(1, 3), groups=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_shift_forms(batch, groups, h, w, seed):
    x = torch.randn(batch, 8 * groups, h, w, generator=torch.Generator().manual_seed(seed))
    ref = Shift8(groups)(x)
    assert torch.equal(ShiftSlice(groups)(x), ref) and torch.equal(ShiftDWConv(8 * groups)(x), ref)


def test_official_shift_matches_definition():
    x = torch.randn(2, 16, 4, 5)
    assert torch.equal(Shift8(2)(x), shift_by_definition(x))


@pytest.mark.parametrize("shape", [(1, 8, 1, 1), (1, 8, 1, 9), (2, 16, 7, 3), (1, 64, 12, 17)])
def test_forms_are_bit_exact(shape):
    x = torch.randn(*shape)
    c = shape[1]
    ref = Shift8(c // 8)(x)
    assert torch.equal(ShiftSlice(c // 8)(x), ref)
    # A one-hot convolution multiplies by exactly 1 and adds exact zeros.
    assert torch.equal(ShiftDWConv(c)(x), ref)


def test_shift_forms_have_no_parameters():
    assert not list(ShiftDWConv(16).parameters())
    assert not ShiftDWConv(16).state_dict()  # non-persistent: official state dicts still load strictly
