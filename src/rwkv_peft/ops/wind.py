"""The "wind" backend (`--op wind`, opt-in): WKV-7 through wind_rwkv's chunked bf16 CUDA kernel.

wind_rwkv (github.com/johanwind/wind_rwkv, MIT; not on PyPI: `pip install git+https://github.com/johanwind/
wind_rwkv`) is built by torch's C++ extension loader on its first call, which needs nvcc and ninja (about a
minute, cached under TORCH_EXTENSIONS_DIR). One thread block per (sequence, head) walks the chunks of 16 tokens in
order and keeps only each chunk's start state for backward, so its speed grows with B x H:

    H100, one layer forward + backward, GPU time (bench/wkv_bench.py)   fla (ops/fla.py)   wind
    B=1, T=1024, H=32 (1.5B at ctx 1024)                                0.38 ms            0.87 ms
    B=8, T=4096, H=32 (1.5B at ctx 4096 x 8)                            8.91 ms            6.06 ms

So "auto" keeps fla; wind is for many sequences per step, and without CUDA graphs: its kernels run on the default
stream, not torch's current one, so a graph capture would not record them (refused here).

Translations at the boundary: its decay input is log(-log w) (RWKV-7's own w before the exp(-exp(.))), its state
is ours in bf16 (an fp32 initial state, a tuned one included, is rounded to bf16 on the way in, and its gradient
comes back from bf16). What the kernel cannot take (packed documents, T not a multiple of 16: prompts in
generation) goes to what "auto" picks: fla, or torch without fla.
"""

import importlib.util
from functools import cache

import torch
from torch import Tensor

from ..errors import UserError


@cache
def installed() -> bool:
    return importlib.util.find_spec("wind_rwkv") is not None


def available(device: torch.device) -> bool:
    return device.type == "cuda" and installed()


def unavailable_reason(device: torch.device) -> str:
    if device.type != "cuda":
        return f"it needs a CUDA device (tensors are on {device})"
    return ("wind_rwkv is not installed; `pip install git+https://github.com/johanwind/wind_rwkv` (it compiles its "
            "kernel on first use: nvcc and ninja needed)")


@cache
def _kernel(head_size: int):
    from wind_rwkv.rwkv7 import attn_chunked_cuda, load_chunked_cuda

    load_chunked_cuda(head_size)
    return attn_chunked_cuda


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient (the kernel's backward requires one)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def wkv7_wind(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None,
              cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shapes as `wkv7_recurrent`: r, log_w, k, v, a, b [B, T, H, N]; state [B or 1, H, N, N] fp32 or None.
    Returns y [B, T, H, N] in r's dtype and the final state [B, H, N, N] fp32."""
    B, T, H, N = r.shape
    if cu_seqlens is not None or T % 16:
        from . import wkv7  # what auto picks here (fla, or torch per document); imported late: ops imports us

        return wkv7(r, log_w, k, v, a, b, state, cu_seqlens=cu_seqlens, backend="auto")
    stream = torch.cuda.current_stream(r.device)
    if torch.cuda.is_current_stream_capturing() or stream != torch.cuda.default_stream(r.device):
        # Its kernels go to the default stream whatever torch's current one is: inside a graph capture they would
        # not be recorded (the replayed step would read unwritten memory), on another stream they would race.
        raise UserError("--op wind: wind_rwkv launches its kernels on CUDA's default stream, so they cannot run in a "
                        "CUDA graph or on another stream; train with --cuda_graph 0, or use --op fla")
    bf, out_dtype = torch.bfloat16, r.dtype
    w = (-log_w.float()).log()  # exp(-exp(w)) is the decay
    r, w, k, v, a, b = (t.to(bf).contiguous() for t in (r, w, k, v, a, b))
    s0 = torch.zeros(B, H, N, N, dtype=bf, device=r.device) if state is None else state.to(bf).expand(B, -1, -1, -1)
    y, final = _kernel(N)(r, w, k, v, a, b, s0.contiguous())
    # Its backward needs contiguous gradients of both outputs; whatever comes after may hand on strided ones.
    return _ContiguousGrad.apply(y).to(out_dtype), _ContiguousGrad.apply(final).float()
