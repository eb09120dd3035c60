"""Running out of GPU memory is a setting to change, not a crash: one message that says where it happened, how
much memory there was, and which settings lower the need, most effective first."""

import re

import torch

from ..errors import UserError
from .config import TrainConfig


class OutOfMemory(UserError):
    """The GPU ran out of memory; the message names what to change."""


def out_of_memory(error: Exception, cfg: TrainConfig, device: torch.device | None, step: int | None,
                  cuda_graph: bool, last_good: str = "") -> OutOfMemory:
    """The error to raise for torch.cuda.OutOfMemoryError `error`, met at optimizer step `step` (counted from 1), or
    while loading the model (None: then only the model's own size can be helped)."""
    d, m, a = cfg.data, cfg.model, cfg.adapter
    loading = step is None
    tips = []
    if not loading:  # what a step holds besides the model
        if m.grad_cp < 1:
            tips.append("--grad_cp 1 (recompute activations in backward: the largest saving; a share such as 0.5 "
                        "saves in proportion)")
        if d.micro_bsz > 1:
            acc = cfg.optim.accumulate_grad_batches
            tips.append(f"--micro_bsz 1 --accumulate_grad_batches {acc * d.micro_bsz} (the same batch)")
        if a.train_type != "infctx" and d.ctx_len > 1024:
            tips.append(f"a shorter --ctx_len (now {d.ctx_len}), or --train_type infctx --chunk_ctx 512 (long "
                        "samples in chunks)")
    if a.quant == "none" and (a.peft != "none" or a.train_type == "state"):
        tips.append("--quant nf4 or int8 (the frozen base in 4 or 8 bits)")
    if cuda_graph:
        tips.append("--cuda_graph 0 (no graph memory pool, but much slower)")
    tips.append("--devices N --strategy fsdp (the base sharded over N GPUs), or a GPU with more memory")
    memory = ""
    if device is not None and device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        held = torch.cuda.max_memory_reserved(device) / 2**30
        memory = f" ({torch.cuda.get_device_name(device)}: {total:.1f} GiB, this run held up to {held:.1f} GiB"
        asked = re.search(r"Tried to allocate ([\d.]+ \w+)", str(error))
        memory += f", and asked for {asked.group(1)} more)" if asked else ")"
    done = f"; {last_good}" if last_good else ""
    where = "loading the model" if loading else f"step {step}"
    return OutOfMemory(f"{where}: out of GPU memory{memory}{done}. Try {'; '.join(tips)}")
