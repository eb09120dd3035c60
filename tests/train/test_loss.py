"""The chunked head loss equals plain cross entropy plus RWKV's L2Wrap, in value and gradients."""

import pytest
import torch
import torch.nn.functional as F

import rwkv_peft.train.loss as loss_module
from rwkv_peft.train.loss import L2WRAP, dense_head_loss, head_loss


def reference(hidden, weight, labels, normalizer):
    """CE summed / normalizer, plus the penalty whose gradient is L2Wrap's: 1e-4/2 * sum(max logit^2) / N."""
    logits = (hidden @ weight.t()).reshape(-1, weight.shape[0])
    flat = labels.reshape(-1)
    ce = F.cross_entropy(logits, flat, ignore_index=-100, reduction="sum") / normalizer
    kept = logits[flat != -100]
    return ce, ce + L2WRAP / 2 * kept.max(-1).values.square().sum() / normalizer


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 3, 1000])
@pytest.mark.parametrize("head_trains", [False, True])
def test_value_and_gradients(monkeypatch, chunk_rows, head_trains, dense):
    V = 50
    monkeypatch.setattr(loss_module, "_CHUNK_LOGITS", chunk_rows * V)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, 16, generator=g, requires_grad=True)
    weight = torch.randn(V, 16, generator=g, requires_grad=head_trains)
    labels = torch.randint(0, V, (2, 7), generator=g)
    labels[0, :3] = -100
    if dense:  # the CUDA-graph path: every row through the head, ignored ones weighted 0, tensor normalizer
        loss, n = dense_head_loss(hidden, weight, labels, normalizer=torch.tensor(13.0)), 11
    else:
        loss, n = head_loss(hidden, weight, labels, normalizer=13.0)
    loss.backward(torch.tensor(2.0))  # the incoming gradient scales everything (loss scaling, accumulation)
    got = hidden.grad.clone(), None if weight.grad is None else weight.grad.clone()
    hidden.grad = weight.grad = None
    value, penalised = reference(hidden, weight, labels, 13.0)
    (2 * penalised).backward()
    assert n == 11 and torch.allclose(loss, value)
    assert torch.allclose(got[0], hidden.grad, atol=1e-6)
    if head_trains:
        assert torch.allclose(got[1], weight.grad, atol=1e-6)


def test_no_trained_positions_keeps_the_graph():
    hidden = torch.randn(1, 4, 8, requires_grad=True)
    loss, n = head_loss(hidden, torch.randn(10, 8), torch.full((1, 4), -100), normalizer=1)
    loss.backward()
    assert n == 0 and loss.item() == 0 and torch.equal(hidden.grad, torch.zeros_like(hidden))


def test_bf16_compute_is_close():
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(3, 5, 32, generator=g), torch.randn(100, 32, generator=g) * 0.1
    labels = torch.randint(0, 100, (3, 5), generator=g)
    exact, _ = head_loss(hidden, weight, labels, 15)
    half, _ = head_loss(hidden, weight, labels, 15, compute_dtype=torch.bfloat16)
    assert abs(exact.item() - half.item()) < 2e-2 * exact.item()


def test_compiled_chunks_match_the_eager_ones(monkeypatch):
    """The dense path's `fused` chunks (torch.compile of the same function) give the eager value and gradient."""
    V = 64
    monkeypatch.setattr(loss_module, "_CHUNK_LOGITS", 4 * V)
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(1, 8, 16, generator=g, requires_grad=True)
    weight = torch.randn(V, 16, generator=g)
    labels = torch.randint(0, V, (1, 8), generator=g)
    labels[0, 1] = -100
    results = []
    for fused in (False, True):
        loss = dense_head_loss(hidden, weight, labels, torch.tensor(7.0), fused=fused)
        loss.backward()
        results.append((loss.detach(), hidden.grad))
        hidden.grad = None
    (eager, eager_grad), (fused, fused_grad) = results
    assert torch.allclose(eager, fused, rtol=1e-6) and torch.allclose(eager_grad, fused_grad, atol=1e-6)
