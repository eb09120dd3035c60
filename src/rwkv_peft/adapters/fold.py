"""LoRA with its A factor inside the base product: one GEMM where the plain form runs two, forward and backward.

    [y0, h] = x @ [W; A]^T        y = y0 + s h B^T
    dx = [dy, s dy B] @ [W; A]    dA = (s dy B)^T x    dB = s dy^T h

The same function as `LoraLinear`'s plain form without dropout (same products, the same bf16 rounding under
autocast). What it saves is two skinny r-wide products per layer and step: x A^T joins the base product (N = out
+ r) and dh A joins the input gradient's (K = out + r). On an H100 at 1024 tokens and 2048 x 2048, r 64: forward
19.4 -> 14.8 us, input gradient 20.8 -> 14.1 us (bench/gemm_bench.py, session 8).

Layers of one shape that the model runs at one point on same-shaped inputs (RWKV-7's receptance, key and value:
the model's `STACKED_LINEARS`) can run as one batched product each way instead of three (`FoldedLoraStack`):
their buffers lie side by side, so the stack is a view.

Storage: the base weight lives in the first `out` rows of a [out + r, in] buffer (`weight` becomes a view of them,
so the base costs no extra memory), A's rows after them and a copy of B beside, both in the base's dtype. The fp32
masters stay the trainable parameters; a hook at the start of every pass of the model (`model.pass_hooks`) copies
them into the low-precision rows, so whatever changed them (the optimizer, a resume) is seen by the next pass.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FoldedLora(torch.autograd.Function):
    """y [N, out] from x [N, in]; `wa` [out + r, in] (base rows, then A's), `b_low` [out, r] in wa's dtype; `a`,
    `b` the fp32 masters, there only to receive their gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, wa: Tensor, b_low: Tensor, a: Tensor, b: Tensor, scaling: float) -> Tensor:
        out = b_low.shape[0]
        both = F.linear(x, wa)
        # Kept alone: a view of `both` would keep its [N, out] part alive until backward.
        h = both[:, out:].contiguous()
        ctx.save_for_backward(x, h, wa, b_low)
        ctx.scaling = scaling
        return both[:, :out] + F.linear(h, b_low) * scaling

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, h, wa, b_low = ctx.saved_tensors
        s = ctx.scaling
        # No-ops when the base is in the compute dtype (training); an fp32 base under autocast saved a bf16 h.
        dy, h = dy.to(wa.dtype), h.to(wa.dtype)
        dh = (dy @ b_low) * s
        dx = torch.cat((dy, dh), dim=-1) @ wa if ctx.needs_input_grad[0] else None
        # The masters' gradients in their dtype (fp32), from products in the layer's, as autocast gives them.
        da = (dh.t() @ x).float() if ctx.needs_input_grad[3] else None
        db = (dy.t() @ h).float() * s if ctx.needs_input_grad[4] else None
        return dx, None, None, da, db, None


