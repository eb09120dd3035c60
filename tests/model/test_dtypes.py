"""Mixed precision keeps the residual stream in the weights' dtype: autocast runs LayerNorm/GroupNorm in fp32, and
the blocks cast their outputs back, so bf16 training does its elementwise work in bf16 (what made the compiled
1.5B step 48 -> 38 ms on an H100) while trained fp32 master copies (train_parts) still get fp32 gradients."""

import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils.checkpoint import checkpoint

from rwkv_peft import ops
from rwkv_peft.adapters import apply_adapter, spec_from_flags, trainable_parameters
from rwkv_peft.model import RWKV6Config, RWKV7Config, compiled, model_from_state_dict
from rwkv_peft.model.init import random_state_dict
from tests.conftest import rel_err


def test_bf16_autocast_keeps_a_bf16_residual_and_fp32_gradients(monkeypatch):
    model = model_from_state_dict(random_state_dict(RWKV7Config(n_layer=2, n_embd=64, vocab_size=256), seed=0,
                                                    dtype=torch.bfloat16))
    apply_adapter(model, spec_from_flags({"peft": "lora", "train_parts": ["time", "ln"]}))
    trained = trainable_parameters(model)
    for p in trained.values():
        p.data = p.data.float()  # the trainer's master copies
    seen, wkv_dtypes = [], []
    real_wkv7 = ops.wkv7

    def recording_wkv7(r, log_w, k, v, a, b, *args, **kwargs):
        wkv_dtypes.append({t.dtype for t in (r, k, v, a, b)})  # fla's kernels need one dtype for these
        return real_wkv7(r, log_w, k, v, a, b, *args, **kwargs)

    monkeypatch.setattr(ops, "wkv7", recording_wkv7)  # what ops.wkv7_terms calls for the torch backend
    hooks = [b.register_forward_hook(lambda m, i, out: seen.append(out[0].dtype)) for b in model.blocks]
    # CUDA autocast runs the norms in fp32 and returns fp32 (CPU autocast does not): do the same here.
    hooks += [m.register_forward_hook(lambda m, i, out: out.float()) for m in model.modules()
              if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden, _ = model.hidden(torch.randint(0, 256, (2, 16)))
    hidden.float().square().mean().backward()
    for h in hooks:
        h.remove()
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert wkv_dtypes == [{torch.bfloat16}, {torch.bfloat16}]
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())


# fp32 on the CPU: the compiled kernels fuse and reorder the same arithmetic (and use vectorized exp/tanh), so
# results differ by rounding that three layers compound; a wrong op or a missed layer is off by far more.
COMPILED_FP32 = 1e-4
TINY = {7: RWKV7Config(n_layer=3, n_embd=64, vocab_size=256), 6: RWKV6Config(n_layer=3, n_embd=64, vocab_size=256)}
TOKENS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("version", [7, 6])
def test_only_training_steps_run_compiled_and_checkpointed_blocks(monkeypatch, version):
    """Evaluation and generation (no grad, other shapes) stay eager: no compile per prompt length, and nothing
    to recompute."""
    calls, checkpointed = [], []

    def fake_compiled():
        def run(*args):
            calls.append(torch.is_grad_enabled())
            return compiled.call_block(*args)
        return run

    def counted_checkpoint(fn, *args, **kwargs):
        checkpointed.append(fn)
        return checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(compiled, "compiled_block", fake_compiled)
    monkeypatch.setattr(compiled, "checkpoint", counted_checkpoint)
    model = model_from_state_dict(random_state_dict(TINY[version], seed=0, dtype=torch.float32))
    model.compile = model.grad_cp = True
    tokens = torch.randint(0, 256, (1, 8))
    model.train()
    model.hidden(tokens)
    assert len(calls) == 3 and all(calls) and len(checkpointed) == 3
    with torch.no_grad():
        model.hidden(tokens)
    model.eval()
    model.hidden(tokens)
    assert len(calls) == 3 and len(checkpointed) == 3
    model.train()
    model.grad_cp = 1 / 3  # a share: one block of three
    model.hidden(tokens)
    assert len(calls) == 6 and len(checkpointed) == 4


