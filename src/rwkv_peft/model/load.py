"""From an official checkpoint to a ready model: detect the version, read every size off tensor shapes, build
the module without allocating (meta device), and load the tensors strictly.

Nothing has to be passed by hand (`--n_layer`, `--n_embd` ... are only checked against the file). Official
sizes from 0.1B to 14B, v6 and v7, including files whose low-rank dims break RWKV-LM's formula (13.3B), load.
"""

import os

import torch
from torch import Tensor, nn

from ..errors import UserError
from .checkpoint import read_checkpoint
from .rwkv6 import RWKV6, RWKV6Config
from .rwkv7 import RWKV7, RWKV7Config

Config = RWKV7Config | RWKV6Config

# Block 0 of a v7 file may lack v0/v1/v2 (they are unused there); the model tolerates their absence.
_V7_OPTIONAL = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")
# DeepEmbed ("v7a") and "v7b" variants: the keys that give them away.
_V7_VARIANT_MARKERS = ("s_emb", "ffn.s0", "ffn.s1", "ffn.s2", ".qkv.", ".qq")


def infer_config(sd: dict[str, Tensor], source: str = "checkpoint") -> Config:
    """The model config implied by a state dict's tensor shapes. Raises UserError for non-RWKV-6/7 files."""
    if "emb.weight" not in sd or "blocks.0.ffn.key.weight" not in sd:
        raise UserError(f"{source}: not an RWKV model (no emb.weight / blocks.0.ffn.key.weight); "
                        "is this an adapter or state file? `rwkv-peft info` tells what it is")
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    n_layer = max(layers) + 1
    vocab, n_embd = sd["emb.weight"].shape
    dim_ffn = sd["blocks.0.ffn.key.weight"].shape[0]
    if "blocks.0.att.r_k" in sd:
        odd = [k for k in sd if any(m in k for m in _V7_VARIANT_MARKERS)]
        if odd:
            raise UserError(f"{source}: an RWKV-7 variant this tool does not support (found {odd[0]})")
        n_head, head_size = sd["blocks.0.att.r_k"].shape
        v_ref = "blocks.1.att.v1" if n_layer > 1 else "blocks.0.att.v1"
        return RWKV7Config(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, head_size=head_size, dim_ffn=dim_ffn,
                           dim_w=sd["blocks.0.att.w1"].shape[1], dim_a=sd["blocks.0.att.a1"].shape[1],
                           dim_v=sd[v_ref].shape[1] if v_ref in sd else 0, dim_g=sd["blocks.0.att.g1"].shape[1])
    if "blocks.0.att.time_maa_x" in sd:
        n_head, head_size = sd["blocks.0.att.time_faaaa"].shape
        return RWKV6Config(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, head_size=head_size,
                           dim_att=sd["blocks.0.att.receptance.weight"].shape[0], dim_ffn=dim_ffn,
                           dim_mix=sd["blocks.0.att.time_maa_w2"].shape[1],
                           dim_decay=sd["blocks.0.att.time_decay_w1"].shape[1])
    if "blocks.0.att.ln_x.weight" in sd:
        raise UserError(f"{source}: looks like RWKV-5 or older; rwkv-peft supports RWKV-6 (x060) and RWKV-7 (x070)")
    raise UserError(f"{source}: unknown RWKV version (no att.r_k or att.time_maa_x); RWKV-6 and RWKV-7 are supported")


def build_model(cfg: Config, device: torch.device | str = "meta") -> nn.Module:
    """An RWKV6/RWKV7 module for `cfg`; on the meta device by default (no memory until weights are assigned)."""
    with torch.device(device):
        return RWKV7(cfg) if isinstance(cfg, RWKV7Config) else RWKV6(cfg)


def check_against(cfg: Config, source: str, **given: int) -> None:
    """Flags such as --n_layer/--n_embd/--vocab_size are optional; a value that disagrees with the file is an error."""
    for name, value in given.items():
        actual = getattr(cfg, name)
        if value and value != actual:
            raise UserError(f"--{name} {value} disagrees with {source}, which has {name}={actual}; "
                            "drop that setting, flag or recipe line (sizes are read from the checkpoint), or pick the "
                            "right file")


def validate_state_dict(sd: dict[str, Tensor], source: str = "checkpoint") -> Config:
    """The config of a complete, well-formed model file: every needed key present with the right shape and no
    strangers. Raises UserError naming the first problem."""
    cfg = infer_config(sd, source)
    expected = {k: v.shape for k, v in build_model(cfg).state_dict().items()}
    missing = [k for k in expected if k not in sd and k not in _V7_OPTIONAL]
    if missing:
        raise UserError(f"{source}: missing {len(missing)} tensor(s) an RWKV-{cfg.version} model with "
                        f"{cfg.n_layer} layers needs, e.g. {missing[0]}; the file may be truncated or damaged")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        raise UserError(f"{source}: {len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}; "
                        "if this is a merged or adapter file, say which (see `rwkv-peft info`)")
    for k, v in sd.items():
        if v.shape != expected[k]:
            raise UserError(f"{source}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k])} "
                            "for this model size")
    return cfg


def model_from_state_dict(sd: dict[str, Tensor], source: str = "checkpoint",
                          device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """Build and strictly load a model (see `validate_state_dict`)."""
    model = build_model(validate_state_dict(sd, source))
    absent = [k for k in _V7_OPTIONAL if k not in sd and k in model.state_dict()]
    if absent:
        sd = dict(sd) | {k: torch.zeros(model.get_parameter(k).shape, dtype=sd["emb.weight"].dtype) for k in absent}
    model.load_state_dict(sd, strict=True, assign=True)
    model.to(device=device, dtype=dtype)
    return model


def load_base(path: str | os.PathLike, device: torch.device | str = "cpu",
              dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """Read an official `.pth` / `.safetensors` and return the model on `device` in `dtype` (None keeps the
    file's dtype), in eval mode."""
    model = model_from_state_dict(read_checkpoint(path), str(path), device, dtype)
    return model.eval()