class FoldedLoraStack(torch.autograd.Function):
    """`FoldedLora` for G layers of one shape at once, every product batched over the layers: y [G, N, out] from
    x [G, N, in]; `wa` [G, out + r, in] and `b_low` [G, out, r] the layers' buffers side by side; `masters` the
    layers' fp32 (A, B) pairs in order, there only to receive their gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, wa: Tensor, b_low: Tensor, scaling: float, *masters: Tensor) -> Tensor:
        out = b_low.shape[1]
        both = torch.bmm(x, wa.transpose(1, 2))
        h = both[..., out:].contiguous()
        ctx.save_for_backward(x, h, wa, b_low)
        ctx.scaling = scaling
        return both[..., :out] + torch.bmm(h, b_low.transpose(1, 2)) * scaling

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, h, wa, b_low = ctx.saved_tensors
        s = ctx.scaling
        dy, h = dy.to(wa.dtype), h.to(wa.dtype)
        dh = torch.bmm(dy, b_low) * s
        dx = torch.bmm(torch.cat((dy, dh), dim=-1), wa) if ctx.needs_input_grad[0] else None
        wants = ctx.needs_input_grad[4:]
        da = torch.bmm(dh.transpose(1, 2), x).float() if any(wants[0::2]) else None
        db = torch.bmm(dy.transpose(1, 2), h).float() * s if any(wants[1::2]) else None
        grads = []
        for i in range(wa.shape[0]):
            grads += [da[i] if wants[2 * i] else None, db[i] if wants[2 * i + 1] else None]
        return dx, None, None, None, *grads


def folded_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """x [..., in] -> [..., out] through a folded LoRA layer (`fold` below)."""
    x2 = x.reshape(-1, layer.in_features).to(layer.folded.dtype)
    y = FoldedLora.apply(x2, layer.folded, layer.lora_B_low, layer.lora_A, layer.lora_B, layer.config.scaling)
    return y.reshape(*x.shape[:-1], layer.out_features)


def stacked_forward(layers: tuple[nn.Module, ...], x: Tensor) -> Tensor:
    """x [G, ..., in] -> [G, ..., out]: the i-th slice through layers[i], for G folded layers that `fold` laid side
    by side (the first holds the stack's views)."""
    first = layers[0]
    x2 = x.reshape(len(layers), -1, first.in_features).to(first.stack_folded.dtype)
    masters = [t for m in layers for t in (m.lora_A, m.lora_B)]
    y = FoldedLoraStack.apply(x2, first.stack_folded, first.stack_b_low, first.config.scaling, *masters)
    return y.reshape(*x.shape[:-1], first.out_features)


def fold(layers: list[nn.Module], stacks: list[list[nn.Module]] = ()) -> None:
    """Move each layer's base weight into the first rows of its folded buffer (LoraLinears without dropout, plain
    weights on one device and in one dtype). Call after the model reached its device: `.to()` would copy the
    weights away from the buffers. `stacks`: groups of these layers with one shape and one scaling, to be laid
    side by side; each group's first layer gets the views `stack_folded` [G, out + r, in] and `stack_b_low`
    [G, out, r] that `stacked_forward` runs on.

    All buffers are views of one allocation: as separate ones, each rounded up by the caching allocator, they
    took +0.35 GiB at 1.5B on an H100.
    """
    if not layers:
        return
    stacked = [m for group in stacks for m in group]
    rest = set(layers) - set(stacked)
    layers = stacked + [m for m in layers if m in rest]  # each stack's layers one after another
    w0 = layers[0].weight
    shapes = {m: (m.out_features + m.lora_A.shape[0], m.in_features) for m in layers}
    sizes = {m: math.prod(shapes[m]) for m in layers}
    arena = torch.empty(sum(sizes[m] + m.lora_B.numel() for m in layers), dtype=w0.dtype, device=w0.device)
    offset = 0
    for m in layers:
        folded = arena[offset:offset + sizes[m]].view(shapes[m])
        offset += sizes[m]
        folded[:m.out_features].copy_(m.weight.detach())
        m.register_buffer("folded", folded, persistent=False)
        m.weight.data = folded[:m.out_features]
    for m in layers:
        m.register_buffer("lora_B_low", arena[offset:offset + m.lora_B.numel()].view_as(m.lora_B), persistent=False)
        offset += m.lora_B.numel()
    for group in stacks:
        first, n = group[0], len(group)
        a, b = first.folded.storage_offset(), first.lora_B_low.storage_offset()  # where they begin in the arena
        first.register_buffer("stack_folded", arena[a:a + n * sizes[first]].view(n, *shapes[first]), persistent=False)
        first.register_buffer("stack_b_low", arena[b:b + n * first.lora_B.numel()].view(n, *first.lora_B.shape),
                              persistent=False)
    refresh(layers)


def stack_groups(model: nn.Module, layers: list[nn.Module]) -> list[list[nn.Module]]:
    """The groups among `layers` that the model runs as one stack (a module's `STACKED_LINEARS`, see
    model/rwkv7.py) and that can be one: one shape, one rank, one scaling."""
    members = set(layers)
    stacks = []
    for module in model.modules():
        group = [getattr(module, name) for name in getattr(module, "STACKED_LINEARS", ())]
        kinds = {(m.out_features, m.in_features, m.lora_A.shape[0], m.config.scaling) for m in group
                 if m in members}
        if group and all(m in members for m in group) and len(kinds) == 1:
            stacks.append(group)
    return stacks


@torch.no_grad()
def refresh(layers: list[nn.Module]) -> None:
    """Copy the fp32 masters A and B into the folded layers' low-precision rows (one foreach copy)."""
    dst = [m.folded[m.out_features:] for m in layers] + [m.lora_B_low for m in layers]
    src = [m.lora_A for m in layers] + [m.lora_B for m in layers]
    torch._foreach_copy_(dst, src)
