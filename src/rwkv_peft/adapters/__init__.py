"""Parameter-efficient adapters for RWKV-7/RWKV-6: LoRA, PiSSA, MiSS/DiSHA (bone, bat), State tuning, and
train_parts; their files (RWKV-PEFT compatible) and merging.

For a training loop:

    spec = spec_from_flags(args)                    # --peft / --peft_config / --lora_config / --train_type ...
    apply_adapter(model, spec)                      # wrap, freeze the base, mark what trains
    if spec.method == "pissa": write_pissa_init(model, proj_dir)
    fold_lora(model)                                # on a GPU, after model.to(device): faster LoRA/PiSSA
    params = trainable_parameters(model)            # {name: Parameter}; is_state_param(name) -> own lr
    save_adapter(model, spec, proj_dir, epoch, base_path)
    load_adapter_weights(model, path)               # resume (after apply_adapter with the same spec)
"""

from .apply import apply_adapter, fold_lora, mount_adapter, mount_state, prepare_load
from .base import AdapterLinear, adapter_layers, default_targets, resolve_targets
from .flags import spec_from_flags
from .io import (
    base_fingerprint,
    base_info,
    load_adapter_weights,
    pissa_init_fingerprint,
    read_pissa_init,
    save_adapter,
    trainable_parameters,
    write_pissa_init,
)
from .lora import LoraConfig, LoraLinear
from .merge import merge
from .miss import BatLinear, BoneLinear, MissConfig
from .parts import DEFAULT_PARTS, PARTS, part_parameter_names
from .reader import AdapterFile, check_against_base, read_adapter, read_state
from .spec import METHODS, AdapterSpec
from .state import attach_state, is_state_param, split_state, state_tensors

__all__ = ["METHODS", "AdapterSpec", "LoraConfig", "MissConfig", "AdapterLinear", "LoraLinear", "BoneLinear",
           "BatLinear", "AdapterFile", "PARTS", "DEFAULT_PARTS", "spec_from_flags", "apply_adapter", "fold_lora",
           "trainable_parameters", "is_state_param", "save_adapter", "load_adapter_weights", "write_pissa_init",
           "read_pissa_init", "base_fingerprint", "base_info", "mount_adapter", "mount_state", "merge",
           "read_adapter", "check_against_base", "adapter_layers", "default_targets", "resolve_targets",
           "part_parameter_names", "attach_state", "split_state", "state_tensors", "prepare_load",
           "pissa_init_fingerprint", "read_state"]
