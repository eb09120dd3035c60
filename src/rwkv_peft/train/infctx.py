"""infctx: training on samples far longer than fits in memory at once (--ctx_len 16384 --chunk_ctx 512).

A row of T tokens is cut into chunks of chunk_ctx; the model runs chunk after chunk, carrying its recurrent state
(per layer: token-shift vectors and the fp32 WKV matrix) from one chunk to the next, exactly as a full-length
forward pass would.

Gradient: exact, through every carried state, with no truncation (RWKV-PEFT detached the state at each chunk,
so no gradient crossed a chunk boundary). It is computed like activation checkpointing over time:

1. a no-grad pass over chunks 0..n-2 records the state entering every chunk (and the RNG state, so dropout
   draws the same masks when a chunk is recomputed);
2. from the last chunk back to the first: recompute the chunk from its recorded state with autograd on,
   backpropagate its loss plus the gradient that arrived at its output state from the chunk after it, and
   hand the gradient at its input state to the chunk before.

Cost: two forward passes and one backward (as with --grad_cp). Memory: one chunk's activations, plus one state
per chunk (L x (H x N x N fp32 + 2 C) per row: 2.4 MB for 0.1B, 32 MB for 7B, per chunk), so activation memory
does not grow with ctx_len; only the stored states and the token ids do, linearly and by little.
"""

import torch
from torch import Tensor, nn

from ..model.state import RWKVState
from .loss import head_loss
from .precision import Precision
from .rng import rng_state, set_rng_state


def _tensors(state: RWKVState) -> list[Tensor]:
    return [*state.att_shift, *state.wkv, *state.ffn_shift]


def _leaf_state(state: RWKVState) -> RWKVState:
    """A copy of `state` whose tensors are leaves that collect their gradient."""
    def leaves(ts: list[Tensor]) -> list[Tensor]:
        return [t.detach().clone().requires_grad_(True) for t in ts]

    return RWKVState(leaves(state.att_shift), leaves(state.wkv), leaves(state.ffn_shift))


def infctx_backward(model: nn.Module, input_ids: Tensor, labels: Tensor, chunk_ctx: int, normalizer: float,
                    precision: Precision, loss_scale: float = 1.0) -> tuple[float, int]:
    """Forward and backward of one micro-batch in chunks; parameter gradients accumulate in `.grad`.

    input_ids, labels: [B, T] (labels -100 where untrained); the loss is sum(CE) / normalizer; `loss_scale`
    multiplies the backward pass (fp16 loss scaling). Returns (sum of CE over the rows, trained tokens).
    """
    T = input_ids.shape[1]
    starts = list(range(0, T, chunk_ctx))
    device = input_ids.device
    entry_states: list[RWKVState | None] = [None]
    rng: list[dict] = []
    with torch.no_grad():
        state = None
        for lo in starts[:-1]:
            rng.append(rng_state(device))
            with precision.autocast():
                _, state = model.hidden(input_ids[:, lo:lo + chunk_ctx], state)
            entry_states.append(state)
    rng.append(rng_state(device))

    ce_sum, tokens, grad_out, rng_after = 0.0, 0, None, None
    for i in reversed(range(len(starts))):
        lo = starts[i]
        set_rng_state(rng[i], device)
        state_in = None if entry_states[i] is None else _leaf_state(entry_states[i])
        with precision.autocast():
            hidden, state_out = model.hidden(input_ids[:, lo:lo + chunk_ctx], state_in)
        if rng_after is None:
            rng_after = rng_state(device)  # where the RNG would be after a plain pass over the whole row
        loss, n = head_loss(hidden, model.head.weight, labels[:, lo:lo + chunk_ctx], normalizer,
                            precision.compute_dtype)
        outputs, grads = [loss * loss_scale], [None]
        if grad_out is not None:
            pairs = [(t, g) for t, g in zip(_tensors(state_out), grad_out) if t.requires_grad and g is not None]
            outputs += [t for t, _ in pairs]
            grads += [g for _, g in pairs]
        if outputs[0].requires_grad or len(outputs) > 1:
            torch.autograd.backward(outputs, grads)
        grad_out = None if state_in is None else [t.grad for t in _tensors(state_in)]
        ce_sum += float(loss.detach()) * normalizer
        tokens += n
    set_rng_state(rng_after, device)
    return ce_sum, tokens


@torch.no_grad()
def infctx_loss(model: nn.Module, input_ids: Tensor, labels: Tensor, chunk_ctx: int,
                precision: Precision) -> tuple[float, int]:
    """Sum of CE and trained tokens of [B, T] rows, chunk by chunk with the state carried (evaluation)."""
    state, ce_sum, tokens = None, 0.0, 0
    for lo in range(0, input_ids.shape[1], chunk_ctx):
        with precision.autocast():
            hidden, state = model.hidden(input_ids[:, lo:lo + chunk_ctx], state)
        loss, n = head_loss(hidden, model.head.weight, labels[:, lo:lo + chunk_ctx], 1.0, precision.compute_dtype)
        ce_sum += float(loss)
        tokens += n
    return ce_sum, tokens
