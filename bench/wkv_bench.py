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

from rwkv_peft.ops import LOG_DECAY_BOUND, wkv7

SAFE64 = dict(safe_gate=True, lower_bound=LOG_DECAY_BOUND, chunk_size=64)
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


def ours_variant(name: str) -> dict:
    """"triton" or e.g. "triton:C=16/BV=32/fwd=4/state=4/factors=8/prefetch=0": this project's kernels
    (ops/wkv7_triton.py) with chunk size C, value rows per program BV, warps per kernel and the walks' prefetch;
    "keepinv=0" inverts L again in backward; "terms=1" calls them with RWKV-7's terms (w_raw, kk, iclr in bf16,
    as the model passes them; `as_terms`)."""
    opts = dict(kv.split("=") for kv in name.partition(":")[2].split("/") if kv)
    return {key: int(val) for key, val in opts.items()}


_OURS_DEFAULTS: dict = {}


def ours_fwd_bwd(opts: dict, args: list[torch.Tensor], gy: torch.Tensor, gs: torch.Tensor):
    from rwkv_peft.ops import wkv7_triton as ours

    # Every variant starts from the module's defaults: settings named in the variant replace them.
    if not _OURS_DEFAULTS:
        names = ("CHUNK", "VALUE_BLOCK", "WARPS", "STAGES", "PREFETCH", "LOW_PRECISION", "KEEP_INVERSE", "KEEP_PREP",
                 "KEPT_BF16")
        _OURS_DEFAULTS.update({n: getattr(ours, n, None) for n in names})  # (older copies lack some)
    defaults = _OURS_DEFAULTS
    ours.CHUNK, ours.VALUE_BLOCK = opts.get("C", defaults["CHUNK"]), opts.get("BV", defaults["VALUE_BLOCK"])
    ours.WARPS = {kernel: opts.get(kernel, n) for kernel, n in defaults["WARPS"].items()}
    ours.STAGES = opts.get("stages", defaults["STAGES"])
    ours.PREFETCH = bool(opts["prefetch"]) if "prefetch" in opts else defaults["PREFETCH"]
    ours.LOW_PRECISION = {kernel: bool(opts.get("low" + kernel, on))
                          for kernel, on in defaults["LOW_PRECISION"].items()}
    ours.KEEP_INVERSE = bool(opts.get("keepinv", defaults["KEEP_INVERSE"]))
    ours.KEEP_PREP = bool(opts.get("keepprep", defaults["KEEP_PREP"]))
    ours.KEPT_BF16 = bool(opts.get("keptbf16", defaults["KEPT_BF16"]))
    r, log_w, k, v, a, b, s0 = args
    if opts.get("terms"):
        y, s = ours.wkv7_triton_terms(r, k=k, v=v, state=s0.transpose(-1, -2), **as_terms(log_w, a, b))
    else:
        y, s = ours.wkv7_triton(r, log_w, k, v, a, b, s0.transpose(-1, -2))
    torch.autograd.backward([y, s], [gy, gs.transpose(-1, -2)])
    return y, s.transpose(-1, -2)


_TERMS: dict = {}


