"""Session fixtures: tiny official-shape base files (fp32, so parity is not limited by bf16) and adapters trained
a few steps on a fixed batch, cached per (case, version) so every test file reuses the same runs."""

from pathlib import Path

import pytest
import torch

from rwkv_peft.model import write_checkpoint
from rwkv_peft.model.init import random_state_dict

from .cases import CONFIGS, VOCAB, Trained, train_case


@pytest.fixture(scope="session")
def base_files(tmp_path_factory) -> dict[int, Path]:
    """{version: path} of a tiny fp32 base per version."""
    root = tmp_path_factory.mktemp("bases")
    paths = {}
    for version, cfg in CONFIGS.items():
        paths[version] = root / f"tiny-v{version}.pth"
        write_checkpoint(random_state_dict(cfg, seed=version, dtype=torch.float32), paths[version])
    return paths


@pytest.fixture(scope="session")
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def trained(base_files, tokens, tmp_path_factory):
    """trained(case, version) -> Trained, computed once per session."""
    cache: dict[tuple[str, int], Trained] = {}

    def get(case: str, version: int) -> Trained:
        if (case, version) not in cache:
            proj_dir = tmp_path_factory.mktemp(f"proj-{case.replace('+', '-')}-v{version}")
            cache[case, version] = train_case(case, version, base_files[version], proj_dir, tokens)
        return cache[case, version]

    return get
