"""The "fla" backend: flash-linear-attention's (fla-core 0.6) chunked Triton kernels for WKV-7 and WKV-6, on CUDA.

Same function as the torch references in wkv7.py / wkv6.py, with three translations at the boundary:
- the state: ours is [B, H, N(value), N(key)] (the official orientation, `y = S r`), fla's is [B, H, K, V],
  so it is transposed on the way in and out (autograd carries the transpose to the state's gradient);
- the decay: both sides take the log decay, so it passes through unchanged;
- packing: `cu_seqlens` passes through (B = 1); the CPU copy fla wants for its chunk index is handed over
  when the caller's `cu_seqlens` lives on the CPU, so no device sync is needed to build it.

fla is imported lazily, inside the call: importing rwkv-peft never needs it (nor Triton).
"""

import importlib.util
from functools import cache

import torch
from torch import Tensor

from .wkv7 import LOG_DECAY_BOUND

# Asserting RWKV-7's bound on the log decay (LOG_DECAY_BOUND, -e^{-1/2}) lets fla take its tensor-core path
# (chunks of 64 with a centered decay, exact in fp32 for |log w| * 33 * log2(e) <= 124), what fla's own RWKV-7
# layer uses. On an H100 at the 1.5B shape (B=1, T=1024, H=32) its kernels take 0.43 ms of GPU time per layer,
# forward + backward, inside a CUDA graph; called eagerly, one call costs 3.4 ms of wall time, nearly all of it
# fla's host-side launch work (bench/NOTES.md). Its outputs and gradients pass tests/ops/test_fla_gpu.py at bf16
# tolerance. The default path (chunks of 16) was not re-measured: autotuning each chunk size's kernels costs
# minutes of compilation on a fresh machine.
WKV7_KERNEL = dict(safe_gate=True, lower_bound=LOG_DECAY_BOUND, chunk_size=64)


@cache
def installed() -> bool:
    return importlib.util.find_spec("fla") is not None


def available(device: torch.device) -> bool:
    """Usable on this device: a CUDA device and fla importable."""
    return device.type == "cuda" and installed()


def unavailable_reason(device: torch.device) -> str:
    if device.type != "cuda":
        return f"it needs a CUDA device (tensors are on {device})"
    return "flash-linear-attention is not installed; `pip install rwkv-peft[fla]`"


def _fla_state(state: Tensor | None, n: int) -> Tensor | None:
    """Our [n or 1, H, V, K] state -> fla's [n, H, K, V] fp32; a state shared by all sequences is expanded."""
    if state is None:
        return None
    return state.float().expand(n, -1, -1, -1).transpose(-1, -2)


def _packing(cu_seqlens: Tensor | None, device: torch.device) -> dict:
    if cu_seqlens is None:
        return {}
    on_cpu = cu_seqlens.device.type == "cpu"
    return dict(cu_seqlens=cu_seqlens.to(device=device, dtype=torch.long),
                cu_seqlens_cpu=cu_seqlens.long() if on_cpu else None)


def wkv7_fla(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None,
             cu_seqlens: Tensor | None = None, keep_intermediates: bool = True) -> tuple[Tensor, Tensor]:
    """WKV-7 through `fla.ops.rwkv7.chunk_rwkv7`. Shapes as `wkv7_recurrent`: r, log_w, k, v, a, b [B, T, H, N]
    (bf16 intended; log_w may be fp32), state [B or 1, H, N, N] fp32 or None (one per document when packed).
    keep_intermediates: save the forward's chunk states and matrices for backward (fla's disable_recompute)
    instead of recomputing them there. Measured on an H100 (bench/NOTES.md), 1.5B LoRA ctx 1024 bsz 1: the
    trainer 26.1 -> 28.3 Kt/s for +1.56 GiB (66 MB per layer per 1K tokens) without grad_cp; with grad_cp they
    live for one block at a time (ctx 4096 x 8: -6% step time). Hence on by default.

    Needs log_w >= -e^{-1/2} (what RWKV-7 computes); returns y [B, T, H, N] and the fp32 final state [B, H, N, N].
    """
    from fla.ops.rwkv7 import chunk_rwkv7

    # fla's kernels want one dtype for r, k, v, a, b (a trained fp32 parameter upstream can promote some of them).
    k, v, a, b = (t.to(r.dtype) for t in (k, v, a, b))
    n = r.shape[0] if cu_seqlens is None else len(cu_seqlens) - 1
    y, final = chunk_rwkv7(r, log_w, k, v, a, b, scale=1.0, initial_state=_fla_state(state, n),
                           output_final_state=True, **_packing(cu_seqlens, r.device), **WKV7_KERNEL,
                           disable_recompute=keep_intermediates)
    return y, final.transpose(-1, -2)


def wkv6_fla(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None,
             cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """WKV-6 through `fla.ops.rwkv6.chunk_rwkv6`. Shapes as `wkv6_recurrent`: r, log_w, k, v [B, T, H, N],
    u [H, N], state [B or 1, H, N, N] fp32 or None. Returns y [B, T, H, N] and the fp32 final state."""
    from fla.ops.rwkv6 import chunk_rwkv6

    k, v = k.to(r.dtype), v.to(r.dtype)
    n = r.shape[0] if cu_seqlens is None else len(cu_seqlens) - 1
    y, final = chunk_rwkv6(r, k, v, log_w, u, scale=1.0, initial_state=_fla_state(state, n),
                           output_final_state=True, **_packing(cu_seqlens, r.device))
    return y, final.transpose(-1, -2)
