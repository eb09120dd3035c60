"""AdamW over the trainable parameters, in groups that each follow the schedule with their own peak and end rate.

Groups (empty ones are left out):
- `decay`: weight matrices, i.e. >= 2-D tensors that are an official `*.weight` (full fine-tuning, train_parts
  emb/head) or an adapter matrix (`lora_A`, `lora_B`, `disha`): weight decay applies here only. RWKV-7's own
  low-rank mixers (`w1`, `a2`, ...) are 2-D but, as in RWKV-LM, not decayed; neither are norms and vectors.
- `no_decay`: everything else.
- `w0_2x`: RWKV-7 `att.w0` (decay base) at twice the rate when it trains, as RWKV-LM does (--layerwise_lr 1).
- `state`: `blocks.i.att.time_state`, State tuning's own rate (the seeds advise lr 1 -> 0.01 with warmup 10).
"""

import re
from dataclasses import dataclass

import torch
from torch import nn

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
                    weight_decay: float, layerwise_lr: bool = True, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over `named` ({name: trainable parameter}); each group carries `lr_init`/`lr_final` for the schedule."""
    peaks = {"decay": (rates.lr_init, rates.lr_final, weight_decay), "no_decay": (rates.lr_init, rates.lr_final, 0.0),
             "w0_2x": (2 * rates.lr_init, 2 * rates.lr_final, 0.0),
             "state": (rates.state_lr_init, rates.state_lr_final, 0.0)}
    members: dict[str, list[nn.Parameter]] = {}
    for name, p in named.items():
        members.setdefault(group_name(name, p, layerwise_lr), []).append(p)
    groups = [{"params": members[g], "name": g, "lr": peaks[g][0], "lr_init": peaks[g][0], "lr_final": peaks[g][1],
               "weight_decay": peaks[g][2]} for g in peaks if g in members]
    return torch.optim.AdamW(groups, betas=betas, eps=eps, fused=fused)


def apply_schedule(optimizer: torch.optim.Optimizer, schedule, step: int) -> float:
    """Set every group's rate for optimizer step `step`; returns the main group's rate (for logging)."""
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr(step, group["lr_init"], group["lr_final"])
    main = next((g for g in optimizer.param_groups if g["name"] in ("decay", "no_decay")), optimizer.param_groups[0])
    return main["lr"]
