"""Adapter files as a training run writes and resumes them.

Layout of a run's `proj_dir` (keys are RWKV-PEFT's, so its merge scripts read our files and we read theirs):
- `rwkv-{epoch}.pth`: only the trainable tensors, in the dtype they trained in: `blocks.i.att.key.lora_A` [r, in]
  and `.lora_B` [out, r], or `....disha` (bone [r, out], bat [in/r, r, r]), `blocks.i.att.time_state` [H, N, N],
  and train_parts tensors under their official names. A pure State-tuning run's file is therefore exactly
  the L `time_state` keys, the state file runtimes mount.
- `rwkv-{epoch}-state.pth`: for State tuning combined with a weight adapter, the state keys again on their
  own, so the state can be mounted without the adapter.
- `adapter_config.json`: method, rank, alpha, dropout, mode, targets, train_parts, quant, the base's dims and
  fingerprint, the PiSSA init file's name and fingerprint (`pissa_init_fingerprint`) and the rwkv-peft version.
  Merging reads it: nothing is retyped.
- `init_pissa.pth` (PiSSA): the initial factors, keys `model.<module>.init_lora_A/B` as RWKV-PEFT writes them.

The base fingerprint is cheap and deterministic: sha256 over the sorted key names and shapes plus 16 evenly
spaced elements of five tensors, rounded to bf16 (so a bf16 file and its fp32 copy agree). It never reads a
whole tensor, so fingerprinting a memory-mapped 3 GB checkpoint touches a few pages.
"""

import hashlib
import json
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..model import infer_config, read_checkpoint, write_checkpoint
from .base import adapter_layers, block_relative
from .spec import CONFIG_NAME, AdapterSpec, spec_to_config
from .state import is_state_param, state_tensors

PISSA_INIT_NAME = "init_pissa.pth"
_PROBES = ("emb.weight", "blocks.0.att.receptance.weight", "blocks.0.ffn.value.weight", "ln_out.weight",
           "head.weight")
_PROBE_COUNT = 16
_INIT_KEY = re.compile(r"^(?:model\.)?(blocks\.\d+\..+)\.init_lora_([AB])$")


def base_fingerprint(sd: Mapping[str, Tensor]) -> str:
    """A short id of a base model's weights (time_state keys are ignored)."""
    h = hashlib.sha256()
    for k in sorted(k for k in sd if not is_state_param(k)):
        h.update(f"{k}{list(sd[k].shape)}\n".encode())
    for k in _PROBES:
        if k in sd:
            h.update(_probe(sd[k]))
    return "sha256:" + h.hexdigest()[:32]


def _probe(t: Tensor) -> bytes:
    """16 evenly spaced elements of a tensor, rounded to bf16 (so a bf16 copy and an fp32 one agree)."""
    flat = t.reshape(-1)
    # Integer arithmetic: a float linspace rounds past the end for tensors over 2^24 elements.
    idx = torch.arange(_PROBE_COUNT) * (flat.numel() - 1) // (_PROBE_COUNT - 1)
    return flat[idx].to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def pissa_init_fingerprint(init: Mapping[str, tuple[Tensor, Tensor]]) -> str:
    """A short id of PiSSA's initial factors {module: (A0, B0)}, probed as the base fingerprint is. Two runs'
    randomized SVDs differ everywhere, so this tells one run's init_pissa.pth from another's; adapter_config.json
    records it because an adapter merged or continued with another init is silently another model."""
    h = hashlib.sha256()
    for name in sorted(init):
        for tag, t in zip("AB", init[name]):
            h.update(f"{name}.init_lora_{tag}{list(t.shape)}\n".encode())
            h.update(_probe(t.detach().cpu()))
    return "sha256:" + h.hexdigest()[:32]


def base_info(base: str | os.PathLike | Mapping[str, Tensor]) -> dict:
    """The base's identity as adapter_config.json records it: dims and fingerprint."""
    sd = read_checkpoint(base) if isinstance(base, (str, os.PathLike)) else base
    cfg = infer_config({k: v for k, v in sd.items() if not is_state_param(k)}, str(base)[:200])
    return {"version": cfg.version, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "vocab_size": cfg.vocab_size,
            "head_size": cfg.head_size, "fingerprint": base_fingerprint(sd)}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """{name: parameter} of everything that trains (adapter tensors, time_state, train_parts)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def write_json(data: dict, path: Path) -> None:
    """Write JSON atomically (temp file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_config(adapter_path: str | os.PathLike) -> dict | None:
    """The adapter_config.json beside an adapter file, or None (a RWKV-PEFT file has none)."""
    path = Path(adapter_path).parent / CONFIG_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); fix or delete it") from None


