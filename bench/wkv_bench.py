"""WKV-7 kernel variants, forward + backward, at the training shapes: which fla configuration `ops/fla.py` uses.

For each shape (B, T, H, N=64) and variant it prints the median milliseconds of one layer's forward + backward
(initial state in, final state out, gradients for everything, as training does) and the error of y and of the
initial state's gradient against the fp32 torch reference at the small shape.

    python bench/wkv_bench.py
"""

import argparse
from functools import partial

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from rwkv_peft.ops import wkv7
from rwkv_peft.ops.fla import WKV7_LOG_DECAY_BOUND

SAFE64 = dict(safe_gate=True, lower_bound=WKV7_LOG_DECAY_BOUND, chunk_size=64)
# Each chunk size autotunes its own set of Triton kernels (minutes on a fresh machine): pick with --variants.
VARIANTS = {
    "default": {},
    "safe64": SAFE64,
    "safe32": SAFE64 | dict(chunk_size=32),
    "safe64-norecompute": SAFE64 | dict(disable_recompute=True),
    "safe32-norecompute": SAFE64 | dict(chunk_size=32, disable_recompute=True),
    "safe16-norecompute": SAFE64 | dict(chunk_size=16, disable_recompute=True),
    # wind_rwkv's chunked bf16 CUDA kernel (johanwind/wind_rwkv, JIT-compiled on first use): chunks of 16, one
    # thread block per head, the state kept per chunk in bf16; bf16 state in and out.
    "wind": "wind",
}


def wind_fwd_bwd(args: list[torch.Tensor], gy: torch.Tensor, gs: torch.Tensor):
    """The same call through wind_rwkv: its w is log(-log decay), its state our (value, key) orientation."""
    from wind_rwkv.rwkv7 import attn_chunked_cuda, load_chunked_cuda

    load_chunked_cuda(64)
    r, log_w, k, v, a, b, s0 = args
    w = (-log_w).log().bfloat16()
    y, s = attn_chunked_cuda(r, w, k, v, a, b, s0.transpose(-1, -2).bfloat16().contiguous())
    # Its backward wants a contiguous state gradient in its own layout.
    gs = gs.bfloat16().transpose(-1, -2).contiguous()
    torch.autograd.backward([y, s], [gy.bfloat16(), gs])
    s = s.transpose(-1, -2)
    return y, s


def inputs(B: int, T: int, H: int, N: int = 64, seed: int = 0) -> list[torch.Tensor]:
    """bf16 r, k, v, a, b and fp32 log_w in RWKV-7's range, fp32 state [B, H, K, V] (fla's layout)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    rn = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    r, k, v = rn(B, T, H, N), rn(B, T, H, N), rn(B, T, H, N)
    log_w = WKV7_LOG_DECAY_BOUND * torch.sigmoid(2 * rn(B, T, H, N))
    kk = F.normalize(rn(B, T, H, N), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g, device="cuda")
    s0 = rn(B, H, N, N) * 0.5
    r, k, v, a, b = (x.bfloat16() for x in (r, k, v, -kk, kk * iclr))
    return [x.requires_grad_() for x in (r, log_w, k, v, a, b, s0)]


def fwd_bwd(variant: dict, args: list[torch.Tensor], gy: torch.Tensor, gs: torch.Tensor):
    if variant == "wind":
        return wind_fwd_bwd(args, gy, gs)
    from fla.ops.rwkv7 import chunk_rwkv7

    r, log_w, k, v, a, b, s0 = args
    y, s = chunk_rwkv7(r, log_w, k, v, a, b, scale=1.0, initial_state=s0, output_final_state=True, **variant)
    torch.autograd.backward([y, s], [gy, gs])
    return y, s


def gpu_ms(fn, iters: int = 20) -> float:
    """Milliseconds of GPU kernel time per call (torch.profiler), free of host launch overhead, which dominates
    eager calls at B = 1 (the training step runs these kernels inside a CUDA graph)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.self_device_time_total for e in prof.key_averages())
    return total_us / 1e3 / iters


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1x1024x32,8x4096x32,1x1024x12,1x65536x32", help="BxTxH, comma-separated")
    ap.add_argument("--variants", default="safe64,safe64-norecompute", help=", ".join(VARIANTS))
    args = ap.parse_args()
    print("| shape B,T,H | variant | ms fwd+bwd (wall) | ms GPU | rel err y | rel err dstate0 |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        B, T, H = map(int, shape.split("x"))
        x = inputs(B, T, H)
        gy, gs = torch.randn_like(x[0]), torch.randn_like(x[-1])
        ref_y = ref_ds = None
        if B * T <= 8192:
            # Reference in fp32 from the same bf16 values; its state layout is [B, H, V, K].
            leaves = [t.detach().float().requires_grad_() for t in x]
            *seq, s0 = leaves
            yr, sr = wkv7(*seq, s0.transpose(-1, -2), backend="torch")
            torch.autograd.backward([yr, sr], [gy.float(), gs.transpose(-1, -2)])
            ref_y, ref_ds = yr.detach(), leaves[-1].grad
        for name in args.variants.split(","):
            variant = VARIANTS[name]
            for t in x:
                t.grad = None
            try:
                y, _ = fwd_bwd(variant, x, gy, gs)
                errs = ("-", "-") if ref_y is None else (f"{rel(y, ref_y):.1e}", f"{rel(x[-1].grad, ref_ds):.1e}")
                call = partial(fwd_bwd, variant, x, gy, gs)
                ms = do_bench(call, warmup=50, rep=300, return_mode="median")
                print(f"| {B},{T},{H} | {name} | {ms:.3f} | {gpu_ms(call):.3f} | {errs[0]} | {errs[1]} |", flush=True)
            except Exception as e:  # a variant the kernels reject is a result too
                print(f"| {B},{T},{H} | {name} | failed: {type(e).__name__}: {str(e)[:80]} | | | |", flush=True)


if __name__ == "__main__":
    main()
