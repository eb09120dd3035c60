"""Quantized runs for the tests: every adapter case of the matrix (tests/adapters/cases.py, in the seeds' flag
spellings) trained a few steps on a quantized tiny base, and the probe that says whether bitsandbytes works."""

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkv_peft import adapters
from rwkv_peft.model.load import load_base
from rwkv_peft.quant import quantize_model

from ..adapters.cases import CASES, train_steps


@functools.cache
def bnb_problem() -> str | None:
    """Why bitsandbytes cannot quantize on this machine, or None when it can."""
    try:
        import bitsandbytes.functional as bnb

        bnb.quantize_4bit(torch.ones(64, 64), blocksize=64, quant_type="nf4")
    except Exception as e:  # noqa: BLE001 - any failure (missing, no CPU library) means skip, with its reason
        return f"{type(e).__name__}: {e}"
    return None


@dataclass
class QuantRun:
    """One case trained on a quantized base. Logits are [B, T, V] on `tokens`; `full_logits` from the
    unquantized base, `init_logits` from the quantized base with the fresh adapter."""

    spec: adapters.AdapterSpec
    model: torch.nn.Module
    base_path: Path
    adapter_path: Path
    tokens: torch.Tensor
    full_logits: torch.Tensor
    init_logits: torch.Tensor
    adapted_logits: torch.Tensor
    losses: list[float]


def train_quantized(case: str, version: int, scheme: str, base_path: Path, proj_dir: Path,
                    tokens: torch.Tensor) -> QuantRun:
    """apply_adapter, then quantize_model (the trainer's order), then STEPS Adam steps; saved as epoch 0."""
    torch.manual_seed(1234)
    spec = adapters.spec_from_flags(CASES[case] | {"quant": scheme})
    model = load_base(base_path)
    with torch.no_grad():
        full_logits = model(tokens)
    adapters.apply_adapter(model, spec)
    quantize_model(model, spec.quant)
    with torch.no_grad():
        init_logits = model(tokens)
    losses, adapted_logits = train_steps(model, tokens, case)
    path = adapters.save_adapter(model, spec, proj_dir, 0, base_path)
    return QuantRun(spec, model, base_path, path, tokens, full_logits, init_logits, adapted_logits, losses)
