"""The matrix products of one RWKV-7 LoRA training step at its own shapes, each timed alone: how far each runs from
the bf16 matmul ceiling, and whether stacking the independent ones helps (RWKV-7's r, k, v folded LoRA layers as one
stack: adapters/fold.py FoldedLoraStack).

Also the LoRA-A factor folded into the base product (bench/NOTES.md, next session's list): the forward as one
product with N = C + r, the input gradient as one with K = C + r.

Why: the trainer's step at 1.5B ctx 1024 spends ~14.4 ms in GEMMs against a 7.7 ms arithmetic floor (session 7's
profile). Either the shapes themselves run slowly on their own (few output tiles at T = 1024: one wave of the
GPU's 132 multiprocessors), and then stacking independent products (r, k, v; the LoRA factors) into one batched
launch is the lever, or they run fast alone and the time is lost around them.

Each row: the product as the model runs it (`F.linear`, weight [out, in]) and its input-gradient product, timed as
a CUDA-graph replay of `reps` calls (no launch overhead), TFLOP/s against the 8192^3 ceiling measured in the same
run.

    python bench/gemm_bench.py --model 1.5b --tokens 1024
"""

import argparse
import json

import torch
import torch.nn.functional as F
from common import MODELS

from rwkv_peft.adapters import fold
from rwkv_peft.model import RWKV7Config


