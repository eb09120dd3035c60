"""Token shift: each position sees the previous position's input (RWKV's 1-token convolution)."""

import torch
from torch import Tensor


def token_shift(x: Tensor, prev: Tensor | None = None, cu_seqlens: Tensor | None = None) -> Tensor:
    """x[t-1] for every t: x [B, T, C] -> [B, T, C].

    Position 0 takes `prev` [B, C] (the last input of the previous call) or zeros. With `cu_seqlens` (B = 1,
    documents packed along T) every document's first position takes zeros, so no document sees another.
    """
    first = x.new_zeros(x.shape[0], 1, x.shape[2]) if prev is None else prev[:, None].to(x.dtype)
    shifted = torch.cat([first, x[:, :-1]], dim=1)
    if cu_seqlens is not None:
        shifted = shifted.index_fill(1, cu_seqlens[:-1].to(x.device), 0.0)
    return shifted
