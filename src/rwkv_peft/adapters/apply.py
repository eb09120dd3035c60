"""Putting an adapter on a model: for training (`apply_adapter`) and for inference without merging (`mount_*`).

`apply_adapter` freezes the base, wraps the target linears, attaches the tuned state, and marks trainable
exactly the adapter tensors, the states and the train_parts. With no adapter, no state and no train_parts
it is full fine-tuning: everything trains.
"""

import os
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ..errors import UserError
from . import fold
from .base import adapter_layers, default_targets, inject, resolve_targets
from .io import PISSA_INIT_NAME, load_adapter_weights, read_config, read_pissa_init
from .lora import LoraConfig, LoraLinear
from .parts import part_parameter_names
from .reader import AdapterFile, check_against_base, read_adapter, read_state
from .spec import AdapterSpec
from .state import attach_state, check_state, split_state


def apply_adapter(model: nn.Module, spec: AdapterSpec,
                  pissa_init: Mapping[str, tuple[Tensor, Tensor]] | None = None) -> None:
    """Adapt `model` in place for training with `spec`.

    PiSSA runs its SVD here, on the weights' device, unless initial factors come from `pissa_init` ({module:
    (A0, B0)}) or `spec.pissa_init` (a file): resumed runs and every rank but the first must reuse the
    factors of the first, because the randomized SVD gives different ones each time. Then `spec.load`
    (RWKV-PEFT's lora_load / load / pissa_load), if set, is loaded strictly.
    """
    if adapter_layers(model):
        raise UserError("this model already carries an adapter; apply one adapter per model")
    if spec.is_full_finetune:
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    if spec.layer is not None:
        names = resolve_targets(model, spec.targets or default_targets(model.config.version))
        init = {}
        if isinstance(spec.layer, LoraConfig) and spec.layer.pissa:
            init = dict(pissa_init or (read_pissa_init(spec.pissa_init) if spec.pissa_init else {}))
            lacking = [n for n in names if n not in init]
            if init and lacking:
                raise UserError(f"PiSSA init factors lack {lacking[0]}; the init file is for other targets")
        inject(model, names, lambda name, linear: spec.layer.make_layer(linear, init.get(name)))
    if spec.state:
        attach_state(model)
    for name in part_parameter_names(model, spec.train_parts):
        model.get_parameter(name).requires_grad_(True)
    if spec.load:
        load_adapter_weights(model, spec.load)


def prepare_load(spec: AdapterSpec, base_sd: Mapping[str, Tensor], base_name: str,
                 check_fingerprint: bool = True) -> tuple[AdapterSpec, str | None]:
    """Check the file a training run continues from (`spec.load`: RWKV-PEFT's lora_load / pissa_load / load)
    against the base and the run's settings, as merge and mount check an adapter; returns the spec to train
    with and a note for the run's description (None: nothing to say).

    PiSSA without pissa_init continues from the init_pissa.pth beside the loaded file: a fresh SVD would pair the
    trained factors with another residual, so the continued model would not be the trained one.
    """
    if not spec.load:
        return spec, None
    config = read_config(spec.load)
    note = None
    if spec.method == "pissa" and not spec.pissa_init:
        beside = Path(spec.load).parent / ((config or {}).get("pissa_init") or PISSA_INIT_NAME)
        if not beside.exists():
            raise UserError("pissa_load needs the init it was trained from: pass pissa_init (init_pissa.pth of "
                            f"that run); there is none beside {spec.load}")
        spec = replace(spec, pissa_init=str(beside))
        note = f"pissa_load: continuing from the init it was trained from, {beside} (pissa_init not given)"
    # A config-less RWKV-PEFT LoRA file does not say its alpha: it gets the run's.
    alpha = spec.layer.alpha if config is None and spec.method == "lora" else None
    loaded = read_adapter(spec.load, lora_alpha=alpha, pissa_init=spec.pissa_init)
    if loaded.spec.method != spec.method:
        raise UserError(f"{spec.load} is a {loaded.spec.method!r} adapter and this run trains {spec.method!r}; "
                        "continue it with the method it was trained with")
    _check_alpha(spec, loaded)
    check_against_base(loaded, split_state(base_sd)[0], base_name, check_fingerprint)
    return spec, note


