"""The fla backend against the torch reference on a GPU: outputs, final state and every gradient (the initial
state's included, which State tuning trains), plain and packed; and a whole model's loss across backends.

The reference runs in fp32 on the GPU from the very bf16 values fla gets, so the only difference measured is
fla's own arithmetic. CPU-side checks of the registry's choices live at the end and run everywhere.
"""

import pytest
import torch
import torch.nn.functional as F

from rwkv_peft.errors import UserError
from rwkv_peft.model import model_from_state_dict
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.ops import fla as fla_backend
from rwkv_peft.ops import LOG_DECAY_BOUND, registry, wkv6, wkv7
from rwkv_peft.ops import wind as wind_backend
from tests.conftest import rel_err, tiny_config

# bf16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3). fla rounds its inputs, its chunk-level
# intermediates and the output y to bf16, so a handful of roundings stack up: typical errors are 2e-3..8e-3.
# 2e-2 leaves room for that and nothing more; a wrong layout, transpose or decay gives errors of order 1.
BF16_TOL = 2e-2
LENGTHS = [1, 7, 33, 100, 1000]
H, N = 4, 64

gpu = pytest.mark.gpu
needs_fla = pytest.mark.skipif(not fla_backend.installed(), reason="flash-linear-attention not installed")


def _rand(*shape, g):
    return torch.randn(*shape, generator=g, device="cuda", dtype=torch.float32)


