"""Speed and memory of the trainer itself: `rwkv_peft.train` (what `rwkv-peft train` runs) on the anchor's
configuration, so the numbers are what a user gets, start-up choices included (--compile / --cuda_graph auto).

The setup mirrors reference/anchor-baseline.md: a random-init checkpoint with the official RWKV-7 key names and
shapes, a binidx file of random tokens in documents of 1100 tokens (every ctx-1024 sample full), --dataload pad,
--loss_mask pad, bf16, the method's RWKV-PEFT default train_parts (time ln for weight adapters). Throughput is the
median of the trainer's own per-step Kt/s after the warm-up steps (compilation, autotuning and graph capture
happen there); memory: the allocator's peak reserved bytes, and nvidia-smi's used memory (process total: CUDA
context included) at the end and at its highest during the run (polled every 50 ms, start-up included).

    python bench/cli_bench.py --model 1.5b --method lora --ctx 1024 --bsz 1 --steps 30
    python bench/cli_bench.py --model 1.5b --method lora cuda_graph=0 compile=0   # the eager trainer
    python bench/cli_bench.py --model 1.5b --method lora --profile prof.txt   # + top kernels of 3 steps
"""

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import MODELS as OFFICIAL
from common import SmiPeak, add_experiment_flags, apply_experiment_flags, smi_used_gib, write_profile

from rwkv_peft.data.binidx import write_binidx
from rwkv_peft.model import RWKV6Config, RWKV7Config
from rwkv_peft.model.checkpoint import write_checkpoint
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.train import build_config
from rwkv_peft.train.dist import shutdown_distributed
from rwkv_peft.train.loop import Trainer

MODELS = {"tiny": (2, 128), **OFFICIAL}  # tiny: a CPU check of the script itself
METHODS = {  # the issue's methods, as the seeds' flags spell them
    "lora": {"peft": "lora", "lora_config": '{"lora_r":64,"lora_alpha":128,"lora_dropout":0}'},
    "pissa": {"peft": "pissa", "pissa_config": '{"pissa_r":32}'},
    "miss": {"peft": "miss", "peft_config": '{"r":64}'},
    "state": {"train_type": "state", "lr_init": 1.0, "lr_final": 0.01},
}


def files(model: str, cache: Path, version: int = 7) -> tuple[Path, Path]:
    """(checkpoint, binidx prefix) for `model` (an RWKV-7 shape; `version` 6 builds RWKV-6 at the same L and C),
    written once into `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    ckpt, data = cache / f"rwkv{version}-{model}-random.pth", cache / "random-tokens"
    if not ckpt.exists():
        n_layer, n_embd = MODELS[model]
        config = (RWKV7Config if version == 7 else RWKV6Config)(n_layer, n_embd)
        write_checkpoint(random_state_dict(config, seed=0), ckpt)
    if not Path(f"{data}.bin").exists():
        rng = np.random.default_rng(0)
        write_binidx(str(data), (rng.integers(1, 65536, 1100, dtype=np.uint16) for _ in range(4000)))
    return ckpt, data


def profile_steps(trainer: Trainer, first: int, steps: int, path: Path, header: str) -> None:
    """Run torch.profiler around the trainer's optimizer steps first .. first + steps - 1 (0-based): from the
    launch of the first to the launch of the one after the last (the trainer launches a step before reading the
    previous one back; synchronizing there takes in exactly those steps)."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    launch, t0 = trainer._launch, [0.0]

    def profiled_launch(batches, index):
        if index in (first, first + steps):
            torch.cuda.synchronize()
        if index == first:
            prof.start()
            t0[0] = time.perf_counter()
        elif index == first + steps:
            wall_ms = (time.perf_counter() - t0[0]) * 1e3
            prof.stop()
            write_profile(prof, wall_ms, steps, path, header)
        return launch(batches, index)

    trainer._launch = profiled_launch


