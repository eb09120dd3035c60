"""Session fixtures: tiny fp32 bases (one per version) and quantized runs cached per (case, version, scheme); and
`needs_bnb`, which skips a test, with the reason, where bitsandbytes cannot quantize. It probes at test time, not
at collection, so a run of the other test folders never loads bitsandbytes."""

from pathlib import Path

import pytest
import torch

from rwkv_peft.model import write_checkpoint
from rwkv_peft.model.init import random_state_dict

from ..adapters.cases import CONFIGS, VOCAB
from .cases import QuantRun, bnb_problem, train_quantized


@pytest.fixture
def needs_bnb() -> None:
    problem = bnb_problem()
    if problem is not None:
        pytest.skip(f"bitsandbytes cannot quantize on this machine ({problem}); pip install 'rwkv-peft[quant]'")


@pytest.fixture(scope="session")
def quant_bases(tmp_path_factory) -> dict[int, Path]:
    """{version: path} of a tiny fp32 base."""
    root = tmp_path_factory.mktemp("quant-bases")
    paths = {}
    for version, cfg in CONFIGS.items():
        paths[version] = root / f"tiny-v{version}.pth"
        write_checkpoint(random_state_dict(cfg, seed=10 + version, dtype=torch.float32), paths[version])
    return paths


@pytest.fixture(scope="session")
def quant_tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def quant_run(quant_bases, quant_tokens, tmp_path_factory):
    """quant_run(case, version, scheme) -> QuantRun, trained once per session."""
    cache: dict[tuple[str, int, str], QuantRun] = {}

    def get(case: str, version: int, scheme: str = "nf4") -> QuantRun:
        key = (case, version, scheme)
        if key not in cache:
            proj_dir = tmp_path_factory.mktemp(f"qproj-{case.replace('+', '-')}-v{version}-{scheme}")
            cache[key] = train_quantized(case, version, scheme, quant_bases[version], proj_dir, quant_tokens)
        return cache[key]

    return get
