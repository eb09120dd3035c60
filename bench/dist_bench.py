"""Multi-GPU training throughput of rwkv-peft: tokens/s of LoRA r64 on a random official-shape RWKV-7, wrapped for
--strategy by the trainer's own code (`rwkv_peft.train.wrap`), one process per GPU under torchrun.

Each rank builds the model (`random_state_dict` + `model_from_state_dict`, bf16 base, fp32 LoRA factors, as
`rwkv-peft train --precision bf16`), wraps it (ddp: DistributedDataParallel; fsdp: FSDP2 per block, the base
built on the CPU first as the trainer does, so it never has to fit one GPU whole), then runs warm-up and timed
optimizer steps on fixed random tokens, ctx x bsz per GPU: forward + chunked head loss + backward, gradient
synchronisation, clipping, AdamW, and the two scalar all-reduces the trainer does each step (token count, loss).
Rank 0 prints one JSON line: tokens/s in total and per GPU, step time, peak memory of every rank (torch max
reserved and allocated). Scaling efficiency = tokens_per_s_per_gpu at N GPUs / tokens_per_s at 1 GPU.

Blocks are compiled as the trainer's --compile auto does (on a GPU, not under fsdp / ZeRO-3); no CUDA graphs,
which the trainer uses on one GPU only (`bench/cli_bench.py` times that), so 1 and N GPUs run the same code.

    torchrun --nproc_per_node 1 bench/dist_bench.py --model 1.5b --ctx 4096 --bsz 8             # 1 GPU baseline
    torchrun --nproc_per_node 2 bench/dist_bench.py --model 1.5b --ctx 4096 --bsz 8 --strategy ddp
    torchrun --nproc_per_node 2 bench/dist_bench.py --model 7b --ctx 4096 --bsz 4 --strategy fsdp --grad_cp
    torchrun --nproc_per_node 2 bench/dist_bench.py --tiny                                    # CPU, gloo: a check
"""

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import torch
from common import MODELS

from rwkv_peft.adapters import AdapterSpec, apply_adapter, trainable_parameters
from rwkv_peft.adapters.spec import layer_config
from rwkv_peft.model import RWKV7Config, model_from_state_dict
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.train.config import STRATEGIES
from rwkv_peft.train.dist import init_distributed, resolve_device, shutdown_distributed
from rwkv_peft.train.precision import Precision
from rwkv_peft.train.wrap import resolve_strategy, wrap


