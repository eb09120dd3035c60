"""WKV-7, the RWKV-7 state update, in pure PyTorch: an exact per-step recurrence and an equivalent chunked form.

Per head the state S is N x N with rows = value channels and columns = key channels (the official orientation,
the one `time_state` files and the `rwkv` package use). With row vectors r, w, k, v, a, b of length N:

    S_t = S_{t-1} (diag(w_t) + a_t^T b_t) + v_t^T k_t          y_t = S_t r_t^T

RWKV-7 calls this with a = -kk and b = kk * iclr, and w = exp(log_w) with log_w = -e^-0.5 sigmoid(w_raw)
(`rwkv7_log_decay`): its "terms" kk, iclr and w_raw, which `ops.wkv7_terms` takes as they are.

Both forms take the log decay, an optional fp32 initial state and return the fp32 final state; autograd gives
gradients for every input, the initial state included (state tuning trains it).
"""

import math

import torch
from torch import Tensor

# RWKV-7's log decay is -e^{-1/2} sigmoid(.), so it never goes below this; the fast kernels rely on the bound.
LOG_DECAY_BOUND = -math.exp(-0.5)


def rwkv7_log_decay(w_raw: Tensor) -> Tensor:
    """RWKV-7's log decay from its decay path's output w_raw (w0 + tanh(x_w w1) w2), in fp32 as the official
    package computes it (float64 for float64): in (LOG_DECAY_BOUND, 0)."""
    return LOG_DECAY_BOUND * torch.sigmoid(w_raw if w_raw.dtype == torch.float64 else w_raw.float())


def wkv7_recurrent(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
                   state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact recurrence, one token at a time, in fp32 (float64 for float64 inputs). The reference every other form
    is tested against.

    Args:
        r, log_w, k, v, a, b: [B, T, H, N]; log_w is the log of the per-channel decay (<= 0).
        state: [B, H, N, N] fp32 (value rows, key columns) or None for zeros.
    Returns:
        y [B, T, H, N] in r's dtype, final state [B, H, N, N] fp32 (float64).
    """
    B, T, H, N = r.shape
    out_dtype = r.dtype
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    r, w, k, v, a, b = (x.to(dtype) for x in (r, log_w.exp(), k, v, a, b))
    S = r.new_zeros(B, H, N, N) if state is None else state.to(dtype)
    ys = []
    for t in range(T):
        sa = S @ a[:, t, :, :, None]  # [B, H, N, 1]
        S = S * w[:, t, :, None, :] + sa * b[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append((S @ r[:, t, :, :, None])[..., 0])
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(B, 0, H, N)
    return y.to(out_dtype), S


def _pairwise_decay(g_row: Tensor, g_col: Tensor, strict: bool) -> Tensor:
    """exp(g_row[t] - g_col[s]) for s < t (strict) or s <= t, zero elsewhere.

    g_row, g_col: [B, H, C, N] cumulative log decays. Returns [B, H, C, C, N]. The exponent is <= 0 wherever it
    is kept, so nothing overflows however long the chunk's decay product gets.
    """
    C = g_row.shape[2]
    diff = g_row[:, :, :, None, :] - g_col[:, :, None, :, :]
    keep = torch.ones(C, C, dtype=torch.bool, device=g_row.device).tril(-1 if strict else 0)
    return diff.masked_fill(~keep[:, :, None], float("-inf")).exp()


def wkv7_chunked(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor,
                 state: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """The same function as `wkv7_recurrent`, computed chunk by chunk (any T; the last chunk may be short).

    Inside a chunk with start state S0 and cumulative log decay G_t (G_0 = 0), the "state times a" terms
    sa_t = S_{t-1} a_t^T depend on each other through a unit lower-triangular system:

        (I - M_ab) SA = (a * e^{G_{t-1}}) S0^T + M_ak V
        M_xy[t, s] = sum_j x_t[j] y_s[j] e^{G_{t-1}[j] - G_s[j]}   for s < t

    after which outputs and the next start state are plain matrix products. Cost per chunk: O(C^2 N) per head.

    Shapes as in `wkv7_recurrent`.
    """
    B, T, H, N = r.shape
    out_dtype = r.dtype
    # [B, H, T, N] so that each chunk is a contiguous slice along dim 2.
    r, lw, k, v, a, b = (x.float().transpose(1, 2) for x in (r, log_w, k, v, a, b))
    S = r.new_zeros(B, H, N, N) if state is None else state.float()
    ys = []
    for start in range(0, T, chunk_size):
        sl = slice(start, start + chunk_size)
        rc, lwc, kc, vc, ac, bc = r[:, :, sl], lw[:, :, sl], k[:, :, sl], v[:, :, sl], a[:, :, sl], b[:, :, sl]
        C = rc.shape[2]
        g = lwc.cumsum(dim=2)                     # G_t, inclusive
        g_prev = g - lwc                          # G_{t-1}
        d_prev = _pairwise_decay(g_prev, g, strict=True)   # e^{G_{t-1} - G_s}, s < t
        d_incl = _pairwise_decay(g, g, strict=False)       # e^{G_t - G_s},     s <= t
        m_ab = torch.einsum("bhtj,bhsj,bhtsj->bhts", ac, bc, d_prev)
        m_ak = torch.einsum("bhtj,bhsj,bhtsj->bhts", ac, kc, d_prev)
        rhs = (ac * g_prev.exp()) @ S.transpose(-1, -2) + m_ak @ vc           # [B, H, C, N(v)]
        eye = torch.eye(C, dtype=rc.dtype, device=rc.device)
        sa = torch.linalg.solve_triangular(eye - m_ab, rhs, upper=False, unitriangular=True)
        m_rb = torch.einsum("bhtj,bhsj,bhtsj->bhts", rc, bc, d_incl)
        m_rk = torch.einsum("bhtj,bhsj,bhtsj->bhts", rc, kc, d_incl)
        ys.append((rc * g.exp()) @ S.transpose(-1, -2) + m_rb @ sa + m_rk @ vc)
        tail = (g[:, :, -1:] - g).exp()           # e^{G_C - G_s}
        S = S * g[:, :, -1, None, :].exp() + sa.transpose(-1, -2) @ (bc * tail) + vc.transpose(-1, -2) @ (kc * tail)
    y = torch.cat(ys, dim=2) if ys else r.new_zeros(B, H, 0, N)
    return y.transpose(1, 2).to(out_dtype), S
