"""The stable Python API (`rwkv_peft.load_model`, `rwkv_peft.merge`, `rwkv_peft.describe`), composed from the
layers below. The CLI calls these same functions. `merge` is `rwkv_peft.adapters.merge.merge`."""

import os

import torch
from torch import Tensor

from . import adapters
from .adapters.merge import merge
from .adapters.reader import describe_adapter, trained_quant
from .adapters.state import is_state_param, split_state
from .model import read_checkpoint
from .model.load import model_from_state_dict, validate_state_dict
from .quant import quantize_model
from .quant.schemes import canonical_scheme

__all__ = ["load_model", "merge", "describe", "describe_state_dict"]


def describe_state_dict(sd: dict[str, Tensor], source: str = "file") -> dict:
    """What a tensor dict is: a base model (possibly with a merged time_state) or a tuned state."""
    if sd and all(is_state_param(k) for k in sd):
        H, N, _ = next(iter(sd.values())).shape
        return {"kind": "state", "n_layer": len(sd), "n_head": H, "head_size": N, "n_embd": H * N,
                "dtype": str(next(iter(sd.values())).dtype).removeprefix("torch.")}
    base = split_state(sd)[0]
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
    sd = read_checkpoint(path)
    return {"file": str(path), **(describe_adapter(sd, path) or describe_state_dict(sd, str(path)))}


def load_model(path: str | os.PathLike, adapter: str | os.PathLike | None = None,
               state: str | os.PathLike | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype | None = torch.float32, *, lora_alpha: float | None = None,
               pissa_init: str | os.PathLike | None = None, check_fingerprint: bool = True,
               quant: str | None = None) -> torch.nn.Module:
    """Load an official checkpoint, optionally mounting an adapter and/or a tuned state without merging.

    adapter: an adapter file (`rwkv-N.pth` with its adapter_config.json, or a RWKV-PEFT file: then
    `lora_alpha` for LoRA and `pissa_init` for PiSSA); state: a state file. A base that already carries
    `time_state` tensors (a merged state) starts from them. quant: quantize the frozen base ("nf4", "int8", ...,
    "none"); None follows the adapter's (or state's) adapter_config.json, so an adapter trained with --quant runs on
    the quantized base it was fitted to (as `merge` does). check_fingerprint: False mounts an adapter or state
    whose adapter_config.json names another base of the same dims. Returns an RWKV7/RWKV6 module in eval mode:
    `model(tokens [B, T]) -> logits [B, T, V]`, `model.forward_with_state(tokens, state) -> (logits, state)`.
    """
    sd = read_checkpoint(path)
    base_sd, merged_state = split_state(sd)
    model = model_from_state_dict(base_sd, str(path), device, dtype)
    if merged_state:
        adapters.attach_state(model, merged_state)
    files = []
    if adapter is not None:
        files.append(adapters.mount_adapter(model, adapter, base_sd, str(path), lora_alpha=lora_alpha,
                                            pissa_init=pissa_init, check_fingerprint=check_fingerprint))
    if state is not None:
        files.append(adapters.mount_state(model, state, base_sd, str(path), check_fingerprint))
    trained = trained_quant(*files)
    scheme = canonical_scheme(quant) if quant is not None else (trained or "none")
    if scheme != "none":
        quantize_model(model, scheme)  # after the adapter and state, as in training (PiSSA: the residual is quantized)
    return model.eval()

