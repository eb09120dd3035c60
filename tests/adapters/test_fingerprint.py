"""The base fingerprint: stable across bf16/fp32 copies and file formats, sensitive to weights, safe on huge
tensors."""

import torch

from rwkv_peft.adapters import base_fingerprint, base_info
from rwkv_peft.model import write_checkpoint
from rwkv_peft.model.init import random_state_dict

from .cases import CONFIGS


def test_same_weights_same_fingerprint_any_dtype_or_format(tmp_path):
    sd = random_state_dict(CONFIGS[7], seed=0, dtype=torch.bfloat16)
    write_checkpoint({k: v.float() for k, v in sd.items()}, tmp_path / "fp32.pth")
    write_checkpoint(sd, tmp_path / "bf16.safetensors")
    assert base_info(tmp_path / "fp32.pth") == base_info(tmp_path / "bf16.safetensors") == base_info(sd)


def test_other_weights_other_fingerprint():
    sd = random_state_dict(CONFIGS[6], seed=0, dtype=torch.float32)
    assert base_fingerprint(sd) != base_fingerprint(random_state_dict(CONFIGS[6], seed=1, dtype=torch.float32))
    assert base_fingerprint(sd) != base_fingerprint({k: v for k, v in sd.items() if k != "blocks.1.ln2.bias"})
    assert base_fingerprint(sd) == base_fingerprint(sd | {"blocks.0.att.time_state": torch.zeros(2, 64, 64)})


def test_probes_stay_inside_tensors_over_2_pow_24_elements():
    """A float linspace of probe positions rounds past the end of such tensors."""
    huge = {"emb.weight": torch.zeros(2**24 + 3, dtype=torch.bfloat16)}
    assert base_fingerprint(huge).startswith("sha256:")
