"""The opt-in wind backend (wind_rwkv's CUDA kernel) against the torch reference on a GPU, as test_fla_gpu.py
checks fla: outputs, final state and every gradient, the initial state's included; the lengths and packing it
cannot take go to what auto picks (the whole model's loss and tuned-state gradient: test_fla_gpu.py). On any
machine: only --op wind picks it, and its fallback."""

import pytest
import torch

from rwkv_peft.errors import UserError
from rwkv_peft.ops import fla as fla_backend
from rwkv_peft.ops import registry, wind, wkv7
from tests.ops.test_fla_gpu import WKV7_NAMES, _compare, _run, _wkv7_inputs

gpu = pytest.mark.gpu
needs_wind = pytest.mark.skipif(not wind.installed(), reason="wind_rwkv not installed")


@gpu
@needs_wind
@pytest.mark.parametrize("T", [16, 1024, 33])
def test_wkv7_wind_matches_reference(T):
    """33 is no multiple of the kernel's chunk of 16: fla computes it."""
    inputs = _wkv7_inputs(2, T, seed=T)
    _compare(WKV7_NAMES, _run(wkv7, inputs, "wind", False), _run(wkv7, inputs, "torch", True))


@gpu
@needs_wind
def test_wind_packed_goes_to_fla():
    lengths = [16, 37, 64]
    cu = torch.tensor([0, 16, 53, 117])
    inputs = _wkv7_inputs(1, sum(lengths), seed=11)
    inputs[-1] = inputs[-1].expand(len(lengths), -1, -1, -1).contiguous()
    _compare(WKV7_NAMES, _run(wkv7, inputs, "wind", False, cu), _run(wkv7, inputs, "torch", True, cu))


def test_auto_never_picks_wind(monkeypatch):
    """wind loses to fla at one sequence per step and cannot run in CUDA graphs: only --op wind selects it."""
    monkeypatch.setattr(wind, "installed", lambda: True)
    for fla_installed in (True, False):
        monkeypatch.setattr(fla_backend, "installed", lambda: fla_installed)
        assert registry.resolve("wkv7", "auto", torch.device("cuda")).name == ("fla" if fla_installed else "torch")
    assert registry.resolve("wkv7", "wind", torch.device("cuda")).name == "wind"


def test_explicit_wind_without_wind_says_how_to_install(monkeypatch):
    monkeypatch.setattr(wind, "installed", lambda: False)
    with pytest.raises(UserError, match="pip install git\\+https://github.com/johanwind/wind_rwkv"):
        registry.resolve("wkv7", "wind", torch.device("cuda"))
    with pytest.raises(UserError, match="unknown backend 'wind' for wkv6"):
        registry.resolve("wkv6", "wind", torch.device("cuda"))


def test_what_the_kernel_cannot_take_goes_to_auto():
    """T % 16 != 0 and packed rows run through what auto picks (here on the CPU: torch), without wind_rwkv."""
    g = torch.Generator().manual_seed(0)
    r, k, v, kk = (torch.randn(1, 7, 2, 8, generator=g) for _ in range(4))
    log_w = -0.6 * torch.rand(1, 7, 2, 8, generator=g)
    a = -torch.nn.functional.normalize(kk, dim=-1)
    args = (r, log_w, k, v, a, -a * 0.5)
    for cu in (None, torch.tensor([0, 3, 7])):
        got, want = wind.wkv7_wind(*args, cu_seqlens=cu), wkv7(*args, cu_seqlens=cu, backend="torch")
        assert all(torch.equal(x, y) for x, y in zip(got, want))
