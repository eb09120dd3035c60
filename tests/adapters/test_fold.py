"""LoRA with A folded into the base product (adapters/fold.py) computes what the plain layer computes: outputs and
every gradient, before and after the optimizer moves the masters, on a whole tiny model; and it changes nothing a
user sees (state_dict, saved adapters, merged weights)."""

import copy

import pytest
import torch

from rwkv_peft.adapters import apply_adapter, fold_lora, spec_from_flags, trainable_parameters
from rwkv_peft.model import model_from_state_dict
from rwkv_peft.model.init import random_state_dict

from ..conftest import rel_err, tiny_config

# fp32 end to end: the folded form adds the same products in another order (one GEMM with a longer K), so only
# fp32 rounding separates the two.
FP32_RTOL = 1e-5

FLAGS = {"lora": {"peft": "lora", "lora_config": '{"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0}'},
         "pissa": {"peft": "pissa", "pissa_config": '{"pissa_r": 8}'}}


def pair(version: int, method: str, parts: str = "ln"):
    """(plain, folded) copies of one adapted tiny model, adapters nudged off their zero start."""
    sd = random_state_dict(tiny_config(version, n_layer=2, n_embd=64, vocab_size=200), seed=0)
    model = model_from_state_dict(sd, "tiny", torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    apply_adapter(model, spec_from_flags(FLAGS[method] | {"train_parts": parts}))
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.02)
    folded = copy.deepcopy(model)
    assert fold_lora(folded) == 2 * (6 if version == 7 else 8)
    return model, folded


def loss_and_grads(model, tokens):
    for p in model.parameters():
        p.grad = None
    loss = model(tokens).float().logsumexp(-1).mean()
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in trainable_parameters(model).items()}


@pytest.mark.parametrize("version,method,parts", [(7, "lora", "ln"), (7, "pissa", "ln"), (6, "lora", "ln"),
                                                  (6, "pissa", "ln"), (7, "lora", "")])
def test_folded_model_equals_the_plain_one(version, method, parts):
    """parts "": nothing before the first block trains, so its layers' inputs need no gradient."""
    model, folded = pair(version, method, parts)
    tokens = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    for step in range(2):
        loss, grads = loss_and_grads(model, tokens)
        loss_f, grads_f = loss_and_grads(folded, tokens)
        assert rel_err(loss_f, loss) <= FP32_RTOL
        assert grads.keys() == grads_f.keys()
        for name in grads:
            assert rel_err(grads_f[name], grads[name]) <= FP32_RTOL, (step, name)
        # The same update to both: the folded copy must see its masters' new values in the next pass.
        with torch.no_grad():
            for m in (model, folded):
                for p in trainable_parameters(m).values():
                    p.sub_(0.5 * p.grad.sign() * p.abs().mean())


def test_folding_changes_nothing_saved():
    model, folded = pair(7, "lora")
    assert folded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(folded.state_dict()[name], tensor), name
    layer = folded.blocks[0].att.key
    assert layer.weight.data_ptr() == layer.folded.data_ptr()  # the base is not stored twice
    # RWKV-7's receptance, key and value run as one stack (the equality test above covers its math): views of
    # their own buffers, not copies.
    att = folded.blocks[0].att
    stack = att.receptance.stack_folded
    assert stack.shape == (3, *att.key.folded.shape)
    assert [t.data_ptr() for t in stack] == [m.folded.data_ptr() for m in (att.receptance, att.key, att.value)]
    assert [t.data_ptr() for t in att.receptance.stack_b_low] == [m.lora_B_low.data_ptr()
                                                                  for m in (att.receptance, att.key, att.value)]
    assert torch.equal(layer.merged_weight(), model.blocks[0].att.key.merged_weight())


def test_autocast_over_an_fp32_base_trains():
    model, folded = pair(7, "lora")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = folded(torch.randint(0, 200, (1, 8))).float().logsumexp(-1).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable_parameters(folded).values())


def test_dropout_and_a_second_call_leave_layers_alone():
    sd = random_state_dict(tiny_config(7, n_layer=1, n_embd=64, vocab_size=200), seed=0)
    model = model_from_state_dict(sd, "tiny", torch.device("cpu"), torch.float32)
    apply_adapter(model, spec_from_flags({"peft": "lora", "lora_config": '{"lora_r": 8, "lora_dropout": 0.01}'}))
    assert fold_lora(model) == 0 and not model.pass_hooks
    model, folded = pair(7, "lora")
    assert fold_lora(folded) == 0 and len(folded.pass_hooks) == 1
