"""RWKV-7 and RWKV-6 models with official parameter names, their loader and state."""

from .checkpoint import read_checkpoint, write_checkpoint
from .load import build_model, infer_config, load_base, model_from_state_dict
from .rwkv6 import RWKV6, RWKV6Config
from .rwkv7 import RWKV7, RWKV7Config
from .state import RWKVState

__all__ = ["RWKV7", "RWKV7Config", "RWKV6", "RWKV6Config", "RWKVState", "build_model", "infer_config",
           "load_base", "model_from_state_dict", "read_checkpoint", "write_checkpoint"]
