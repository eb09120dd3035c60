from pathlib import Path

import pytest
import torch

from .helpers import V6, make_base, make_binidx


@pytest.fixture(autouse=True, scope="package")
def one_thread():
    """One intra-op thread: these models are tiny, and threads waiting on each other make CPU runs slower and
    their timing erratic on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "tiny-v7.pth")


@pytest.fixture(scope="session")
def base_v6(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("base") / "tiny-v6.pth", V6)


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> str:
    return make_binidx(tmp_path_factory.mktemp("data") / "progressions")
