"""Training-step speed and memory of rwkv-peft on one GPU, and of a peer measured in the same process.

Each row builds a random official-shape RWKV-7 in bf16 on the GPU (`random_state_dict`), puts the real adapter on
it (`rwkv_peft.adapters`), and times forward + loss + backward + AdamW step: warm-up steps first (compilation and
autotuning happen there), then timed steps bracketed by CUDA events; tokens/s comes from the median step.

The peer is flash-linear-attention's `RWKV7ForCausalLM` of the same shape with HuggingFace peft LoRA r64 on the
same linears, trained by the same loop. Both run under bf16 autocast, as the train loop's --precision bf16 does.
Loss: ours the trainer's `dense_head_loss` (chunked, frozen head, L2Wrap, no host sync); the peer its own fused
linear cross-entropy with L2Wrap (fla's, which also computes an fp32 gradient for the frozen head).

Model FLOPs per token: 4 x the non-embedding parameters (the frozen base's forward and input gradients; the
trainable matrices are counted here too) + 2 x the trainable matrix parameters (their weight gradients). MFU
divides that rate by the bf16 matmul rate measured at the start of the same run.

Memory: "torch" is the peak reserved by PyTorch's allocator during the row; "smi" is what nvidia-smi counts on
the GPU at the end of the timed steps (this process alone runs there: CUDA context, kernels and the allocator's
pool; the allocator only grows inside a row, so it is the row's peak up to transient cuBLAS workspaces).

    python bench/train_bench.py --models 1.5b --methods lora,state --shapes 1024x1,4096x8 --peer
"""

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from common import MODELS, add_experiment_flags, apply_experiment_flags, smi_used_gib, write_profile
from torch import nn

from rwkv_peft.adapters import AdapterSpec, apply_adapter, fold_lora, is_state_param
from rwkv_peft.adapters.spec import layer_config
from rwkv_peft.model import RWKV7Config, model_from_state_dict
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.train.loss import dense_head_loss

# What the issue measures: LoRA r64 (alpha 128), PiSSA r32, MiSS (bone) r64, State tuning. No dropout anywhere
# (the peer's default), so every row does the same arithmetic per step.
METHODS = {
    "lora": lambda: AdapterSpec(layer=layer_config("lora", 64, 128.0)),
    "pissa": lambda: AdapterSpec(layer=layer_config("pissa", 32)),
    "miss": lambda: AdapterSpec(layer=layer_config("bone", 64)),
    "state": lambda: AdapterSpec(state=True),
}
PEER = "peer: fla+peft LoRA"
PEER_TARGETS = ["r_proj", "k_proj", "v_proj", "o_proj", "key", "value"]


@dataclass
class Row:
    model: str
    method: str
    ctx: int
    bsz: int
    grad_cp: float
    compile: bool
    cuda_graph: bool
    ktok_s: float = 0.0
    mfu: float = 0.0
    torch_gib: float = 0.0
    smi_gib: float = 0.0
    step_ms: float = 0.0
    step_ms_spread: float = 0.0
    startup_s: float = 0.0
    note: str = ""