def _wkv7_inputs(B, T, seed):
    """bf16 r, k, v, a, b; fp32 log_w in RWKV-7's range (what the model passes); fp32 initial state."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    r, k, v = _rand(B, T, H, N, g=g), _rand(B, T, H, N, g=g), _rand(B, T, H, N, g=g)
    log_w = LOG_DECAY_BOUND * torch.sigmoid(_rand(B, T, H, N, g=g) * 2)
    kk = F.normalize(_rand(B, T, H, N, g=g), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g, device="cuda")
    s0 = _rand(B, H, N, N, g=g) * 0.5
    seq = [x.bfloat16() for x in (r, k, v, -kk, kk * iclr)]
    r, k, v, a, b = seq
    return [r, log_w, k, v, a, b, s0]


def _wkv6_inputs(B, T, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    r, k, v = _rand(B, T, H, N, g=g), _rand(B, T, H, N, g=g) * 0.5, _rand(B, T, H, N, g=g)
    log_w = -torch.exp(_rand(B, T, H, N, g=g) - 1)
    u, s0 = _rand(H, N, g=g) * 0.3, _rand(B, H, N, N, g=g) * 0.5
    r, k, v = (x.bfloat16() for x in (r, k, v))
    return [r, log_w, k, v, u, s0]


def _run(op, inputs, backend, upcast, cu_seqlens=None, **kw):
    """Outputs, final state and gradients of a random projection of both (so every path is exercised).
    `upcast` runs on fp32 copies of the same values: the reference side."""
    leaves = [(x.detach().float() if upcast else x.detach().clone()).requires_grad_() for x in inputs]
    *args, s0 = leaves
    y, s = op(*args, s0, cu_seqlens=cu_seqlens, backend=backend, **kw)
    g = torch.Generator(device="cuda").manual_seed(1)
    loss = (y.float() * _rand(*y.shape, g=g)).sum() + (s * _rand(*s.shape, g=g)).sum()
    return y.detach().float(), s.detach(), torch.autograd.grad(loss, leaves)


def _compare(names, got, ref):
    (y, s, grads), (y_ref, s_ref, grads_ref) = got, ref
    errors = {"y": rel_err(y, y_ref), "state": rel_err(s, s_ref)}
    errors |= {f"d{n}": rel_err(a, b) for n, a, b in zip(names, grads, grads_ref)}
    bad = {k: f"{e:.2e}" for k, e in errors.items() if not e < BF16_TOL}
    assert not bad, f"over {BF16_TOL}: {bad}"


WKV7_NAMES = ["r", "log_w", "k", "v", "a", "b", "state0"]
WKV6_NAMES = ["r", "log_w", "k", "v", "u", "state0"]


@gpu
@needs_fla
@pytest.mark.parametrize("T", LENGTHS)
def test_wkv7_fla_matches_reference(T):
    inputs = _wkv7_inputs(2, T, seed=T)
    _compare(WKV7_NAMES, _run(wkv7, inputs, "fla", False), _run(wkv7, inputs, "torch", True))


@gpu
@needs_fla
def test_wkv7_fla_keeping_intermediates_changes_nothing():
    """Keeping the forward's intermediates for backward (our default) instead of recomputing them there (fla's)
    runs the same kernels on the same values: equal results."""
    inputs = _wkv7_inputs(2, 300, seed=9)

    def fla_wkv7(*args, backend, keep, **kw):
        return fla_backend.wkv7_fla(*args, keep_intermediates=keep, **kw)

    plain, kept = (_run(fla_wkv7, inputs, "fla", False, keep=keep) for keep in (False, True))
    for a, b in zip([plain[0], plain[1], *plain[2]], [kept[0], kept[1], *kept[2]]):
        assert rel_err(b, a) < 1e-6


@gpu
@needs_fla
@pytest.mark.parametrize("T", LENGTHS)
def test_wkv6_fla_matches_reference(T):
    inputs = _wkv6_inputs(2, T, seed=T)
    _compare(WKV6_NAMES, _run(wkv6, inputs, "fla", False), _run(wkv6, inputs, "torch", True))


@gpu
@needs_fla
@pytest.mark.parametrize("op", ["wkv7", "wkv6"])
def test_fla_packed_matches_reference(op):
    """Documents packed along T (B = 1) with one initial state each, cu_seqlens on the GPU and on the CPU."""
    lengths = [5, 130, 1, 64, 300]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    make, fn, names = (_wkv7_inputs, wkv7, WKV7_NAMES) if op == "wkv7" else (_wkv6_inputs, wkv6, WKV6_NAMES)
    inputs = make(1, sum(lengths), seed=11)
    g = torch.Generator(device="cuda").manual_seed(12)
    inputs[-1] = _rand(len(lengths), H, N, N, g=g) * 0.5
    ref = _run(fn, inputs, "torch", True, cu)
    for where in ("cpu", "cuda"):
        _compare(names, _run(fn, inputs, "fla", False, cu.to(where)), ref)


@gpu
@needs_fla
def test_fla_shared_state_expands():
    """One [1, H, N, N] state for the whole batch (State tuning's time_state) equals it repeated per sequence."""
    inputs = _wkv7_inputs(3, 50, seed=5)
    *seq, s0 = inputs
    shared = s0[:1]
    y1, s1 = wkv7(*seq, shared, backend="fla")
    y2, s2 = wkv7(*seq, shared.expand(3, -1, -1, -1).contiguous(), backend="fla")
    assert torch.equal(y1, y2) and torch.equal(s1, s2)


@gpu
@needs_fla
@pytest.mark.parametrize("other", ["fla", "wind", "triton"])
def test_model_loss_and_state_grad_equal_across_backends(other):
    """A random 2-layer RWKV-7 in bf16 with a tuned state: loss, logits and the state's gradient agree."""
    if other == "wind" and not wind_backend.installed():
        pytest.skip("wind_rwkv not installed")
    cfg = tiny_config(7, n_layer=2, n_embd=256, vocab_size=1000)
    sd = random_state_dict(cfg, seed=3, dtype=torch.bfloat16)
    # 208 tokens: a multiple of 16, so that wind's kernel runs (not its fallback).
    tokens = torch.randint(0, cfg.vocab_size, (2, 208), generator=torch.Generator().manual_seed(4)).cuda()
    g = torch.Generator().manual_seed(5)
    time_state = torch.randn(cfg.n_layer, cfg.n_head, cfg.head_size, cfg.head_size, generator=g) * 0.3
    results = {}
    for backend in ("torch", other):
        model = model_from_state_dict(sd, device="cuda")
        model.backend = backend
        model.requires_grad_(False)
        states = []
        for i, block in enumerate(model.blocks):
            block.att.time_state = torch.nn.Parameter(time_state[i].cuda())
            states.append(block.att.time_state)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        results[backend] = loss.item(), logits.float(), torch.stack([s.grad for s in states])
    (loss_t, logits_t, grad_t), (loss_f, logits_f, grad_f) = results["torch"], results[other]
    assert abs(loss_f - loss_t) / loss_t < BF16_TOL
    assert rel_err(logits_f, logits_t) < BF16_TOL
    assert rel_err(grad_f, grad_t) < BF16_TOL


def test_auto_resolves_to_torch_on_cpu():
    for op in ("wkv7", "wkv6"):
        assert registry.resolve(op, "auto", torch.device("cpu")).name == "torch"


def test_auto_prefers_fla_on_cuda_when_installed(monkeypatch):
    monkeypatch.setattr(fla_backend, "installed", lambda: True)
    assert registry.resolve("wkv7", "auto", torch.device("cuda")).name == "fla"
    monkeypatch.setattr(fla_backend, "installed", lambda: False)
    assert registry.resolve("wkv7", "auto", torch.device("cuda")).name == "torch"


def test_explicit_fla_without_fla_names_the_extra(monkeypatch):
    monkeypatch.setattr(fla_backend, "installed", lambda: False)
    with pytest.raises(UserError, match=r"pip install rwkv-peft\[fla\]"):
        registry.resolve("wkv7", "fla", torch.device("cuda"))
    with pytest.raises(UserError, match="needs a CUDA device"):
        registry.resolve("wkv6", "fla", torch.device("cpu"))
