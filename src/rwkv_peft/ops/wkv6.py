"""WKV-6, the RWKV-6 state update, in pure PyTorch: an exact per-step recurrence and an equivalent chunked form.

Per head the state S is N x N, rows = value channels, columns = key channels (the orientation of `time_state`
files; the `rwkv` pip package keeps the transpose). With row vectors r, w, k, v and the bonus u:

    y_t = (S_{t-1} + v_t^T (u * k_t)) r_t^T          S_t = S_{t-1} diag(w_t) + v_t^T k_t

The output reads the OLD state plus the bonus; w = exp(log_w) where RWKV-6 has log_w = -exp(time_decay + ...).
"""

import torch
from torch import Tensor

from .wkv7 import _pairwise_decay


def wkv6_recurrent(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, u: Tensor,
                   state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact recurrence, one token at a time, in fp32.

    Args:
        r, log_w, k, v: [B, T, H, N]; u: [H, N].
        state: [B, H, N, N] fp32 (value rows, key columns) or None for zeros.
    Returns:
        y [B, T, H, N] in r's dtype, final state [B, H, N, N] fp32.
    """
    B, T, H, N = r.shape
    out_dtype = r.dtype
    r, w, k, v, u = (x.float() for x in (r, log_w.exp(), k, v, u))
    S = r.new_zeros(B, H, N, N) if state is None else state.float()
    ys = []
    for t in range(T):
        kv = v[:, t, :, :, None] * k[:, t, :, None, :]  # [B, H, N(v), N(k)]
        ys.append(((S + kv * u[None, :, None, :]) @ r[:, t, :, :, None])[..., 0])
        S = S * w[:, t, :, None, :] + kv
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(out_dtype), S


def wkv6_chunked(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, u: Tensor,
                 state: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """The same function as `wkv6_recurrent`, chunk by chunk (any T). Shapes as there.

    Inside a chunk with start state S0 and cumulative log decay G_t (G_0 = 0):
        y_t = S0 (r_t * e^{G_{t-1}})^T + sum_{s<t} (r_t . k_s e^{G_{t-1} - G_s}) v_s + (r_t . u k_t) v_t
    """
    B, T, H, N = r.shape
    out_dtype = r.dtype
    r, lw, k, v = (x.float().transpose(1, 2) for x in (r, log_w, k, v))  # [B, H, T, N]
    u = u.float()[None, :, None, :]
    S = r.new_zeros(B, H, N, N) if state is None else state.float()
    ys = []
    for start in range(0, T, chunk_size):
        sl = slice(start, start + chunk_size)
        rc, lwc, kc, vc = r[:, :, sl], lw[:, :, sl], k[:, :, sl], v[:, :, sl]
        g = lwc.cumsum(dim=2)
        g_prev = g - lwc
        m_rk = torch.einsum("bhtj,bhsj,bhtsj->bhts", rc, kc, _pairwise_decay(g_prev, g, strict=True))
        bonus = (rc * u * kc).sum(-1, keepdim=True) * vc
        ys.append((rc * g_prev.exp()) @ S.transpose(-1, -2) + m_rk @ vc + bonus)
        tail = (g[:, :, -1:] - g).exp()
        S = S * g[:, :, -1, None, :].exp() + vc.transpose(-1, -2) @ (kc * tail)
    y = torch.cat(ys, dim=2) if ys else r.new_zeros(B, H, 0, N)
    return y.transpose(1, 2).to(out_dtype), S
