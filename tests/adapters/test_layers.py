"""Layer contracts the training loop and the quant layer rely on: bf16 bases with fp32 adapters, autocast, a
frozen base, the base reached only through base_forward / base_weight, and target selection."""

import pytest
import torch
from torch import nn

from rwkv_peft.adapters import LoraConfig, MissConfig, apply_adapter, resolve_targets, spec_from_flags
from rwkv_peft.model.load import load_base

# One bf16 rounding of outputs of size ~1, relative to the fp32 computation.
BF16_RTOL = 2e-2
CONFIGS = {"lora": LoraConfig(r=8, dropout=0.0), "pissa": LoraConfig(r=8, alpha=8, dropout=0.0, pissa=True),
           "bone": MissConfig(r=12), "bat": MissConfig(r=16, mode="bat")}


def make(method: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    base = nn.Linear(64, 48, bias=False)
    torch.manual_seed(1)
    layer = CONFIGS[method].make_layer(base.to(dtype))
    with torch.no_grad():
        for name in layer.tensor_names:
            getattr(layer, name).add_(torch.randn_like(getattr(layer, name)) * 0.05)
    return layer


@pytest.mark.parametrize("method", list(CONFIGS))
def test_bf16_base_fp32_adapter(method):
    x = torch.randn(2, 5, 64)
    reference = make(method, torch.float32)(x)
    layer = make(method, torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16
    assert all(getattr(layer, n).dtype == torch.float32 for n in layer.tensor_names)
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert ((y.float() - reference).abs().max() / reference.abs().max()).item() <= BF16_RTOL


def test_bone_sums_bf16_chunks_in_fp32():
    """bf16 input: the chunks are summed in fp32 (D's dtype), exactly as from an fp32 copy of x, without one."""
    layer = make("bone", torch.bfloat16)
    x = torch.randn(2, 5, 64).bfloat16()
    chunks = torch.nn.functional.pad(x.float(), (0, -64 % 12)).reshape(2, 5, -1, 12).sum(dim=-2)
    expected = (layer.base_forward(x) + chunks @ layer.disha).to(torch.bfloat16)
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_autocast_trains_only_the_adapter(method):
    layer = make(method, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(2, 5, 64))
    y.float().square().mean().backward()
    assert layer.weight.grad is None and not layer.weight.requires_grad
    assert all(getattr(layer, n).grad is not None and getattr(layer, n).grad.dtype == torch.float32
               for n in layer.tensor_names)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_base_reached_only_through_base_forward_and_base_weight(method):
    """What a quantized base overrides: replacing both with a doubled weight doubles the base everywhere."""
    layer = make(method, torch.float32)
    x = torch.randn(3, 64)
    doubled = type(layer).merge_weight(2 * layer.weight.detach(),
                                       {n: getattr(layer, n).detach() for n in layer.tensor_names}, layer.config)
    layer.base_forward = lambda inp: nn.functional.linear(inp, 2 * layer.weight)
    layer.base_weight = lambda: 2 * layer.weight
    torch.testing.assert_close(layer(x), x @ doubled.t(), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.merged_weight(), doubled, atol=1e-6, rtol=0)


def test_targets_hf_style_suffixes(base_files):
    model = load_base(base_files[6])
    assert resolve_targets(model, ["key", "att.gate"]) == [
        "blocks.0.att.key", "blocks.0.att.gate", "blocks.0.ffn.key", "blocks.1.att.key", "blocks.1.att.gate",
        "blocks.1.ffn.key"]
    apply_adapter(model, spec_from_flags({"peft": "lora", "peft_config": '{"target_modules":["ffn.value"]}'}))
    assert isinstance(model.blocks[1].ffn.value, nn.Module) and hasattr(model.blocks[1].ffn.value, "lora_A")
    assert not hasattr(model.blocks[1].att.value, "lora_A")
    assert "blocks.1.ffn.value.weight" in model.state_dict()