def _check_alpha(spec: AdapterSpec, loaded: AdapterFile) -> None:
    """The same alpha as the run that wrote the file: another would rescale its trained delta silently."""
    if isinstance(spec.layer, LoraConfig) and loaded.base is not None and loaded.spec.layer.alpha != spec.layer.alpha:
        raise UserError(f"lora_alpha {spec.layer.alpha:g} contradicts adapter_config.json (alpha "
                        f"{loaded.spec.layer.alpha:g}) of {spec.load}; set lora_alpha to {loaded.spec.layer.alpha:g} "
                        "to continue that training")


def fold_lora(model: nn.Module) -> int:
    """Run the model's LoRA / PiSSA layers with A inside the base product (fold.py); returns how many.

    For training on a GPU, after the model reached its device (`.to()` would copy the base weights out of the
    folded buffers). Left as they are: layers with dropout (the mask sits between x and A), quantized bases and
    non-float weights.
    """
    layers = [m for m in adapter_layers(model).values()
              if isinstance(m, LoraLinear) and m.folded is None and isinstance(m.dropout, nn.Identity)
              and "base_forward" not in vars(m) and m.weight.is_floating_point()]
    for place in {(m.weight.device, m.weight.dtype): None for m in layers}:
        here = [m for m in layers if (m.weight.device, m.weight.dtype) == place]
        fold.fold(here, fold.stack_groups(model, here))
    if any(m.weight.is_cuda for m in layers):
        # The replaced weights' memory goes back to the driver: left in the caching allocator, it fragments
        # (1.5B LoRA ctx 1024 on an H100: +1.5 GiB of reserved memory, the process peak 9.6 -> 11.1 GiB).
        torch.cuda.empty_cache()
    folded = model.__dict__.setdefault("_folded_lora", [])
    if layers and not folded:
        model.pass_hooks.append(lambda: fold.refresh(folded))
    folded += layers
    return len(layers)


def mount_adapter(model: nn.Module, path: str | os.PathLike, base_sd: Mapping[str, Tensor], base_name: str, *,
                  lora_alpha: float | None = None, pissa_init: str | os.PathLike | None = None,
                  check_fingerprint: bool = True) -> AdapterFile:
    """Mount an adapter file (ours or RWKV-PEFT's) on the model built from `base_sd`, without merging; returns
    the file as read (its spec records the --quant it was trained with, see `api.load_model`).

    Checks the adapter against the base first (dims, fingerprint, shapes). The model stays adapted: its
    wrapped layers compute base + adapter on the fly, as in training.
    """
    adapter = read_adapter(path, lora_alpha=lora_alpha, pissa_init=pissa_init)
    check_against_base(adapter, split_state(base_sd)[0], base_name, check_fingerprint)
    spec = replace(adapter.spec, targets=adapter.targets or None, load=None, pissa_init=None)
    apply_adapter(model, spec, pissa_init=adapter.pissa_init)
    load_adapter_weights(model, adapter.tensors())
    return adapter


def mount_state(model: nn.Module, path: str | os.PathLike, base_sd: Mapping[str, Tensor] | None = None,
                base_name: str = "the base", check_fingerprint: bool = True) -> AdapterFile:
    """Mount a state file (exactly L `blocks.i.att.time_state` [H, N, N]) as the model's initial state; returns
    the file as read (its spec records the --quant it was trained with, see `api.load_model`).

    With `base_sd` (what the model was built from), a state whose adapter_config.json names another base (dims
    or fingerprint) is refused, as an adapter is: same-shaped states of an RWKV-6 and an RWKV-7, or of two
    RWKV-7 of one size, would mount silently and compute nonsense.
    """
    state = read_state(path)
    if base_sd is not None:
        check_against_base(state, split_state(base_sd)[0], base_name, check_fingerprint)
    check_state(state.state, model.config, str(path))
    attach_state(model, state.state)
    return state
