"""relu(x)^2, the RWKV FFN's activation, with a backward that needs only its output.

Why: autograd's relu(x) ** 2 keeps its input x for backward, and the FFN's value layer keeps its own input, the
output, whenever it trains (LoRA's A gradient): two [B, T, dim_ffn] tensors per layer. The derivative
2 relu(x) is 2 sqrt(y), so the output alone serves both: 16 MiB less per layer per 1K tokens at C = 2048 (bf16).
The sqrt of a rounded square gives the derivative to the output's rounding (bf16: ~0.2% relative).
"""

import torch
from torch import Tensor


class _ReluSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.relu(x) ** 2
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return (grad.float() * 2 * y.float().sqrt()).to(grad.dtype)


def relu_squared(x: Tensor) -> Tensor:
    """relu(x) ** 2, elementwise, any shape."""
    return _ReluSquared.apply(x)
