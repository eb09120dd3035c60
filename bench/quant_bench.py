"""Speed and memory of a quantized frozen base (`--quant`), written to bench/results/ as a dated markdown table.

One frozen linear [D, D] under T tokens, forward + backward (gradient to x only), for each way of running it on
a quantized weight: the dense weight (reference), `recompute` (what `QuantizedWeight.linear` does: dequantize in
forward and again in backward), `saved` (dequantize once and let autograd keep the dense copy, RWKV-PEFT's way),
and bitsandbytes' `matmul_4bit` (nf4). Runs on CPU or CUDA; reports median and min milliseconds over interleaved
repetitions (interleaving spreads machine noise evenly over the variants).

The issue's acceptance run (1.5B LoRA training with a quantized base: speed and memory) is the trainer itself:
`bench/cli_bench.py --model 1.5b --method lora grad_cp=1 train_parts=ln quant=nf4` (results/*-h100-trainer.md).

    python bench/quant_bench.py layer --device cpu
"""

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rwkv_peft.quant import QuantizedWeight

RESULTS = Path(__file__).parent / "results"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def layer_variants(dim: int, tokens: int, dtype: torch.dtype, device: str) -> dict[str, Callable[[], None]]:
    """name -> one forward + backward of a frozen [dim, dim] linear on x [tokens, dim]."""
    import bitsandbytes as bnb

    w = (torch.randn(dim, dim, device=device) * dim**-0.5).to(dtype)
    x = torch.randn(tokens, dim, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(tokens, dim, device=device, dtype=dtype)
    nf4, int8 = QuantizedWeight.from_weight(w, "nf4"), QuantizedWeight.from_weight(w, "int8")
    state = bnb.functional.QuantState(absmax=nf4.absmax_bits.view(torch.float32), shape=nf4.shape,
                                      code=nf4.code_bits.view(torch.float32), blocksize=64, quant_type="nf4",
                                      dtype=dtype)
    return {
        "dense": lambda: F.linear(x, w).backward(grad),
        "nf4 recompute": lambda: nf4.linear(x).backward(grad),
        "nf4 saved": lambda: F.linear(x, nf4.dequantize(dtype)).backward(grad),
        "nf4 matmul_4bit": lambda: bnb.matmul_4bit(x, nf4.codes.t(), state).backward(grad),
        "int8 recompute": lambda: int8.linear(x).backward(grad),
        "int8 saved": lambda: F.linear(x, int8.dequantize(dtype)).backward(grad),
        "nf4 dequantize only": lambda: nf4.dequantize(dtype),
        "int8 dequantize only": lambda: int8.dequantize(dtype),
    }


def bench_layer(args) -> str:
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    variants = layer_variants(args.dim, args.tokens, dtype, args.device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.reps + 3):
        for name, fn in variants.items():
            sync(args.device)
            start = time.perf_counter()
            fn()
            sync(args.device)
            if rep >= 3:
                times[name].append((time.perf_counter() - start) * 1e3)
    lines = [f"Frozen linear {args.dim}x{args.dim}, {args.tokens} tokens, {args.dtype}, {args.device}, "
             f"forward + backward to x, {args.reps} interleaved repetitions", "",
             "| variant | median ms | min ms |", "|---|---|---|"]
    lines += [f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} |" for name, t in times.items()]
    return "\n".join(lines)


def versions() -> str:
    import bitsandbytes

    return f"torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    layer = sub.add_parser("layer", help="forward variants of one quantized linear")
    layer.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    layer.add_argument("--dim", type=int, default=1024)
    layer.add_argument("--tokens", type=int, default=1024)
    layer.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    layer.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    table = bench_layer(args)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}-quant-{args.what}.md"
    path.write_text(f"# quant_bench {args.what}, {stamp}\n\n{versions()}\n\n{table}\n")
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