def time_graph(fn, reps: int = 20) -> float:
    """Milliseconds per call of `fn`, replayed `reps` times inside one CUDA graph (median of 5 replays)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return sorted(times)[2]


def rows(T: int, cfg: RWKV7Config, rank: int) -> list[tuple[str, float, object]]:
    """(name, FLOP per call, fn) for the step's products at T tokens."""
    C, Fd, V = cfg.n_embd, cfg.dim_ffn, cfg.vocab_size
    bf = dict(device="cuda", dtype=torch.bfloat16)
    x, xf = torch.randn(T, C, **bf), torch.randn(T, Fd, **bf)
    w, wk, wv = torch.randn(C, C, **bf), torch.randn(Fd, C, **bf), torch.randn(C, Fd, **bf)
    x3, w3 = torch.randn(3, T, C, **bf), torch.randn(3, C, C, **bf)
    a, b, xr = torch.randn(rank, C, **bf), torch.randn(C, rank, **bf), torch.randn(T, rank, **bf)
    a6, x6 = torch.randn(6, rank, C, **bf), torch.randn(6, T, C, **bf)
    head, chunk = torch.randn(V, C, **bf), torch.randn(256, C, **bf)
    wa, dyh = torch.cat((w, a)), torch.randn(T, C + rank, **bf)  # LoRA A folded into the base weight
    dy, dh = dyh[:, :C].contiguous(), dyh[:, C:].contiguous()
    mm = 2 * T * C * C
    # r, k, v's folded LoRA layers forward and backward (fold.py), as three layers and as one stack.
    wa3, bl3 = torch.randn(3, C + rank, C, **bf), torch.randn(3, C, rank, **bf)
    xs, dys = torch.randn(3, T, C, **bf, requires_grad=True), torch.randn(3, T, C, **bf)
    masters = [torch.randn(shape, device="cuda", requires_grad=True) for _ in range(3)
               for shape in ((rank, C), (C, rank))]
    one = lambda i: fold.FoldedLora.apply(xs[i], wa3[i], bl3[i], *masters[2 * i:2 * i + 2], 2.0)  # noqa: E731
    three = lambda: torch.autograd.backward([one(i) for i in range(3)], list(dys))  # noqa: E731
    stack = lambda: fold.FoldedLoraStack.apply(xs, wa3, bl3, 2.0, *masters).backward(dys)  # noqa: E731
    folded_flop = 3 * (4 * T * C * (C + rank) + 8 * T * C * rank)
    # The folded ffn key's input gradient (out 4C): [dy, dh] concatenated (a [T, 4C + r] copy) into one product with
    # K = 4C + r, as fold.py runs it, against dy W + dh A (no copy; an r-deep product adding into the [T, C] result).
    wak, dyk, dhk = torch.randn(Fd + rank, C, **bf), torch.randn(T, Fd, **bf), torch.randn(T, rank, **bf)
    key_flop = 2 * T * (Fd + rank) * C
    return [
        ("C x C forward (r, k, v, output)", mm, lambda: F.linear(x, w)),
        ("C x C input gradient", mm, lambda: x @ w),
        ("three C x C, one after another", 3 * mm, lambda: [F.linear(x3[i], w3[i]) for i in range(3)]),
        ("three C x C as one bmm", 3 * mm, lambda: torch.bmm(x3, w3.transpose(1, 2))),
        ("ffn key forward (C -> 4C)", 4 * mm, lambda: F.linear(x, wk)),
        ("ffn key input gradient", 4 * mm, lambda: xf @ wk),
        ("ffn value forward (4C -> C)", 4 * mm, lambda: F.linear(xf, wv)),
        ("ffn value input gradient", 4 * mm, lambda: x @ wv),
        (f"LoRA A (C -> {rank})", 2 * T * C * rank, lambda: F.linear(x, a)),
        (f"LoRA B ({rank} -> C)", 2 * T * C * rank, lambda: F.linear(xr, b)),
        ("six LoRA A, one after another", 6 * 2 * T * C * rank, lambda: [F.linear(x6[i], a6[i]) for i in range(6)]),
        ("six LoRA A as one bmm", 6 * 2 * T * C * rank, lambda: torch.bmm(x6, a6.transpose(1, 2))),
        ("C x C forward + LoRA A, two products", mm + 2 * T * C * rank, lambda: (F.linear(x, w), F.linear(x, a))),
        (f"C x (C + {rank}) forward, LoRA A folded in", mm + 2 * T * C * rank, lambda: F.linear(x, wa)),
        ("input gradient + LoRA's, two products", mm + 2 * T * C * rank, lambda: torch.addmm(dy @ w, dh, a)),
        (f"input gradient, K = C + {rank}, one product", mm + 2 * T * C * rank, lambda: dyh @ wa),
        ("head, one 256-token loss chunk", 2 * 256 * C * V, lambda: F.linear(chunk, head)),
        ("r, k, v folded LoRA forward + backward, three layers", folded_flop, three),
        ("r, k, v folded LoRA forward + backward, one stack", folded_flop, stack),
        ("ffn key input gradient, [dy, dh] concatenated, K = 4C + r", key_flop,
         lambda: torch.cat((dyk, dhk), -1) @ wak),
        ("ffn key input gradient, dy W + dh A (addmm)", key_flop, lambda: torch.addmm(dyk @ wak[:Fd], dhk, wak[Fd:])),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="1.5b", choices=MODELS)
    ap.add_argument("--tokens", type=int, default=1024, help="tokens per micro-batch (ctx x bsz)")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--out", help="append the rows as JSON lines here")
    args = ap.parse_args()
    n_layer, n_embd = MODELS[args.model]
    cfg = RWKV7Config(n_layer=n_layer, n_embd=n_embd)
    n = 8192
    p, q = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ceiling = 2 * n**3 / (time_graph(lambda: p @ q, reps=5) * 1e-3) / 1e12
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: bf16 8192^3 {ceiling:.0f} TFLOP/s; "
          f"{args.model} (C {n_embd}), {args.tokens} tokens, LoRA r{args.rank}")
    print("| product | us per call | TFLOP/s | of the ceiling |\n|---|---|---|---|")
    for name, flop, fn in rows(args.tokens, cfg, args.rank):
        ms = time_graph(fn)
        rate = flop / (ms * 1e-3) / 1e12
        print(f"| {name} | {ms * 1e3:.1f} | {rate:.0f} | {rate / ceiling:.0%} |")
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"model": args.model, "tokens": args.tokens, "product": name, "us": ms * 1e3,
                                    "tflops": rate, "ceiling": ceiling}) + "\n")


if __name__ == "__main__":
    main()
