"""Mixed precision keeps the residual stream in the weights' dtype: autocast runs LayerNorm/GroupNorm in fp32, and
the blocks cast their outputs back, so bf16 training does its elementwise work in bf16 (what made the compiled
1.5B step 48 -> 38 ms on an H100) while trained fp32 master copies (train_parts) still get fp32 gradients."""

import torch

from rwkv_peft.adapters import apply_adapter, spec_from_flags, trainable_parameters
from rwkv_peft.model import RWKV7Config, model_from_state_dict
from rwkv_peft.model import rwkv7
from rwkv_peft.model.init import random_state_dict


def test_bf16_autocast_keeps_a_bf16_residual_and_fp32_gradients(monkeypatch):
    model = model_from_state_dict(random_state_dict(RWKV7Config(n_layer=2, n_embd=64, vocab_size=256), seed=0,
                                                    dtype=torch.bfloat16))
    apply_adapter(model, spec_from_flags({"peft": "lora", "train_parts": ["time", "ln"]}))
    trained = trainable_parameters(model)
    for p in trained.values():
        p.data = p.data.float()  # the trainer's master copies
    seen, wkv_dtypes = [], []
    real_wkv7 = rwkv7.wkv7

    def recording_wkv7(r, log_w, k, v, a, b, *args, **kwargs):
        wkv_dtypes.append({t.dtype for t in (r, k, v, a, b)})  # fla's kernels need one dtype for these
        return real_wkv7(r, log_w, k, v, a, b, *args, **kwargs)

    monkeypatch.setattr(rwkv7, "wkv7", recording_wkv7)
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


def test_only_training_steps_run_the_compiled_block(monkeypatch):
    """Evaluation and generation (no grad, other shapes) stay eager: no compile per prompt length."""
    calls = []

    def fake_compiled():
        def run(*args):
            calls.append(torch.is_grad_enabled())
            return rwkv7._call_block(*args)
        return run

    monkeypatch.setattr(rwkv7, "_compiled_block", fake_compiled)
    model = model_from_state_dict(random_state_dict(RWKV7Config(n_layer=2, n_embd=64, vocab_size=256), seed=0,
                                                    dtype=torch.float32))
    model.compile = True
    tokens = torch.randint(0, 256, (1, 8))
    model.train()
    model.hidden(tokens)
    assert calls == [True, True]
    with torch.no_grad():
        model.hidden(tokens)
    model.eval()
    model.hidden(tokens)
    assert calls == [True, True]
