"""`--train_parts`: base parameters that train alongside an adapter, chosen by explicit names, not substrings.

- `emb`:  `emb.weight`.
- `head`: `head.weight`.
- `ln`:   every LayerNorm and GroupNorm weight and bias (`blocks.0.ln0`, `ln1`, `ln2`, `att.ln_x`, `ln_out`).
- `time`: the small per-channel mixing and decay parameters, the ones RWKV-PEFT's "time" substring meant.
    - v6: every `time_*` parameter: att `time_maa_{x,w,k,v,r,g}`, `time_maa_w1/w2`, `time_decay`,
      `time_decay_w1/w2`, `time_faaaa`, and ffn `time_maa_k/r`.
    - v7 (where RWKV-PEFT's substring matched nothing): the token-shift mixes `att.x_{r,w,k,v,a,g}` and
      `ffn.x_k`, the decay `w0/w1/w2`, the in-context learning rate `a0/a1/a2` and `k_a`, the value residual
      `v0/v1/v2` (not in block 0, which never uses them), the output gate `g1/g2`, and `k_k`, `r_k`.
  The tuned initial state `time_state` is not a train part; it is State tuning (`--train_type state`).
"""

from typing import Sequence

from torch import nn

from ..errors import UserError

PARTS = ("emb", "head", "ln", "time")
# What RWKV-PEFT trains next to an adapter when --train_parts is not given.
DEFAULT_PARTS = ("time", "ln")

_V7_TIME_ATT = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "w1", "w2", "a0", "a1", "a2", "v0", "v1", "v2",
                "g1", "g2", "k_k", "k_a", "r_k")
_V7_BLOCK0_UNUSED = ("v0", "v1", "v2")
_V6_TIME_ATT = ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g",
                "time_maa_w1", "time_maa_w2", "time_decay", "time_decay_w1", "time_decay_w2", "time_faaaa")
_TIME_FFN = {7: ("x_k",), 6: ("time_maa_k", "time_maa_r")}


def check_parts(parts: Sequence[str]) -> tuple[str, ...]:
    """The parts, validated and deduplicated in order."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UserError(f"unknown train part {unknown[0]!r}; choose from {', '.join(PARTS)} "
                        "(space-separated: --train_parts time ln)")
    return tuple(dict.fromkeys(parts))


def _time_names(model: nn.Module) -> list[str]:
    version = model.config.version
    names = []
    for i in range(model.config.n_layer):
        att = _V6_TIME_ATT if version == 6 else [n for n in _V7_TIME_ATT if i or n not in _V7_BLOCK0_UNUSED]
        names += [f"blocks.{i}.att.{n}" for n in att] + [f"blocks.{i}.ffn.{n}" for n in _TIME_FFN[version]]
    return names


def part_parameter_names(model: nn.Module, parts: Sequence[str]) -> list[str]:
    """Full parameter names that `parts` select, in model order."""
    parts = check_parts(parts)
    chosen = set()
    if "emb" in parts:
        chosen.add("emb.weight")
    if "head" in parts:
        chosen.add("head.weight")
    if "ln" in parts:
        chosen |= {f"{m}.{p}" for m, module in model.named_modules()
                   if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) for p, _ in module.named_parameters()}
    if "time" in parts:
        chosen |= set(_time_names(model))
    return [name for name, _ in model.named_parameters() if name in chosen]
