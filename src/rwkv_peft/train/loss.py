"""The language-model loss: cross entropy through the output head, computed in row chunks so that the full
[B, T, V] logits (4 GB in fp32 for 16k tokens of the 65536-token World vocabulary) never exist at once.

Only positions with a label (not -100) go through the head at all: padding and masked prompt tokens cost nothing
there. For each chunk of rows the forward pass computes the logits, the loss, and at once their gradients with
respect to the hidden states and (if it trains) the head weight; backward only scales what was stored. Memory:
one chunk of logits plus a gradient the size of the inputs.

The returned loss is sum(CE) / `normalizer` (the number of trained tokens in the optimizer step, so micro-batches
and chunks of one step add up to the step's mean). It also carries RWKV's L2Wrap: the gradient of the largest
logit at each position gets an extra `1e-4 * max_logit / normalizer`, pulling logits towards 0 so they cannot
drift upwards, i.e. a penalty 1e-4/2 * mean(max_logit^2) that is not included in the reported value.
RWKV-PEFT divides by B*T and applies it to padding too; here it covers trained tokens only, and it scales with
the incoming gradient (loss scaling, accumulation), which RWKV-PEFT's did not.
"""

from functools import cache

import torch
from torch import Tensor

IGNORE = -100
L2WRAP = 1e-4
# Rows per chunk: 2^24 logits (64 MB in fp32; 256 rows of the World vocabulary), at least one row. The chunk's
# logits, softmax and its bf16 copy are the loss's whole working set; 256-row GEMMs still run at full rate.
_CHUNK_LOGITS = 1 << 24


def _lse_and_ce(z: Tensor, targets: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """One chunk's fp32 logits z [n, V], targets [n] (>= 0), valid [n] bool -> (logsumexp per row [n], sum of CE
    over the valid rows, 0-d)."""
    lse = torch.logsumexp(z, dim=-1)
    return lse, ((lse - z.gather(1, targets[:, None])[:, 0]) * valid).sum()


def _chunk_grad(logits: Tensor, targets: Tensor, valid: Tensor, row_scale: Tensor) -> tuple[Tensor, Tensor]:
    """One chunk's CE and its gradient: logits [n, V] in the head matmul's dtype, targets [n] (>= 0), valid [n]
    bool, row_scale [n] (each row's weight in the gradient: valid / normalizer).
    Returns (sum of CE over valid rows, fp32 0-d; d loss / d logits [n, V] in the logits' dtype, L2Wrap included).
    Softmax runs in fp32 (in place, to hold one fp32 chunk at a time when run eagerly)."""
    z = logits.float()
    lse, ce = _lse_and_ce(z, targets, valid)
    top, top_idx = z.max(dim=-1)
    rows = torch.arange(len(targets), device=z.device)
    grad = z.sub_(lse[:, None]).exp_()                                      # softmax
    grad[rows, targets] -= 1.0
    grad[rows, top_idx] += L2WRAP * top
    return ce, grad.mul_(row_scale[:, None]).to(logits.dtype)


@cache
def _compiled_chunk_grad():
    """`_chunk_grad` through torch.compile: its half-dozen passes over the fp32 chunk become two kernels that read
    the logits and write the gradient (shapes are static on the dense path, so it compiles once)."""
    return torch.compile(_chunk_grad, dynamic=False)


class _HeadCrossEntropy(torch.autograd.Function):
    """sum(CE(x @ W^T, y)) / normalizer with L2Wrap, gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, targets: Tensor, normalizer: "float | Tensor",
                compute_dtype: torch.dtype, want_grad: bool, chunk_rows: int, fused: bool) -> Tensor:
        need_x = want_grad and x.requires_grad
        need_w = want_grad and weight.requires_grad
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        chunk_grad = _compiled_chunk_grad() if fused else _chunk_grad
        for lo in range(0, x.shape[0], chunk_rows):
            xc, yc = x[lo:lo + chunk_rows].to(compute_dtype), targets[lo:lo + chunk_rows]
            # Rows labelled IGNORE (only present on the dense path) weigh 0 in the loss and in every gradient.
            valid = yc != IGNORE
            yc = yc.clamp(min=0)
            logits = xc @ w.t()                                                 # [n, V]
            if not (need_x or need_w):
                total += _lse_and_ce(logits.float(), yc, valid)[1]
                continue
            ce, grad = chunk_grad(logits, yc, valid, valid / normalizer)
            total += ce
            if need_x:
                grad_x[lo:lo + len(yc)] = (grad @ w).to(x.dtype)
            if need_w:
                grad_w += (grad.t() @ xc).float()
        ctx.save_for_backward(grad_x, grad_w)
        ctx.weight_dtype = weight.dtype
        return total / normalizer

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_x, grad_w = ctx.saved_tensors
        gx = None if grad_x is None else grad_x * grad_out.to(grad_x.dtype)
        gw = None if grad_w is None else (grad_w * grad_out).to(ctx.weight_dtype)
        return gx, gw, None, None, None, None, None, None


def head_loss(hidden: Tensor, weight: Tensor, labels: Tensor, normalizer: float,
              compute_dtype: torch.dtype = torch.float32) -> tuple[Tensor, int]:
    """Loss of the trained positions: (sum(CE)/normalizer as a 0-d tensor with gradient, trained token count).

    hidden: [B, T, C] after ln_out; weight: the head [V, C]; labels: [B, T] with -100 for untrained positions;
    compute_dtype: the head matmul's dtype (bf16/fp16 under mixed precision); softmax is always fp32.
    """
    flat = labels.reshape(-1)
    keep = flat != IGNORE
    n = int(keep.sum())
    if n == 0:
        # Keep the graph connected so that backward still runs (and reaches every rank's collective).
        return hidden.sum() * 0.0, 0
    x = hidden.reshape(-1, hidden.shape[-1])[keep]
    want_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    chunk_rows = max(1, _CHUNK_LOGITS // weight.shape[0])
    loss = _HeadCrossEntropy.apply(x, weight, flat[keep], float(normalizer), compute_dtype, want_grad, chunk_rows,
                                   False)
    return loss, n


def dense_head_loss(hidden: Tensor, weight: Tensor, labels: Tensor, normalizer: Tensor,
                    compute_dtype: torch.dtype = torch.float32, fused: bool = False) -> Tensor:
    """`head_loss` without a host sync, for a step captured in a CUDA graph: every position goes through the head
    (untrained ones weigh 0), and `normalizer` is a 0-d tensor. Returns sum(CE)/normalizer with gradient.
    fused: run each chunk's softmax and gradient through torch.compile (the shapes here never change)."""
    x = hidden.reshape(-1, hidden.shape[-1])
    want_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    chunk_rows = max(1, _CHUNK_LOGITS // weight.shape[0])
    return _HeadCrossEntropy.apply(x, weight, labels.reshape(-1), normalizer, compute_dtype, want_grad, chunk_rows,
                                   fused)
