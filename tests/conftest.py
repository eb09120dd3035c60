"""Shared fixtures: tiny random official-shape checkpoints, the official `rwkv` package as a reference, markers."""

import importlib
import os
import sys

import pytest
import torch

from rwkv_peft.model import RWKV6Config, RWKV7Config
from rwkv_peft.model.init import random_state_dict


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """‖x − ref‖ / ‖ref‖ in float64: the error measure every parity test uses."""
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


def tiny_config(version: int, n_layer: int = 2, n_embd: int = 128, vocab_size: int = 1000, **kw):
    cls = RWKV7Config if version == 7 else RWKV6Config
    return cls(n_layer=n_layer, n_embd=n_embd, vocab_size=vocab_size, **kw)


@pytest.fixture
def make_checkpoint(tmp_path):
    """Write a random official-shape checkpoint and return (path, state_dict)."""
    def make(version: int, dtype=torch.float32, seed: int = 0, name: str | None = None, **kw):
        sd = random_state_dict(tiny_config(version, **kw), seed=seed, dtype=dtype)
        path = tmp_path / (name or f"tiny-v{version}.pth")
        torch.save(sd, path)
        return path, sd
    return make


def official_rwkv(version: int):
    """The `rwkv` pip package's model class for a version. It reads its flags at import, so re-import."""
    pytest.importorskip("rwkv")
    os.environ["RWKV_V7_ON"] = "1" if version == 7 else "0"
    os.environ["RWKV_CUDA_ON"] = "0"
    os.environ.setdefault("RWKV_JIT_ON", "1")
    sys.modules.pop("rwkv.model", None)
    return importlib.import_module("rwkv.model").RWKV


def load_official(path, version: int):
    """Load a .pth in the `rwkv` package with strategy 'cpu fp32' (v7 wants the path without .pth)."""
    cls = official_rwkv(version)
    if version == 7:
        return cls(model=str(path)[:-4], strategy="cpu fp32")
    return cls(model=str(path), strategy="cpu fp32", verbose=False)
