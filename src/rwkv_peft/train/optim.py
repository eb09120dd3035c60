"""AdamW over the trainable parameters, in groups that each follow the schedule with their own peak and end rate.

Groups (empty ones are left out):
- `decay`: weight matrices, i.e. >= 2-D tensors that are an official `*.weight` (full fine-tuning, train_parts
  emb/head) or an adapter matrix (`lora_A`, `lora_B`, `disha`): weight decay applies here only. RWKV-7's own
  low-rank mixers (`w1`, `a2`, ...) are 2-D but, as in RWKV-LM, not decayed; neither are norms and vectors.
- `no_decay`: everything else.
- `w0_2x`: RWKV-7 `att.w0` (decay base) at twice the rate when it trains, as RWKV-LM does (--layerwise_lr 1).
- `state`: `blocks.i.att.time_state`, State tuning's own rate (the seeds advise lr 1 -> 0.01 with warmup 10).

`capturable=True` builds the optimizer a CUDA graph can replay (train/graph.py): every group's rate is a
0-d device tensor that the schedule overwrites in place, and the step counters live on the device. Saved
optimizer states are written in one portable form (plain float rates, no run-time flags), so a checkpoint
resumes with or without graphs, on another device or under another strategy.
"""

import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..adapters import is_state_param

_ADAPTER_MATRIX = re.compile(r"\.(lora_A|lora_B|disha)$")
_W0 = re.compile(r"^blocks\.\d+\.att\.w0$")


@dataclass(frozen=True)
class GroupRates:
    """Peak and end learning rate of the ordinary groups and of the state group."""

    lr_init: float
    lr_final: float
    state_lr_init: float
    state_lr_final: float


def group_name(name: str, param: nn.Parameter, layerwise_lr: bool) -> str:
    if is_state_param(name):
        return "state"
    if layerwise_lr and _W0.match(name):
        return "w0_2x"
    if param.dim() >= 2 and (name.endswith(".weight") or _ADAPTER_MATRIX.search(name)):
        return "decay"
    return "no_decay"


def state_rates(lr_init: float, lr_final: float, state_lr_init: float | None, state_lr_final: float | None,
                only_state: bool) -> tuple[float, float]:
    """State tuning's rates: as given, else the run's own when only the state trains (the seeds pass
    --lr_init 1 --lr_final 0.01 then), else the seeds' advice 1.0 -> 0.01 next to a weight adapter."""
    default = (lr_init, lr_final) if only_state else (1.0, 0.01)
    return (default[0] if state_lr_init is None else state_lr_init,
            default[1] if state_lr_final is None else state_lr_final)


def build_optimizer(named: dict[str, nn.Parameter], rates: GroupRates, betas: tuple[float, float], eps: float,
                    weight_decay: float, layerwise_lr: bool = True, fused: bool | None = None,
                    capturable: bool = False) -> torch.optim.AdamW:
    """AdamW over `named` ({name: trainable parameter}); each group carries `lr_init`/`lr_final` for the schedule.
    `capturable`: replayable in a CUDA graph (rates as device tensors; the parameters must be on that device)."""
    peaks = {"decay": (rates.lr_init, rates.lr_final, weight_decay), "no_decay": (rates.lr_init, rates.lr_final, 0.0),
             "w0_2x": (2 * rates.lr_init, 2 * rates.lr_final, 0.0),
             "state": (rates.state_lr_init, rates.state_lr_final, 0.0)}
    members: dict[str, list[nn.Parameter]] = {}
    for name, p in named.items():
        members.setdefault(group_name(name, p, layerwise_lr), []).append(p)
    groups = [{"params": members[g], "name": g, "lr": peaks[g][0], "lr_init": peaks[g][0], "lr_final": peaks[g][1],
               "weight_decay": peaks[g][2]} for g in peaks if g in members]
    if capturable:
        for g in groups:
            g["lr"] = torch.tensor(g["lr"], dtype=torch.float32, device=g["params"][0].device)
    return torch.optim.AdamW(groups, betas=betas, eps=eps, fused=fused, capturable=capturable)


def apply_schedule(optimizer: torch.optim.Optimizer, schedule, step: int) -> float:
    """Set every group's rate for optimizer step `step`; returns the main group's rate (for logging)."""
    for group in optimizer.param_groups:
        lr = schedule.lr(step, group["lr_init"], group["lr_final"])
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)  # in place: a captured optimizer step reads this tensor
        else:
            group["lr"] = lr
    main = next((g for g in optimizer.param_groups if g["name"] in ("decay", "no_decay")), optimizer.param_groups[0])
    return schedule.lr(step, main["lr_init"], main["lr_final"])


def preallocate(optimizer: torch.optim.AdamW) -> None:
    """Create AdamW's state now (zero moments, step 0: what its first step would create). Why: created lazily,
    after the first forward and backward, these hundreds of ~1 MB tensors land in allocator segments that
    activations used and pin them, so that memory is never given back (1.5B LoRA r64: 0.4 GiB of moments)."""
    for group in optimizer.param_groups:
        on_device = group["capturable"] or group["fused"]
        for p in group["params"]:
            state = optimizer.state[p]
            if state:
                continue
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


# Per-run choices of how the update is computed, not part of the training state.
_RUNTIME_KEYS = ("lr", "capturable", "fused", "foreach", "differentiable")


def portable_state(optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with float rates and without the run-time flags (see the module's docstring)."""
    state = optimizer.state_dict()
    for g in state["param_groups"]:
        g["lr"] = float(g["lr"])
        for key in _RUNTIME_KEYS[1:]:
            g.pop(key, None)
    return state


def load_portable_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a state saved by `portable_state` (or a plain state_dict) and keep this optimizer's own run-time
    flags; the step counters go where this optimizer keeps them (the device when capturable or fused)."""
    own = [{k: g[k] for k in _RUNTIME_KEYS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, own):
        rate = float(group["lr"])
        group.update(kept)
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(rate)
        else:
            group["lr"] = rate
        on_device = group.get("capturable") or group.get("fused")
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            if "step" in st:
                st["step"] = (st["step"].to(p.device, torch.float32) if on_device
                              else torch.tensor(float(st["step"]), dtype=torch.float32))
