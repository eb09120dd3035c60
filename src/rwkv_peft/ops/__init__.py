"""Kernels: WKV-7 and WKV-6 with a pure-PyTorch reference and pluggable fast backends.

Public entry points take [B, T, H, N] tensors, an optional fp32 initial state [B, H, N, N] (value rows, key
columns) and return (y, final_state). With `cu_seqlens` (B must be 1) the sequence is several documents packed
end to end: the state restarts from `state[i]` (or zeros) at each boundary and one final state per document is
returned, so nothing leaks between documents.
"""

import torch
from torch import Tensor

from . import fla, registry, wind, wkv7_triton
from .relu_squared import relu_squared
from .token_shift import token_shift
from .wkv6 import wkv6_chunked, wkv6_recurrent
from .wkv7 import LOG_DECAY_BOUND, rwkv7_log_decay, wkv7_chunked, wkv7_recurrent

_always = lambda device: True  # noqa: E731

registry.register("wkv7", "torch", wkv7_chunked, _always)
registry.register("wkv6", "torch", wkv6_chunked, _always)
# fla's Triton kernels win on CUDA whenever fla is installed ("auto" picks them there).
registry.register("wkv7", "fla", fla.wkv7_fla, fla.available, priority=10, unavailable_reason=fla.unavailable_reason)
registry.register("wkv6", "fla", fla.wkv6_fla, fla.available, priority=10, unavailable_reason=fla.unavailable_reason)
# wind_rwkv's CUDA kernel: faster than fla only with many sequences per step (wind.py), so never picked by "auto".
registry.register("wkv7", "wind", wind.wkv7_wind, wind.available, priority=-1,
                  unavailable_reason=wind.unavailable_reason)
# This project's own Triton kernels (wkv7_triton.py): named, or under "auto" for RWKV-7's model through
# `wkv7_terms` (below), where they were measured to win.
registry.register("wkv7", "triton", wkv7_triton.wkv7_triton, wkv7_triton.available, priority=-1,
                  unavailable_reason=wkv7_triton.unavailable_reason)
# Backends that take RWKV-7's own terms (`wkv7_terms`): named, or "auto" where `wkv7_triton.auto_runs_terms` says
# so; elsewhere "auto" forms log w, a, b in the caller's graph and calls `wkv7`.
registry.register("wkv7_terms", "triton", wkv7_triton.wkv7_triton_terms, wkv7_triton.available,
                  unavailable_reason=wkv7_triton.unavailable_reason)
_TAKES_TERMS = frozenset(registry.backends("wkv7_terms"))


def _per_document(fn, cu_seqlens: Tensor, state: Tensor | None, seq_args: tuple, extra: tuple = ()):
    """Run a backend without varlen support once per packed document and stitch the results."""
    bounds = cu_seqlens.tolist()
    ys, finals = [], []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        s0 = None if state is None else state[i:i + 1]
        y, s = fn(*(x[:, lo:hi] for x in seq_args), *extra, state=s0)
        ys.append(y)
        finals.append(s)
    return torch.cat(ys, dim=1), torch.cat(finals, dim=0)


def _check_packed(r: Tensor, cu_seqlens: Tensor | None) -> None:
    if cu_seqlens is not None and r.shape[0] != 1:
        raise ValueError(f"cu_seqlens needs batch size 1 (documents packed along T), got B={r.shape[0]}")


