"""relu_squared: relu(x)^2 with a backward from its output alone (ops/relu_squared.py)."""

import pytest
import torch

from rwkv_peft.ops import relu_squared
from tests.conftest import rel_err

BF16_GRAD = 2 ** -8  # relative: the derivative comes from the bf16-rounded output


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, BF16_GRAD)])
def test_value_and_gradient_equal_autograds(dtype, tol):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=g).to(dtype)
    x[0, :8] = torch.tensor([0.0, -0.0, 1e-3, -1e-3, 1e-20, -5.0, 5.0, 0.5]).to(dtype)
    upstream = torch.randn(64, 256, generator=g).to(dtype)
    grads = []
    for fn in (relu_squared, lambda t: torch.relu(t) ** 2):
        leaf = x.clone().requires_grad_()
        y = fn(leaf)
        y.backward(upstream)
        grads.append((y.detach(), leaf.grad))
    (y, grad), (y_ref, grad_ref) = grads
    assert torch.equal(y, y_ref)
    assert rel_err(grad.float(), grad_ref.float()) < tol


def test_keeps_only_its_output():
    saved = []
    x = torch.randn(8, 32, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = relu_squared(x)
    assert len(saved) == 1 and saved[0].data_ptr() == y.data_ptr()
