"""`quantize_model`: put a model's frozen base linears on quantized storage, in place.

Two kinds of target:
- a plain `nn.Linear` becomes a `QuantLinear`;
- an adapter layer (`AdapterLinear`) keeps its class and its adapter tensors; its `weight` Parameter is replaced
  by a `QuantizedWeight`, and its `base_forward` / `base_weight` (the only way adapters reach the base) are
  served by it. LoRA, PiSSA, bone, bat and State tuning therefore run unchanged on a quantized base.

Call it after `apply_adapter`: PiSSA's SVD must see the full-precision weight (the residual W - B0 A0 is what
gets quantized, as in RWKV-PEFT and HF peft), and target resolution needs the nn.Linear layers.
"""

from typing import Sequence

import torch
from torch import nn

from ..adapters.base import AdapterLinear, block_relative, default_targets
from ..errors import UserError
from .schemes import canonical_scheme
from .weight import QuantizedWeight, QuantLinear


def quantize_model(model: nn.Module, scheme: str, targets: Sequence[str] | None = None,
                   quantize_head: bool = False, device: torch.device | str | None = None) -> None:
    """Quantize the frozen base weights of `model` in place with `scheme` ("nf4", "fp4"/"4bit", "int8";
    "none" does nothing).

    targets: block-relative linear names, matched like adapter targets ("att.key", or "key" for att.key and
    ffn.key); None means the linears RWKV-PEFT wraps (att/ffn) plus every adapter layer, adapted or not.
    quantize_head: also quantize `head` (the embedding is never quantized). device: where to quantize each
    weight (e.g. "cuda" for a model still on the CPU, so the full-precision model never has to fit on the GPU);
    the layer's storage ends up there. Default: where each weight already is.

    Each full-precision weight is released once its layer is quantized: nothing else in the model refers to it.
    """
    scheme = canonical_scheme(scheme)
    if scheme == "none":
        return
    if any(isinstance(m, QuantizedWeight) for m in model.modules()):
        raise UserError("this model is already quantized; quantize a model once")
    names = _target_names(model, targets) + (["head"] if quantize_head else [])
    for name in names:
        module = model.get_submodule(name)
        if module.weight.requires_grad:
            raise UserError(f"{name}.weight trains (full fine-tuning or --train_parts), so it cannot be quantized; "
                            "quantization is for a frozen base under an adapter or State tuning")
        weight = module.weight.detach()
        quantized = QuantizedWeight.from_weight(weight if device is None else weight.to(device), scheme)
        if isinstance(module, AdapterLinear):
            _serve_base(module, quantized)
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, QuantLinear(quantized))


def _serve_base(layer: AdapterLinear, quantized: QuantizedWeight) -> None:
    """Make an adapter layer's base the quantized weight: its `weight` becomes the QuantizedWeight submodule and
    the two base accessors (instance attributes shadowing the class's) read from it."""
    del layer.weight
    layer.weight = quantized
    layer.base_forward = quantized.linear
    layer.base_weight = quantized.dequantize


def _target_names(model: nn.Module, targets: Sequence[str] | None) -> list[str]:
    """Full names of the linears to quantize, in model order."""
    if targets is None:
        targets = default_targets(model.config.version)
        extra = {n for n, m in model.named_modules() if isinstance(m, AdapterLinear)}
    else:
        extra = set()
    names = []
    for name, module in model.named_modules():
        if not (name.startswith("blocks.") and name.count(".") >= 2):
            continue
        relative = block_relative(name)
        if name in extra or any(relative == t or relative.endswith("." + t) for t in targets):
            if not isinstance(module, (nn.Linear, AdapterLinear)):
                raise UserError(f"quant target {name} is a {type(module).__name__}, not a linear layer")
            names.append(name)
    unmatched = [t for t in targets if not any(block_relative(n) == t or block_relative(n).endswith("." + t)
                                               for n in names)]
    if unmatched:
        raise UserError(f"quant target {unmatched[0]!r} matches no layer; valid targets are linear layers inside "
                        f"a block, e.g. {', '.join(default_targets(model.config.version))}")
    return names


def quantized_layers(model: nn.Module) -> dict[str, QuantizedWeight]:
    """{layer name: its QuantizedWeight} of every quantized layer (adapter layers and QuantLinear alike)."""
    return {name.removesuffix(".weight"): m for name, m in model.named_modules() if isinstance(m, QuantizedWeight)}