def peak_gib(device: torch.device) -> list[float]:
    """[max reserved, max allocated] by torch on this rank's GPU, GiB (CPU: [max RSS, max RSS])."""
    if device.type == "cuda":
        return [torch.cuda.max_memory_reserved(device) / 2**30, torch.cuda.max_memory_allocated(device) / 2**30]
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return [rss, rss]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1.5b", choices=MODELS)
    ap.add_argument("--strategy", default="ddp", choices=STRATEGIES, help="with one process: no wrapper")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--bsz", type=int, default=8, help="samples per GPU per step")
    ap.add_argument("--rank", type=int, default=64, help="LoRA rank (alpha = 2 x rank)")
    ap.add_argument("--grad_cp", action="store_true", help="recompute each block in backward (--grad_cp 1)")
    ap.add_argument("--op", default="auto", help="WKV backend, as --op")
    ap.add_argument("--compile", default="auto", choices=["auto", "1", "0"], help="as --compile")
    ap.add_argument("--build_on", default="auto", choices=["auto", "cpu", "device"],
                    help="where the base is built: auto = cpu for fsdp (as the trainer), else the GPU")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="L2 C64 V256, ctx 64, bsz 2, fp32 on the CPU (gloo)")
    ap.add_argument("--out", type=Path, help="also append the JSON line to this file")
    args = ap.parse_args()

    accelerator = "cpu" if args.tiny else "gpu"
    dist = init_distributed(accelerator)
    device = resolve_device(accelerator, dist.world_size, 1, dist)
    strategy = resolve_strategy(args.strategy, dist.world_size)
    precision = Precision("fp32" if args.tiny else "bf16", device)
    precision.configure_backends()
    if args.tiny:
        cfg, args.ctx, args.bsz, args.rank = RWKV7Config(n_layer=2, n_embd=64, vocab_size=256), 64, 2, 8
    else:
        L, C = MODELS[args.model]
        cfg = RWKV7Config(n_layer=L, n_embd=C)

    on_cpu = args.build_on == "cpu" or (args.build_on == "auto" and strategy == "fsdp")
    build = torch.device("cpu") if on_cpu else device
    t0 = time.perf_counter()
    # Drawn where it is fast (a GPU makes billions of numbers in a moment), then put where the trainer loads it.
    sd = random_state_dict(cfg, seed=0, dtype=precision.frozen_dtype, device=device)
    model = model_from_state_dict({k: v.to(build) for k, v in sd.items()}, device=build)
    del sd
    if device.type == "cuda":  # the drawing's fp32 scratch is no part of training's peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    apply_adapter(model, AdapterSpec(layer=layer_config("lora", args.rank, 2.0 * args.rank)))
    trainable = trainable_parameters(model)
    for p in trainable.values():
        p.data = p.data.float()
    model.train()
    model.backend, model.grad_cp = args.op, args.grad_cp
    sharded = strategy == "fsdp" or strategy.startswith("deepspeed_stage_3")
    model.compile = args.compile == "1" or (args.compile == "auto" and device.type == "cuda" and not sharded)
    engine = wrap(model, strategy, precision, dist, device, micro_bsz=args.bsz, clip=1.0)
    params = list(trainable_parameters(model).values())
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True if device.type == "cuda" else None)
    engine.attach(optimizer)
    setup_s = time.perf_counter() - t0

    g = torch.Generator(device=device).manual_seed(1000 + dist.rank)
    data = torch.randint(0, cfg.vocab_size, (args.bsz, args.ctx + 1), device=device, generator=g)
    inputs, labels = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    normalizer = args.bsz * args.ctx * dist.world_size / engine.grad_divisor

    def step() -> float:
        """One optimizer step; returns its global mean loss (the trainer's token count and loss reductions)."""
        n = dist.all_reduce_sum([float(labels.numel())], device)[0]
        with engine.accumulating(last=True):
            loss, _ = engine.loss(inputs, labels, None, normalizer)
            engine.backward(loss)
        global_loss = dist.all_reduce_sum([float(loss.detach()) * normalizer / n], device)[0]
        if engine.owns_step:
            engine.step()
            return global_loss
        engine.sync_gradients()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return global_loss

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()

    losses = [step() for _ in range(args.warmup)]
    times = []
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    peaks = dist.gather_to_main(peak_gib(device))

    if dist.is_main:
        total = dist.world_size * args.bsz * args.ctx * args.steps / elapsed
        row = {"bench": "dist_bench", "date": datetime.date.today().isoformat(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "model": "tiny" if args.tiny else args.model, "n_layer": cfg.n_layer,
               "n_embd": cfg.n_embd, "method": f"lora r{args.rank}", "strategy": strategy,
               "world_size": dist.world_size, "ctx": args.ctx, "bsz_per_gpu": args.bsz, "grad_cp": args.grad_cp,
               "compile": model.compile,
               "precision": precision.name, "trainable_params": sum(p.numel() for p in trainable.values()),
               "tokens_per_s": round(total, 1), "tokens_per_s_per_gpu": round(total / dist.world_size, 1),
               "step_ms": round(1e3 * statistics.median(times), 2),
               "step_ms_min_max": [round(1e3 * min(times), 2), round(1e3 * max(times), 2)],
               "peak_reserved_gib": [round(p[0], 2) for p in peaks],
               "peak_allocated_gib": [round(p[1], 2) for p in peaks], "setup_s": round(setup_s, 1),
               "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)]}
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
    shutdown_distributed()


if __name__ == "__main__":
    main()