def as_terms(log_w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> dict:
    """w_raw, kk, iclr (bf16 leaves, made once per input) that give log w, a, b back: w_raw = logit(log w / bound),
    kk = -a, iclr = b / kk. y and dstate0 compare with the reference up to w_raw's bf16 rounding; the gradients
    are those of other tensors (the bench prints no error for them)."""
    key = log_w.data_ptr()
    if key not in _TERMS:
        with torch.no_grad():
            kk = -a.float()
            # (clamped: log w / bound rounds to 1 for some inputs, and kk is 0 where a was)
            terms = dict(w_raw=torch.logit(log_w / LOG_DECAY_BOUND, eps=1e-6), kk=kk,
                         iclr=torch.where(kk == 0, 0.0, b.float() / kk))
        _TERMS[key] = {n: t.bfloat16().requires_grad_() for n, t in terms.items()}
    return _TERMS[key]


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
    log_w = LOG_DECAY_BOUND * torch.sigmoid(2 * rn(B, T, H, N))
    kk = F.normalize(rn(B, T, H, N), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g, device="cuda")
    s0 = rn(B, H, N, N) * 0.5
    r, k, v, a, b = (x.bfloat16() for x in (r, k, v, -kk, kk * iclr))
    return [x.requires_grad_() for x in (r, log_w, k, v, a, b, s0)]


def fwd_bwd(variant: dict, args: list[torch.Tensor], gy: torch.Tensor, gs: torch.Tensor):
    if variant == "wind":
        return wind_fwd_bwd(args, gy, gs)
    if isinstance(variant, str) and variant.startswith("triton"):
        return ours_fwd_bwd(ours_variant(variant), args, gy, gs)
    from fla.ops.rwkv7 import chunk_rwkv7

    r, log_w, k, v, a, b, s0 = args
    y, s = chunk_rwkv7(r, log_w, k, v, a, b, scale=1.0, initial_state=s0, output_final_state=True, **variant)
    torch.autograd.backward([y, s], [gy, gs])
    return y, s


def gpu_ms(fn, iters: int = 20, kernels: bool = False) -> float:
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
    events = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    total_us = sum(e.self_device_time_total for e in events)
    if kernels:  # where the time goes, per kernel and call
        for e in sorted(events, key=lambda e: -e.self_device_time_total)[:8]:
            print(f"|   | {e.key[:60]} | | {e.self_device_time_total / 1e3 / iters:.3f} | | | |")
    return total_us / 1e3 / iters


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref.double()).norm() / ref.double().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1x1024x32,8x4096x32,1x1024x12,1x65536x32", help="BxTxH, comma-separated")
    ap.add_argument("--variants", default="safe64,safe64-norecompute", help=", ".join(VARIANTS)
                    + ", triton[:C=../BV=../prep=../fwd=../state=../values=../factors=../stages=.."
                      "/lowchunk=0|1/lowprep=0|1/prefetch=0|1/keepinv=0|1/keepprep=0|1/keptbf16=0|1"
                      "/terms=0|1]")
    ap.add_argument("--kernels", action="store_true", help="also print each kernel's GPU time per call")
    args = ap.parse_args()
    print("| shape B,T,H | variant | ms fwd+bwd (wall) | ms GPU | rel err y | rel err dstate0 | worst other grad |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        B, T, H = map(int, shape.split("x"))
        x = inputs(B, T, H)
        gy, gs = torch.randn_like(x[0]), torch.randn_like(x[-1])
        ref_y = ref_ds = ref_grads = None
        if B * T <= 8192:
            # Reference in fp32 from the same bf16 values; its state layout is [B, H, V, K].
            leaves = [t.detach().float().requires_grad_() for t in x]
            *seq, s0 = leaves
            yr, sr = wkv7(*seq, s0.transpose(-1, -2), backend="torch")
            torch.autograd.backward([yr, sr], [gy.float(), gs.transpose(-1, -2)])
            ref_y, ref_ds, ref_grads = yr.detach(), leaves[-1].grad, [t.grad for t in leaves[:-1]]
        for name in args.variants.split(","):
            variant = name if name.startswith("triton") else VARIANTS[name]
            for t in x:
                t.grad = None
            try:
                y, _ = fwd_bwd(variant, x, gy, gs)
                terms = "terms=1" in name
                errs = ("-", "-", "-") if ref_y is None else (
                    f"{rel(y, ref_y):.1e}", f"{rel(x[-1].grad, ref_ds):.1e}",
                    "-" if terms else f"{max(rel(t.grad, ref) for t, ref in zip(x[:-1], ref_grads)):.1e}")
                call = partial(fwd_bwd, variant, x, gy, gs)
                ms = do_bench(call, warmup=50, rep=300, return_mode="median")
                gpu = gpu_ms(call, kernels=args.kernels)
                print(f"| {B},{T},{H} | {name} | {ms:.3f} | {gpu:.3f} | {' | '.join(errs)} |", flush=True)
            except Exception as e:  # a variant the kernels reject is a result too
                print(f"| {B},{T},{H} | {name} | failed: {type(e).__name__}: {str(e)[:80]} | | | | |", flush=True)


if __name__ == "__main__":
    main()