def matmul_tflops(n: int = 8192, reps: int = 30) -> float:
    """bf16 [n, n] x [n, n] on random data, median of `reps` after warm-up: the ceiling MFU is measured against."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(5):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return 2 * n**3 / (statistics.median(times) * 1e-3) / 1e12


def flops_per_token(model: nn.Module, embedding: nn.Embedding) -> float:
    """4 x non-embedding matrix parameters + 2 x trainable matrix parameters (tuned states are not matmul
    weights; their arithmetic is inside the WKV kernel and is not counted)."""
    counted = [p for p in model.parameters() if p is not embedding.weight and p.dim() == 2]
    trainable = sum(p.numel() for p in counted if p.requires_grad)
    return 4 * sum(p.numel() for p in counted) + 2 * trainable


def ours(name: str, method: str, ctx: int, bsz: int, grad_cp: float, compile_: bool, op: str = "fla"):
    """Model, trainable parameters, loss_of(tokens, targets) and the embedding, for rwkv-peft."""
    L, C = MODELS[name]
    cfg = RWKV7Config(n_layer=L, n_embd=C)
    model = model_from_state_dict(random_state_dict(cfg, seed=0, dtype=torch.bfloat16, device="cuda"), device="cuda")
    apply_adapter(model, METHODS[method]())
    fold_lora(model)  # as the trainer does on a GPU
    model.train()
    model.backend, model.grad_cp, model.compile = op, grad_cp, compile_
    assert not model.head.weight.requires_grad

    normalizer = torch.tensor(float(bsz * ctx), device="cuda")

    def loss_of(tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # The trainer's graph-capturable loss (no host sync), so what is timed here is what it runs.
        return dense_head_loss(model.hidden(tokens)[0], model.head.weight, targets, normalizer, torch.bfloat16,
                               fused=compile_)

    groups = [p for n, p in model.named_parameters() if p.requires_grad]
    assert groups, "nothing trains"
    assert method != "state" or all(is_state_param(n) for n, p in model.named_parameters() if p.requires_grad)
    return model, groups, loss_of, model.emb


def peer(name: str, ctx: int, bsz: int, grad_cp: float):
    """flash-linear-attention's RWKV7ForCausalLM (same shape, fused linear CE with L2Wrap) + peft LoRA r64; any
    grad_cp share above 0 checkpoints all its layers (HF's switch is all or nothing)."""
    from fla.models import RWKV7Config as FlaRWKV7Config
    from fla.models import RWKV7ForCausalLM
    from peft import LoraConfig, get_peft_model

    L, C = MODELS[name]
    cfg = RWKV7Config(n_layer=L, n_embd=C)
    fla_cfg = FlaRWKV7Config(hidden_size=C, num_hidden_layers=L, head_dim=cfg.head_size, intermediate_size=cfg.dim_ffn,
                             decay_low_rank_dim=cfg.dim_w, a_low_rank_dim=cfg.dim_a, v_low_rank_dim=cfg.dim_v,
                             gate_low_rank_dim=cfg.dim_g, vocab_size=cfg.vocab_size, use_cache=False,
                             fuse_cross_entropy=False, fuse_linear_cross_entropy=True, use_l2warp=True)
    with torch.device("cuda"):
        model = RWKV7ForCausalLM(fla_cfg).to(torch.bfloat16)
    if grad_cp:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=128, lora_dropout=0.0, target_modules=PEER_TARGETS))
    model.train()

    def loss_of(tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # The model shifts labels itself: pass the inputs as labels.
        return model(input_ids=tokens, labels=tokens, use_cache=False).loss

    params = [p for p in model.parameters() if p.requires_grad]
    return model, params, loss_of, model.get_input_embeddings()


def timed_steps(step: Callable[[], None], warmup: int, steps: int) -> list[float]:
    """Milliseconds of each of `steps` steps, after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for start, end in events:
        start.record()
        step()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def graphed(fwd_bwd: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, warmup: int) -> Callable[[], None]:
    """Capture one whole step (forward, loss, backward, optimizer) in a CUDA graph; replaying it launches
    everything with one call, so no Python or launch overhead remains. Gradients are None at capture, so the
    captured backward writes them rather than accumulating, and each replay starts clean."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fwd_bwd()
            opt.step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fwd_bwd()
        opt.step()
    return graph.replay


def measure(row: Row, build: Callable, warmup: int, steps: int, tflops: float, profile_dir: Path | None) -> Row:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, params, loss_of, embedding = build()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True, capturable=row.cuda_graph)
    g = torch.Generator(device="cuda").manual_seed(0)
    data = torch.randint(0, 65536, (row.bsz, row.ctx + 1), device="cuda", generator=g)
    tokens, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def fwd_bwd() -> torch.Tensor:
        # What the train loop's --precision bf16 does: autocast matmuls to bf16 (the fp32 LoRA/MiSS factors
        # included). No autocast weight cache: a captured graph must not depend on one.
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = loss_of(tokens, targets)
        loss.backward()
        return loss

    def eager_step() -> None:
        fwd_bwd()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step = eager_step
    if row.cuda_graph:
        try:
            step = graphed(fwd_bwd, opt, warmup)
        except Exception as e:  # say why and measure eagerly instead
            row.cuda_graph, row.note = False, f"graph capture failed: {type(e).__name__}: {str(e)[:100]}"
            torch.cuda.synchronize()
            opt.zero_grad(set_to_none=True)
    times = timed_steps(step, warmup, steps)
    # Wall time of everything before the timed steps: compilation, autotuning, capture, warm-up steps.
    row.startup_s = time.perf_counter() - t0 - sum(times) / 1e3
    row.smi_gib = smi_used_gib()
    row.torch_gib = torch.cuda.max_memory_reserved() / 2**30
    row.step_ms = statistics.median(times)
    row.step_ms_spread = max(times) - min(times)
    row.ktok_s = row.bsz * row.ctx / row.step_ms
    row.mfu = flops_per_token(model, embedding) * row.ktok_s * 1e3 / (tflops * 1e12)
    if profile_dir is not None:
        mode = "-".join(m for m, on in (("compile", row.compile), ("graph", row.cuda_graph)) if on) or "eager"
        who = "peer" if row.method == PEER else row.method
        profile(step, profile_dir / f"profile-{row.model}-{who}-{row.ctx}x{row.bsz}-{mode}.txt", row)
    return row


