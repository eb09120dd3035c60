"""The stable Python API (`rwkv_peft.load_model`, `rwkv_peft.merge`, `rwkv_peft.describe`), composed from the
layers below. The CLI calls these same functions."""

import os
import re

import torch
from torch import Tensor

from .errors import UserError
from .model import read_checkpoint
from .model.load import load_base, validate_state_dict

_STATE_KEY = re.compile(r"^blocks\.(\d+)\.att\.time_state$")


def describe_state_dict(sd: dict[str, Tensor], source: str = "file") -> dict:
    """What a tensor dict is: a base model, a tuned state, or (see adapters) an adapter."""
    if sd and all(_STATE_KEY.match(k) for k in sd):
        H, N, _ = next(iter(sd.values())).shape
        return {"kind": "state", "n_layer": len(sd), "n_head": H, "head_size": N, "n_embd": H * N,
                "dtype": str(next(iter(sd.values())).dtype).removeprefix("torch.")}
    base = {k: v for k, v in sd.items() if not _STATE_KEY.match(k)}
    cfg = validate_state_dict(base, source)
    params = sum(v.numel() for v in base.values())
    info = {"kind": "model", "version": cfg.version, "arch": f"x0{cfg.version}0", "n_layer": cfg.n_layer,
            "n_embd": cfg.n_embd, "n_head": cfg.n_head, "head_size": cfg.head_size, "dim_ffn": cfg.dim_ffn,
            "vocab_size": cfg.vocab_size}
    if cfg.version == 7:
        info["low_rank"] = {"w": cfg.dim_w, "a": cfg.dim_a, "v": cfg.dim_v, "g": cfg.dim_g}
    else:
        info.update(dim_att=cfg.dim_att, low_rank={"mix": cfg.dim_mix, "decay": cfg.dim_decay})
    info.update(params=params, tensors=len(base), dtype=str(base["emb.weight"].dtype).removeprefix("torch."),
                has_time_state=len(base) != len(sd),
                flags=f"--my_testing x0{cfg.version}0 --n_layer {cfg.n_layer} --n_embd {cfg.n_embd} "
                      f"--vocab_size {cfg.vocab_size}")
    return info


def describe(path: str | os.PathLike) -> dict:
    """`rwkv-peft info`: a JSON-able description of a model, adapter or state file."""
    return {"file": str(path), **describe_state_dict(read_checkpoint(path), str(path))}


def load_model(path: str | os.PathLike, adapter: str | os.PathLike | None = None,
               state: str | os.PathLike | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype | None = torch.float32) -> torch.nn.Module:
    """Load an official checkpoint, optionally mounting an adapter and/or a tuned state without merging.

    Returns an RWKV7/RWKV6 module in eval mode: `model(tokens [B, T]) -> logits [B, T, V]`,
    `model.forward_with_state(tokens, state) -> (logits, state)`.
    """
    if adapter is not None or state is not None:
        raise UserError("mounting adapters and states needs the adapters package (not installed in this build)")
    return load_base(path, device=device, dtype=dtype)