def time_host(trainer: Trainer) -> dict[str, list[float]]:
    """Wall ms of each step's launch and read-back (which waits for that step's GPU work): a read-back near zero
    with a launch near the step time means the host, not the GPU, sets the pace."""
    spent: dict[str, list[float]] = {"launch": [], "read_back": []}

    def timed(name, fn):
        def run(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[name].append((time.perf_counter() - t) * 1e3)
        return run

    trainer._launch = timed("launch", trainer._launch)
    trainer._read_back = timed("read_back", trainer._read_back)
    return spent


def memory_by_pool() -> str:
    """Reserved and allocated MiB per allocator pool (CUDA graphs have private pools) and stream, from a snapshot:
    where reserved memory sits unused."""
    pools: dict[str, list[float]] = {}
    for seg in torch.cuda.memory_snapshot():
        key = f"pool {tuple(seg.get('segment_pool_id', (0, 0)))} stream {seg['stream']} {seg['segment_type']}"
        row = pools.setdefault(key, [0, 0, 0])
        row[0] += seg["total_size"] / 2**20
        row[1] += seg["allocated_size"] / 2**20
        row[2] += 1
    return "\n".join(f"{k}: reserved {r:.0f} MiB, allocated {a:.0f} MiB, {n} segments"
                     for k, (r, a, n) in sorted(pools.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="1.5b", choices=MODELS)
    ap.add_argument("--method", default="lora", choices=METHODS)
    ap.add_argument("--version", type=int, default=7, choices=[7, 6], help="RWKV-7 or RWKV-6 (same L and C)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--bsz", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8, help="steps left out of the median")
    ap.add_argument("--cache", default="/tmp/rwkv-peft-bench")
    ap.add_argument("--out", help="append the result as a JSON line here")
    ap.add_argument("--profile", type=Path, help="write the top kernels of 3 steps after the warm-up here")
    ap.add_argument("--memory", action="store_true", help="print the allocator's segments at the end, per pool")
    ap.add_argument("extra", nargs="*", help="more trainer settings, key=value (grad_cp=1, quant=nf4, op=fla, ...)")
    add_experiment_flags(ap)
    args = ap.parse_args()
    apply_experiment_flags(args)

    ckpt, data = files(args.model, Path(args.cache), args.version)
    with tempfile.TemporaryDirectory() as proj:
        flags = {"load_model": str(ckpt), "data_file": str(data), "data_type": "binidx", "dataload": "pad",
                 "loss_mask": "pad", "ctx_len": args.ctx, "micro_bsz": args.bsz, "epoch_steps": args.steps,
                 "epoch_count": 1, "precision": "bf16", "proj_dir": proj, "lr_init": 2e-5, "lr_final": 2e-5,
                 "plot": False, "progress": "none", **METHODS[args.method]}
        cfg = build_config(flags, overrides=args.extra)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        peak = SmiPeak() if torch.cuda.is_available() else contextlib.nullcontext()
        host: dict[str, list[float]] = {}
        try:
            with peak:
                trainer = Trainer(cfg)
                built_s = peak.since_start() if torch.cuda.is_available() else 0.0
                if args.profile and torch.cuda.is_available():
                    profile_steps(trainer, args.warmup, 3, args.profile, f"{vars(args)}")
                host = time_host(trainer)
                trainer.fit()
            if args.memory and torch.cuda.is_available():
                print(memory_by_pool())
        finally:
            shutdown_distributed()
        records = [json.loads(line) for line in (Path(proj) / "metrics.jsonl").read_text().splitlines()]
    rates = [r["kt_s"] for r in records if "kt_s" in r][args.warmup:]
    result = {"model": args.model, "version": args.version, "method": args.method, "ctx": args.ctx, "bsz": args.bsz,
              "extra": args.extra,
              "act_budget": args.act_budget, "recompute_wkv": args.recompute_wkv, "inductor": args.inductor,
              "partitioner": args.partitioner,
              "wkv_chunk": args.wkv_chunk, "setting": args.setting,
              "kt_s": round(statistics.median(rates), 2), "kt_s_max": round(max(rates), 2),
              "torch": torch.__version__}
    result |= {f"{k}_ms": round(statistics.median(v[args.warmup:]), 2) for k, v in host.items() if v[args.warmup:]}
    if torch.cuda.is_available():
        smi_end = smi_used_gib()
        result |= {"torch_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                   "torch_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
                   "smi_gib": round(smi_end, 2), "smi_peak_gib": round(smi_end + peak.rise_gib, 3),
                   "smi_peak_gb": round((smi_end + peak.rise_gib) * 2**30 / 1e9, 3),
                   "smi_peak_at_s": peak.peak_at_s, "device": torch.cuda.get_device_name()}
        # When the peak happened: the trainer was built at `built_s`, each step's end is its record's "time"
        # after that (metrics.jsonl), saving follows the last step.
        print(json.dumps({"built_s": built_s, "step_end_s": [round(built_s + r["time"], 1) for r in records
                                                             if "time" in r], "smi_timeline_gib": peak.timeline}))
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