def profile(step: Callable[[], None], path: Path, row: Row, steps: int = 3) -> None:
    """Top kernels by GPU time over a few steps, and how much of the wall time the GPU was busy."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3
    write_profile(prof, wall_ms, steps, path, str(asdict(row)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="1.5b")
    ap.add_argument("--methods", default="lora")
    ap.add_argument("--shapes", default="1024x1", help="CTXxBSZ, comma-separated")
    ap.add_argument("--peer", action="store_true", help="also the fla RWKV7ForCausalLM + peft LoRA r64 peer")
    ap.add_argument("--grad-cp", default="auto", help="share of blocks recomputed in backward (0..1, as the "
                    "trainer's --grad_cp); auto: all of them from 16K tokens per step, else none")
    ap.add_argument("--modes", default="eager", help="comma-separated: eager, graph (the whole step in a CUDA "
                    "graph), compile (torch.compile each block; ours only), compile+graph")
    ap.add_argument("--op", default="fla", help="our WKV backend (fla; wind: wind_rwkv's CUDA kernel)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profile", type=Path, help="write a kernel profile of each row into this folder")
    ap.add_argument("--out", type=Path, help="append each row as a JSON line")
    add_experiment_flags(ap)
    args = ap.parse_args()
    experiments = apply_experiment_flags(args)
    # As the train loop under --precision bf16: fp32 leftovers (fla's fp32 dW of its fused loss) use TF32.
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    tflops = matmul_tflops()
    print(f"device: {torch.cuda.get_device_name()}; bf16 matmul 8192^3: {tflops:.0f} TFLOP/s", flush=True)
    rows = []
    for name in args.models.split(","):
        for shape in args.shapes.split(","):
            ctx, bsz = map(int, shape.split("x"))
            cp = float(ctx * bsz >= 16384) if args.grad_cp == "auto" else float(args.grad_cp)
            methods = [m for m in args.methods.split(",") if m in METHODS]
            jobs = [(m, mode) for m in methods for mode in args.modes.split(",")]
            if args.peer:
                jobs += [(PEER, mode) for mode in args.modes.split(",") if "compile" not in mode]
            for method, mode in jobs:
                compile_ = "compile" in mode
                build = partial(peer, name, ctx, bsz, cp) if method == PEER else partial(
                    ours, name, method, ctx, bsz, cp, compile_, args.op)
                note = ", ".join(filter(None, [experiments, f"--op {args.op}" if args.op != "fla" else ""]))
                row = Row(name, method, ctx, bsz, cp, compile_, "graph" in mode, note=note)
                torch._dynamo.reset()
                try:
                    row = measure(row, build, args.warmup, args.steps, tflops, args.profile)
                except torch.cuda.OutOfMemoryError:
                    row.note = "out of memory"
                except Exception as e:  # one failing row must not lose the others
                    row.note = f"failed: {type(e).__name__}: {str(e)[:160]}"
                rows.append(row)
                print(json.dumps(asdict(row)), flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(asdict(row)) + "\n")
    print(f"\nbf16 matmul rate: {tflops:.0f} TFLOP/s\n")
    print("| model | method | ctx x bsz | grad_cp | compile | graph | Kt/s | MFU | torch peak GiB | smi GiB | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.model} | {r.method} | {r.ctx}x{r.bsz} | {r.grad_cp:g} | {int(r.compile)} | {int(r.cuda_graph)} "
              f"| {r.ktok_s:.1f} | {r.mfu:.1%} | {r.torch_gib:.2f} | {r.smi_gib:.2f} | {r.note} |")


if __name__ == "__main__":
    main()
