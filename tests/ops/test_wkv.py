"""The chunked WKV forms against the exact per-step recurrence: outputs, final state, every gradient (the initial
state's included), at odd lengths; and packed documents against separate runs."""

import pytest
import torch
import torch.nn.functional as F

from rwkv_peft.ops import registry, wkv6, wkv6_chunked, wkv6_recurrent, wkv7, wkv7_chunked, wkv7_recurrent
from tests.conftest import rel_err

# fp32 arithmetic in a different order (chunked sums, triangular solve): ~1e-6 is typical, 1e-4 is a bug.
FP32_TOL = 2e-5
LENGTHS = [1, 7, 33, 100]


def _wkv7_inputs(B, T, H, N, seed):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    r, k, v = rn(B, T, H, N), rn(B, T, H, N), rn(B, T, H, N)
    log_w = -0.6065306597126334 * torch.sigmoid(rn(B, T, H, N))
    kk = F.normalize(rn(B, T, H, N), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g, dtype=torch.float64)
    s0 = rn(B, H, N, N) * 0.5
    return [x.float().requires_grad_() for x in (r, log_w, k, v, -kk, kk * iclr, s0)]


def _wkv6_inputs(B, T, H, N, seed):
    g = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    r, k, v = rn(B, T, H, N), rn(B, T, H, N) * 0.5, rn(B, T, H, N)
    log_w = -torch.exp(rn(B, T, H, N) - 1)
    u, s0 = rn(H, N) * 0.3, rn(B, H, N, N) * 0.5
    return [x.float().requires_grad_() for x in (r, log_w, k, v, u, s0)]


def _outputs_and_grads(fn, inputs):
    *args, s0 = inputs
    y, s = fn(*args, state=s0)
    # A random projection of both outputs, so every gradient path is exercised.
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g)).sum() + (s * torch.randn(s.shape, generator=g)).sum()
    grads = torch.autograd.grad(loss, inputs)
    return y.detach(), s.detach(), grads


@pytest.mark.parametrize("T", LENGTHS)
def test_wkv7_chunked_equals_recurrent(T):
    inputs = _wkv7_inputs(2, T, 3, 16, seed=T)
    y1, s1, g1 = _outputs_and_grads(wkv7_recurrent, inputs)
    y2, s2, g2 = _outputs_and_grads(wkv7_chunked, inputs)
    assert rel_err(y2, y1) < FP32_TOL and rel_err(s2, s1) < FP32_TOL
    for name, a, b in zip(["r", "log_w", "k", "v", "a", "b", "state"], g2, g1):
        assert rel_err(a, b) < FP32_TOL, f"d{name}: {rel_err(a, b):.2e}"


@pytest.mark.parametrize("T", LENGTHS)
def test_wkv6_chunked_equals_recurrent(T):
    inputs = _wkv6_inputs(2, T, 3, 16, seed=T)
    y1, s1, g1 = _outputs_and_grads(wkv6_recurrent, inputs)
    y2, s2, g2 = _outputs_and_grads(wkv6_chunked, inputs)
    assert rel_err(y2, y1) < FP32_TOL and rel_err(s2, s1) < FP32_TOL
    for name, a, b in zip(["r", "log_w", "k", "v", "u", "state"], g2, g1):
        assert rel_err(a, b) < FP32_TOL, f"d{name}: {rel_err(a, b):.2e}"


def test_recurrent_matches_float64_loop():
    """The exact form is itself checked against a plain float64 loop written from the elementwise formula."""
    r, log_w, k, v, a, b, s0 = (x.detach().double() for x in _wkv7_inputs(1, 9, 2, 8, seed=5))
    S = s0[0].clone()
    ys = []
    for t in range(9):
        for h in range(2):
            w = log_w[0, t, h].exp()
            sa = S[h] @ a[0, t, h]
            S[h] = S[h] * w[None, :] + sa[:, None] * b[0, t, h][None, :] + v[0, t, h][:, None] * k[0, t, h][None, :]
        ys.append(torch.einsum("hij,hj->hi", S, r[0, t]))
    y, s = wkv7_recurrent(*(x.float() for x in (r, log_w, k, v, a, b)), state=s0.float())
    assert rel_err(y[0], torch.stack(ys)) < 1e-6 and rel_err(s[0], S) < 1e-6


def test_chunk_state_carry_equals_one_call():
    """Splitting a sequence and carrying the state gives the same outputs: what generation and infctx rely on."""
    r, log_w, k, v, a, b, s0 = (x.detach() for x in _wkv7_inputs(2, 40, 2, 16, seed=7))
    y_all, s_all = wkv7(r, log_w, k, v, a, b, s0, backend="torch")
    y1, s1 = wkv7(*(x[:, :13] for x in (r, log_w, k, v, a, b)), s0, backend="torch")
    y2, s2 = wkv7(*(x[:, 13:] for x in (r, log_w, k, v, a, b)), s1, backend="torch")
    assert rel_err(torch.cat([y1, y2], 1), y_all) < FP32_TOL and rel_err(s2, s_all) < FP32_TOL


@pytest.mark.parametrize("op", ["wkv7", "wkv6"])
def test_packed_documents_do_not_leak(op):
    lengths = [5, 17, 1, 9]
    T = sum(lengths)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    if op == "wkv7":
        *seq, s0 = (x.detach() for x in _wkv7_inputs(1, T, 2, 8, seed=3))
        fn, extra = wkv7, ()
    else:
        r, log_w, k, v, u, s0 = (x.detach() for x in _wkv6_inputs(1, T, 2, 8, seed=3))
        seq, fn, extra = [r, log_w, k, v], wkv6, (u,)
    states = s0.expand(len(lengths), -1, -1, -1).contiguous()
    y, finals = fn(*seq, *extra, states, cu_seqlens=cu, backend="torch")
    for i, (lo, hi) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        y_alone, s_alone = fn(*(x[:, lo:hi] for x in seq), *extra, states[i:i + 1], backend="torch")
        assert rel_err(y[:, lo:hi], y_alone) < FP32_TOL
        assert rel_err(finals[i:i + 1], s_alone) < FP32_TOL


def test_registry_auto_is_torch_on_cpu_and_rejects_unknown():
    assert registry.resolve("wkv7", "auto", torch.device("cpu")).name == "torch"
    with pytest.raises(Exception, match="unknown backend"):
        registry.resolve("wkv7", "nonsense", torch.device("cpu"))