def pissa_factors(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """{module name: (A0, B0)} of the model's PiSSA layers."""
    factors = {name: (layer.init_lora_A, layer.init_lora_B) for name, layer in adapter_layers(model).items()
               if hasattr(layer, "init_lora_A")}
    if not factors:
        raise UserError("write_pissa_init: this model has no PiSSA layers")
    return factors


def write_pissa_init(model: nn.Module, proj_dir: str | os.PathLike) -> Path:
    """Save the PiSSA layers' initial factors as `proj_dir/init_pissa.pth` (RWKV-PEFT's keys)."""
    sd = {}
    for name, (init_A, init_B) in pissa_factors(model).items():
        sd[f"model.{name}.init_lora_A"] = init_A
        sd[f"model.{name}.init_lora_B"] = init_B
    path = Path(proj_dir) / PISSA_INIT_NAME
    write_checkpoint(sd, path)
    return path


def read_pissa_init(path: str | os.PathLike) -> dict[str, tuple[Tensor, Tensor]]:
    """{module name: (A0 [r, in], B0 [out, r])} from an init_pissa.pth, with or without the `model.` prefix."""
    found: dict[str, dict[str, Tensor]] = {}
    for key, value in read_checkpoint(path).items():
        m = _INIT_KEY.match(key)
        if m is None:
            raise UserError(f"{path}: unexpected key {key}; a PiSSA init file holds "
                            "<module>.init_lora_A / .init_lora_B (optionally prefixed model.)")
        found.setdefault(m.group(1), {})[m.group(2)] = value.float()
    if not found:
        raise UserError(f"{path}: holds no PiSSA factors")
    broken = [name for name, ab in found.items() if len(ab) != 2]
    if broken:
        raise UserError(f"{path}: {broken[0]} lacks init_lora_A or init_lora_B; the file is incomplete")
    return {name: (ab["A"], ab["B"]) for name, ab in found.items()}


def save_adapter(model: nn.Module, spec: AdapterSpec, proj_dir: str | os.PathLike, epoch: int,
                 base: str | os.PathLike | dict) -> Path:
    """Write `rwkv-{epoch}.pth` (+ config, + standalone state for state+adapter, + PiSSA init).

    base: the base checkpoint's path, or `base_info(path)` computed once. Returns the adapter file's path.
    The PiSSA init file is rewritten from the model every time, so a stale one left in proj_dir by another run
    can never be paired with this adapter.
    """
    proj_dir = Path(proj_dir)
    proj_dir.mkdir(parents=True, exist_ok=True)
    info = base if isinstance(base, dict) else base_info(base)
    path = proj_dir / f"rwkv-{epoch}.pth"
    write_checkpoint(trainable_parameters(model), path)
    if spec.state and spec.layer is not None:
        write_checkpoint(state_tensors(model), proj_dir / f"rwkv-{epoch}-state.pth")
    pissa = None
    if spec.method == "pissa":
        pissa = (write_pissa_init(model, proj_dir).name, pissa_init_fingerprint(pissa_factors(model)))
    targets = list(dict.fromkeys(block_relative(n) for n in adapter_layers(model)))
    try:
        version = metadata.version("rwkv-peft")
    except metadata.PackageNotFoundError:
        version = "unknown"
    write_json(spec_to_config(spec, targets, info, version, *(pissa or (None, None))), proj_dir / CONFIG_NAME)
    return path


def load_adapter_weights(model: nn.Module, source: str | os.PathLike | Mapping[str, Tensor]) -> None:
    """Load an adapter file's tensors into a model that `apply_adapter` prepared (resume) or mounted.

    Strict: every key must name a parameter of the model with the same shape, and every trainable parameter
    must be in the file (RWKV-PEFT silently loaded nothing here when key prefixes differed).
    """
    sd = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    params = dict(model.named_parameters())
    name = str(source)[:200] if isinstance(source, (str, os.PathLike)) else "adapter weights"
    for key, value in sd.items():
        if key not in params:
            raise UserError(f"{name}: {key} is not a parameter of this adapted model; the file was trained with "
                            "another method, targets or base")
        if params[key].shape != value.shape:
            raise UserError(f"{name}: {key} has shape {tuple(value.shape)}, the model expects "
                            f"{tuple(params[key].shape)} (another rank or base size?)")
    missing = [k for k, p in params.items() if p.requires_grad and k not in sd]
    if missing:
        raise UserError(f"{name}: lacks {len(missing)} trainable tensor(s), e.g. {missing[0]}; "
                        "was it saved with other train_parts or targets?")
    with torch.no_grad():
        for key, value in sd.items():
            params[key].copy_(value)
