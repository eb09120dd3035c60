"""Layer math against HuggingFace peft (test-only dependency): same nn.Linear, same adapter values -> same
outputs and same merged weights. Non-square layers and in_features % r != 0 are used on purpose."""

import copy

import pytest
import torch
from torch import nn

from rwkv_peft.adapters import LoraConfig, MissConfig, spec_from_flags

peft = pytest.importorskip("peft")
lora_layer = pytest.importorskip("peft.tuners.lora.layer")

# Same operations in the same order on the same fp32 values: only summation order inside matmuls may differ.
HF_ATOL = 1e-6
IN, OUT = 100, 80


class Net(nn.Module):
    def __init__(self, n_in: int = IN, n_out: int = OUT):
        super().__init__()
        self.key = nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.key(x)


def _pair(n_in: int = IN, n_out: int = OUT):
    torch.manual_seed(0)
    net = Net(n_in, n_out)
    return net, copy.deepcopy(net), torch.randn(3, 7, n_in)


def _hf_merged(hf_net: nn.Module) -> torch.Tensor:
    hf_net.key.merge()
    return hf_net.key.get_base_layer().weight.detach()


def _assert_close(a: torch.Tensor, b: torch.Tensor):
    torch.testing.assert_close(a, b, atol=HF_ATOL, rtol=0)


@pytest.mark.parametrize("alpha", [8, 32])
def test_lora_matches_peft(alpha):
    net, hf_net, x = _pair()
    peft.inject_adapter_in_model(peft.LoraConfig(r=8, lora_alpha=alpha, lora_dropout=0.0, target_modules=["key"]),
                                 hf_net)
    ours = LoraConfig(r=8, alpha=alpha, dropout=0.0).make_layer(net.key)
    with torch.no_grad():
        ours.lora_A.copy_(torch.randn(8, IN))
        ours.lora_B.copy_(torch.randn(OUT, 8))
        hf_net.key.lora_A["default"].weight.copy_(ours.lora_A)
        hf_net.key.lora_B["default"].weight.copy_(ours.lora_B)
        _assert_close(ours(x), hf_net(x))
        _assert_close(ours.merged_weight(), _hf_merged(hf_net))


def test_lora_init_matches_peft():
    """Same RNG state -> the same kaiming-uniform A and zero B."""
    net, hf_net, _ = _pair()
    torch.manual_seed(5)
    ours = LoraConfig(r=8).make_layer(net.key)
    torch.manual_seed(5)
    reference = torch.empty(8, IN)
    nn.init.kaiming_uniform_(reference, a=5 ** 0.5)
    assert torch.equal(ours.lora_A, reference) and not ours.lora_B.any()


@pytest.mark.parametrize("alpha", [8, 16])
def test_pissa_matches_peft(alpha, monkeypatch):
    """peft's `pissa_niter_4` and ours from the same RNG state at the SVD: identical A0, B0 and residual base;
    then identical outputs and merged weights after both adapters move."""
    real_svd = torch.svd_lowrank

    def seeded_svd(*args, **kwargs):
        torch.manual_seed(7)
        return real_svd(*args, **kwargs)

    monkeypatch.setattr(lora_layer, "svd_lowrank", seeded_svd)
    net, hf_net, x = _pair()
    peft.inject_adapter_in_model(peft.LoraConfig(r=8, lora_alpha=alpha, lora_dropout=0.0,
                                                 init_lora_weights="pissa_niter_4", target_modules=["key"]), hf_net)
    torch.manual_seed(7)
    ours = LoraConfig(r=8, alpha=alpha, dropout=0.0, pissa=True, svd_niter=4).make_layer(net.key)
    hf = hf_net.key
    _assert_close(ours.lora_A, hf.lora_A["default"].weight)
    _assert_close(ours.lora_B, hf.lora_B["default"].weight)
    _assert_close(ours.weight, hf.get_base_layer().weight)
    with torch.no_grad():
        step = torch.randn(OUT, 8) * 0.1
        ours.lora_B.add_(step)
        hf.lora_B["default"].weight.add_(step)
        _assert_close(ours(x), hf_net(x))
        _assert_close(ours.merged_weight(), _hf_merged(hf_net))


def test_exact_svd_pissa_matches_peft():
    """peft's `init_lora_weights="pissa"` (exact SVD, no randomness) and ours with svd_niter None, both reached
    through the flags a user passes: identical A0, B0 and residual base."""
    net, hf_net, x = _pair()
    peft.inject_adapter_in_model(peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, init_lora_weights="pissa",
                                                 target_modules=["key"]), hf_net)
    spec = spec_from_flags({"peft": "lora", "peft_config": '{"r":8,"lora_alpha":16,"lora_dropout":0,'
                                                          '"init_lora_weights":"pissa"}'})
    assert spec.layer.pissa and spec.layer.svd_niter is None
    ours = spec.layer.make_layer(net.key)
    hf = hf_net.key
    _assert_close(ours.lora_A, hf.lora_A["default"].weight)
    _assert_close(ours.lora_B, hf.lora_B["default"].weight)
    _assert_close(ours.weight, hf.get_base_layer().weight)
    _assert_close(ours(x), hf_net(x))


@pytest.mark.parametrize("n_in, r", [(IN, 20), (IN, 16)], ids=["in%r==0", "in%r!=0"])
def test_miss_bone_matches_peft(n_in, r):
    net, hf_net, x = _pair(n_in)
    peft.inject_adapter_in_model(peft.MissConfig(r=r, target_modules=["key"]), hf_net)
    ours = MissConfig(r=r, mode="bone").make_layer(net.key)
    with torch.no_grad():
        ours.disha.copy_(torch.randn(r, OUT))
        hf_net.key.miss_block["default"].copy_(ours.disha)
        _assert_close(ours(x), hf_net(x))
        _assert_close(ours.merged_weight(), _hf_merged(hf_net))


def test_bat_orientation_against_peft():
    """RWKV-PEFT's bat indexes its blocks by input block, peft's by output block: with one block repeated
    everywhere the two agree (so the r x r algebra matches); with distinct blocks they differ."""
    r, n_in, n_out = 16, 96, 80
    net, hf_net, x = _pair(n_in, n_out)
    peft.inject_adapter_in_model(peft.MissConfig(r=r, init_weights="bat", target_modules=["key"]), hf_net)
    ours = MissConfig(r=r, mode="bat").make_layer(net.key)
    block = torch.randn(r, r) * 0.1
    with torch.no_grad():
        ours.disha.copy_(block.expand(n_in // r, r, r))
        hf_net.key.miss_block["default"].copy_(block.expand(n_out // r, r, r))
        _assert_close(ours(x), hf_net(x))
        ours.disha.copy_(torch.randn(n_in // r, r, r) * 0.1)
        hf_net.key.miss_block["default"].copy_(ours.disha[:n_out // r])
        assert not torch.allclose(ours(x), hf_net(x), atol=1e-3)
