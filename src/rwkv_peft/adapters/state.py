"""State tuning: a trainable initial WKV state per layer, shared by every sequence of the batch.

`attach_state` registers `blocks.i.att.time_state`, fp32 [H, N, N] (value rows, key columns: the orientation of
RWKV-PEFT's and BlinkDL's state files, the same for v6 and v7). The model's `TimeMix.initial_wkv` starts every
fresh sequence from it, and the WKV op's gradient with respect to its initial state trains it. It composes with
any weight adapter.

A state file holds exactly the L keys `blocks.{i}.att.time_state`, what RWKV Runner and Ai00 mount. Runtimes
differ in how they take it: the `rwkv` pip v6 class reads `time_state` keys from the model file (transposed to
key rows internally); its v7 class ignores them, so there the state must be injected into the state list,
`state[3 i + 1] = time_state[i]`, without a transpose.
"""

import re
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import UserError

STATE_KEY = re.compile(r"^blocks\.(\d+)\.att\.time_state$")


def is_state_param(name: str) -> bool:
    """True for `blocks.i.att.time_state`: State tuning wants its own (much larger) learning rate."""
    return STATE_KEY.match(name) is not None


def split_state(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(everything else, the time_state tensors) of a flat tensor dict, each in the input's key order."""
    base = {k: v for k, v in sd.items() if not is_state_param(k)}
    return base, {k: v for k, v in sd.items() if is_state_param(k)}


def check_state(state: Mapping[str, Tensor], cfg, source: str) -> None:
    """A complete state for a model of config `cfg`: L keys of shape [H, N, N], nothing else."""
    H, N, L = cfg.n_head, cfg.head_size, cfg.n_layer
    expected = {f"blocks.{i}.att.time_state" for i in range(L)}
    if set(state) != expected:
        odd = sorted(set(state) ^ expected, key=lambda k: (len(k), k))
        raise UserError(f"{source}: a state for this base needs exactly the {L} keys blocks.0..{L - 1}.att.time_state "
                        f"(found {len(state)}, e.g. {'extra' if odd[0] in state else 'missing'} {odd[0]}); was it "
                        "trained on a model with another number of layers?")
    for k, v in state.items():
        if tuple(v.shape) != (H, N, N):
            raise UserError(f"{source}: {k} has shape {tuple(v.shape)}, this base needs [H, N, N] = "
                            f"{[H, N, N]}; the state was trained on another model size")


def attach_state(model: nn.Module, values: Mapping[str, Tensor] | None = None) -> None:
    """Give every layer a `time_state` Parameter (fp32 [H, N, N]): zeros, or `values` from a state dict."""
    cfg = model.config
    if values is not None:
        check_state(values, cfg, "state")
    for i, block in enumerate(model.blocks):
        if hasattr(block.att, "time_state"):
            raise UserError("this model already has a tuned state mounted; mount one state at a time")
        device = block.att.r_k.device if cfg.version == 7 else block.att.time_faaaa.device
        ts = torch.zeros(cfg.n_head, cfg.head_size, cfg.head_size, dtype=torch.float32, device=device)
        if values is not None:
            ts.copy_(values[f"blocks.{i}.att.time_state"])
        block.att.register_parameter("time_state", nn.Parameter(ts))


def state_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's mounted or trained states, {blocks.i.att.time_state: [H, N, N]}; empty if none."""
    return {name: p for name, p in model.named_parameters() if is_state_param(name)}