# Under torch.compile the backend lookup and the kernels (fla's are opaque to the compiler) run eagerly: the
# graph breaks here, and the elementwise work on either side is compiled.
@torch.compiler.disable
def wkv7(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None, *,
         cu_seqlens: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV. r, log_w, k, v, a, b: [B, T, H, N]; state [B, H, N, N] fp32 or None.

    Returns y [B, T, H, N] (dtype of r) and the final state [B, H, N, N] fp32 ([num_docs, H, N, N] when packed).
    """
    _check_packed(r, cu_seqlens)
    impl = registry.resolve("wkv7", backend, r.device)
    if cu_seqlens is not None and impl.name == "torch":
        return _per_document(impl.fn, cu_seqlens, state, (r, log_w, k, v, a, b))
    if cu_seqlens is not None:
        return impl.fn(r, log_w, k, v, a, b, state=state, cu_seqlens=cu_seqlens)
    return impl.fn(r, log_w, k, v, a, b, state=state)


def wkv7_terms(r: Tensor, w_raw: Tensor, k: Tensor, v: Tensor, kk: Tensor, iclr: Tensor, state: Tensor | None = None,
               *, cu_seqlens: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """RWKV-7's WKV from the model's own terms, each [B, T, H, N]: its decay path's output w_raw, removal key kk and
    in-context learning rate iclr; that is `wkv7` with log_w = rwkv7_log_decay(w_raw), a = -kk, b = kk * iclr.

    A backend that takes the terms (--op triton, and "auto" in bf16 on CUDA unless documents are packed) forms those
    inside its kernels and keeps only the terms for backward, which the caller's graph keeps anyway; its kernels are
    torch operators, so under torch.compile the caller's graph does not break here (unless documents are packed:
    they run one at a time). For the other backends log w, a and b are formed here, outside the WKV call, so under
    torch.compile they stay in the caller's compiled graph, fused with its other elementwise work."""
    backend = _terms_backend(backend, r.device, r.dtype, r.shape[-1], cu_seqlens is not None)
    if backend not in _TAKES_TERMS:
        return wkv7(r, rwkv7_log_decay(w_raw), k, v, -kk, kk * iclr, state, cu_seqlens=cu_seqlens, backend=backend)
    _check_packed(r, cu_seqlens)
    if cu_seqlens is not None:
        return _wkv7_terms_packed(r, w_raw, k, v, kk, iclr, state, cu_seqlens=cu_seqlens, backend=backend)
    return registry.resolve("wkv7_terms", backend, r.device).fn(r, w_raw, k, v, kk, iclr, state=state)


def _terms_backend(backend: str, device: torch.device, dtype: torch.dtype, head_size: int, packed: bool) -> str:
    auto_triton = backend == "auto" and wkv7_triton.auto_runs_terms(device, dtype, head_size, packed)
    return "triton" if auto_triton else backend


def model_backend(version: int, backend: str, device: torch.device, dtype: torch.dtype, head_size: int,
                  packed: bool) -> str:
    """The name of the WKV backend that RWKV-`version`'s model runs on with these settings (`--op` is `backend`)."""
    if version == 7:
        backend = _terms_backend(backend, device, dtype, head_size, packed)
    return registry.resolve(f"wkv{version}", backend, device).name


@torch.compiler.disable
def _wkv7_terms_packed(r, w_raw, k, v, kk, iclr, state, *, cu_seqlens, backend):
    fn = registry.resolve("wkv7_terms", backend, r.device).fn
    return fn(r, w_raw, k, v, kk, iclr, state=state, cu_seqlens=cu_seqlens)


@torch.compiler.disable
def wkv6(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, u: Tensor, state: Tensor | None = None, *,
         cu_seqlens: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """RWKV-6 WKV. r, log_w, k, v: [B, T, H, N]; u: [H, N]; state [B, H, N, N] fp32 or None. Returns as `wkv7`."""
    _check_packed(r, cu_seqlens)
    impl = registry.resolve("wkv6", backend, r.device)
    if cu_seqlens is not None and impl.name == "torch":
        return _per_document(impl.fn, cu_seqlens, state, (r, log_w, k, v), (u,))
    if cu_seqlens is not None:
        return impl.fn(r, log_w, k, v, u, state=state, cu_seqlens=cu_seqlens)
    return impl.fn(r, log_w, k, v, u, state=state)


__all__ = ["wkv7", "wkv7_terms", "wkv6", "model_backend", "rwkv7_log_decay", "LOG_DECAY_BOUND", "token_shift",
           "relu_squared", "wkv7_recurrent", "wkv7_chunked", "wkv6_recurrent", "wkv6_chunked", "registry"]