def test_older_torch_compiles_without_the_autograd_cache(monkeypatch):
    """torch < 2.13 can reload corrupted view metadata from AOTAutograd's disk cache (compiled.py)."""
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")
    compiled.compiled_block.cache_clear()
    try:
        with torch._functorch.config.patch(enable_autograd_cache=True):
            compiled.compiled_block()
            assert torch._functorch.config.enable_autograd_cache is False
    finally:
        compiled.compiled_block.cache_clear()


@pytest.mark.parametrize("n_layer, share, expected", [
    (4, 0.0, "...."), (4, 1.0, "cccc"), (4, 0.5, ".c.c"), (24, 0.25, ("...c" * 6)), (3, 2 / 3, ".cc"),
    (24, 0.6, None)])
def test_a_grad_cp_share_spreads_its_blocks_evenly(n_layer, share, expected):
    picked = compiled.checkpointed_blocks(n_layer, share)
    assert sum(picked) == round(n_layer * share)
    if expected:
        assert "".join("c" if p else "." for p in picked) == expected


@pytest.mark.parametrize("version", [7, 6])
def test_compiled_blocks_compute_what_the_plain_ones_do(version):
    """torch.compile of the blocks changes nothing but speed (same hidden states and LoRA gradients), and a deeper
    model of the same width compiles nothing more: every layer reuses the graphs (a block that branched on its
    index would compile once per layer)."""
    torch._dynamo.reset()
    results = []
    for compile_ in (False, True):
        model, trained = _lora_model(TINY[version])
        model.compile = compile_
        hidden, _ = model.hidden(TOKENS)
        results.append((hidden.detach(), torch.autograd.grad(hidden.square().mean(), trained)))
    (plain, plain_grads), (fast, fast_grads) = results
    assert rel_err(fast, plain) < COMPILED_FP32
    assert all(rel_err(f, p) < COMPILED_FP32 for f, p in zip(fast_grads, plain_grads))
    graphs = counters["stats"]["unique_graphs"]
    deeper, _ = _lora_model(dataclasses.replace(TINY[version], n_layer=5))
    deeper.compile = True
    deeper.hidden(TOKENS)[0].sum().backward()
    assert counters["stats"]["unique_graphs"] == graphs


def _lora_model(cfg):
    """A tiny model with LoRA (no dropout) and ln trained, every trained tensor away from its zero init."""
    model = model_from_state_dict(random_state_dict(cfg, seed=0, dtype=torch.float32))
    torch.manual_seed(0)  # LoRA's A init
    apply_adapter(model, spec_from_flags({"peft": "lora", "lora_config": {"lora_dropout": 0}, "train_parts": ["ln"]}))
    trained = list(trainable_parameters(model).values())
    with torch.no_grad():
        for p in trained:
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    return model.train(), trained


@pytest.mark.parametrize("version", [7, 6])
def test_a_lora_ffn_keeps_one_dim_ffn_wide_tensor_for_backward(version):
    """Under bf16 autocast the FFN's activation output is the only [B, T, dim_ffn] tensor kept for backward: the
    activation needs nothing else (ops/relu_squared.py) and LoRA's value layer keeps that same tensor, not a copy
    cast to fp32 and back."""
    cfg = TINY[version]
    model = model_from_state_dict(random_state_dict(cfg, seed=0, dtype=torch.bfloat16))
    apply_adapter(model, spec_from_flags({"peft": "lora", "lora_config": '{"lora_dropout":0}'}))
    ffn_wide = set()

    def pack(t):
        if t.shape[-1] == cfg.dim_ffn and t.shape[:-1].numel() == TOKENS.numel():
            ffn_wide.add(t.untyped_storage().data_ptr())
        return t

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden, _ = model.hidden(TOKENS)
    assert len(ffn_wide) == cfg.n_layer
    hidden.float().sum().backward()
