"""Speed and memory of a quantized frozen base (`--quant`), written to bench/results/ as a dated markdown table.

Two measurements:

- `layer`: one frozen linear [D, D] under T tokens, forward + backward (gradient to x only), for each way of
  running it on a quantized weight: the dense weight (reference), `recompute` (what `QuantizedWeight.linear`
  does: dequantize in forward and again in backward), `saved` (dequantize once and let autograd keep the dense
  copy, RWKV-PEFT's way), and bitsandbytes' `matmul_4bit` (nf4). Runs on CPU or CUDA; reports median and min
  milliseconds over interleaved repetitions (interleaving spreads machine noise evenly over the variants).
- `model` (CUDA): the issue's acceptance run. RWKV-7 1.5B (L24 C2048, random official-shape weights) with LoRA
  r64 alpha 128 on the att/ffn linears, ctx 1024, batch 1, bf16, AdamW, grad_cp 1 (as the seeds' scripts; 0
  with --grad_cp 0); one row per base: bf16, int8, nf4. Each
  row runs in its own process so its peak memory is its own: `torch` is the allocator's peak reserved memory,
  `smi` what nvidia-smi reports for the GPU at the end (CUDA context included, as RWKV-PEFT's published figures
  are). Tokens/s comes from the median step after warm-up. Targets: peak <= 4.6 GB (int8) and <= 3.9 GB (nf4),
  RWKV-PEFT's published 1.5B LoRA figures, and tokens/s >= 0.7x the bf16 row.

    python bench/quant_bench.py layer --device cpu
    python bench/quant_bench.py model
"""

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rwkv_peft.adapters import AdapterSpec, apply_adapter, trainable_parameters
from rwkv_peft.adapters.spec import layer_config
from rwkv_peft.model import RWKV7Config, model_from_state_dict
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.quant import QuantizedWeight, quantize_model

RESULTS = Path(__file__).parent / "results"
MODEL_1_5B = RWKV7Config(n_layer=24, n_embd=2048, vocab_size=65536)
TARGET_GB = {"int8": 4.6, "nf4": 3.9}
MIN_SPEED_RATIO = 0.7


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


def model_row(scheme: str, steps: int, warmup: int, backend: str, grad_cp: bool) -> dict:
    """Train the 1.5B LoRA row for `scheme` ("bf16" = no quantization) on the GPU; the measurements as a dict."""
    torch.manual_seed(0)
    sd = random_state_dict(MODEL_1_5B, seed=0, dtype=torch.bfloat16)
    # Quantized rows are built and quantized layer by layer from the CPU, so the bf16 linears never occupy the GPU.
    model = model_from_state_dict(sd, "random 1.5B", "cpu" if scheme != "bf16" else "cuda", torch.bfloat16)
    del sd
    model.backend, model.grad_cp = backend, grad_cp
    apply_adapter(model, AdapterSpec(layer=layer_config("lora", 64, 128.0)))
    if scheme != "bf16":
        quantize_model(model, scheme, device="cuda")
    model.to("cuda").train()
    optimizer = torch.optim.AdamW(trainable_parameters(model).values(), lr=1e-5)
    tokens = torch.randint(0, MODEL_1_5B.vocab_size, (1, 1025), device="cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step_ms = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            step_ms.append((time.perf_counter() - start) * 1e3)
    smi = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout.split()
    return {"scheme": scheme, "tokens_per_s": 1024 / (statistics.median(step_ms) / 1e3),
            "torch_peak_gb": torch.cuda.max_memory_reserved() / 1e9,
            "smi_gb": float(smi[0]) * 2**20 / 1e9 if smi else float("nan"), "loss": loss.item()}


def bench_model(args) -> str:
    rows = []
    for scheme in ("bf16", "int8", "nf4"):
        cmd = [sys.executable, __file__, "model-row", scheme, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--backend", args.backend, "--grad_cp", str(args.grad_cp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{scheme} row failed:\n{done.stderr[-4000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    bf16_speed = rows[0]["tokens_per_s"]
    lines = [f"RWKV-7 1.5B (L24 C2048) LoRA r64 a128, ctx 1024, bsz 1, bf16, AdamW, grad_cp {args.grad_cp}, "
             f"backend {args.backend}, {torch.cuda.get_device_name()}", "",
             "| base | tokens/s | vs bf16 | torch peak GB | nvidia-smi GB | target GB | meets |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["tokens_per_s"] / bf16_speed
        target = TARGET_GB.get(r["scheme"])
        meets = "" if target is None else str(r["smi_gb"] <= target and ratio >= MIN_SPEED_RATIO)
        lines.append(f"| {r['scheme']} | {r['tokens_per_s']:.0f} | {ratio:.2f}x | {r['torch_peak_gb']:.2f} | "
                     f"{r['smi_gb']:.2f} | {target or ''} | {meets} |")
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
    for name in ("model", "model-row"):
        p = sub.add_parser(name, help="1.5B LoRA training rows (bf16, int8, nf4)" if name == "model" else
                           argparse.SUPPRESS)
        if name == "model-row":
            p.add_argument("scheme", choices=["bf16", "int8", "nf4"])
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--warmup", type=int, default=5)
        p.add_argument("--backend", default="auto")
        # The seeds' scripts, whose settings RWKV-PEFT's VRAM table reports, train with --grad_cp 1.
        p.add_argument("--grad_cp", type=int, choices=[0, 1], default=1)
    args = ap.parse_args()
    if args.what == "model-row":
        print(json.dumps(model_row(args.scheme, args.steps, args.warmup, args.backend, bool(args.grad_cp))))
        return
    table = bench_layer(args) if args.what == "layer" else bench_model(args)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}-quant-{args.what}.md"
    path.write_text(f"# quant_bench {args.what}, {stamp}\n\n{versions()}\n\n{table}\n")
    print(table)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
