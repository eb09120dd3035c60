"""A frozen weight kept quantized (`QuantizedWeight`), the linear that runs on it, and `QuantLinear`, which takes
the place of a plain `nn.Linear` whose weight got quantized.

The forward dequantizes the weight to the compute dtype and runs one dense GEMM; the dequantized copy is not
kept for backward but rebuilt there (`_FrozenLinear`). RWKV-PEFT lets autograd save it, so every quantized layer
of the model holds a full bf16 weight from its forward until its backward, which undoes much of the memory
saving. Gradients flow to the input only; the base never trains.

Cost of the recompute, measured on CPU (2 cores, fp32, [1024, 1024] weight, 1024 tokens, forward + backward, min
of 20): dense 25.5 ms; recompute 27.0 (nf4) / 26.6 (int8); saved 25.9 / 25.7; bitsandbytes' `matmul_4bit`,
which also dequantizes in both passes, 26.9. One dequantize is ~0.5 ms, so recomputing costs a few percent for
not holding the weight; `matmul_4bit` brings nothing over it and has no int8 form. On a GPU the balance may
differ: `python bench/quant_bench.py layer` measures it there.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .schemes import dequantize, quantize


class QuantizedWeight(nn.Module):
    """A frozen [out, in] weight stored as `scheme` codes (see schemes.py).

    Buffers, so `.to(device)` moves them, but non-persistent: they are not in `state_dict()`, hence never in
    adapter or resume files, and a quantized model's state_dict is its official keys minus the quantized
    weights (the base file stays the source of truth). The fp32 scales and code map are stored as their int32
    bit patterns because `model.to(torch.bfloat16)` casts every floating buffer and would round them.

    Tensor-like metadata: `shape` ([out, in]), `dtype` (the dtype the weight had; `dequantize()`'s default),
    `device`.
    """

    def __init__(self, codes: Tensor, absmax: Tensor, code: Tensor, scheme: str, shape: torch.Size,
                 dtype: torch.dtype):
        super().__init__()
        self.scheme, self.shape, self.dtype = scheme, torch.Size(shape), dtype
        self.register_buffer("codes", codes, persistent=False)
        self.register_buffer("absmax_bits", absmax.float().view(torch.int32), persistent=False)
        self.register_buffer("code_bits", code.float().view(torch.int32), persistent=False)

    @classmethod
    def from_weight(cls, weight: Tensor, scheme: str) -> "QuantizedWeight":
        """Quantize weight [out, in] on its device (bitsandbytes runs on CPU and CUDA)."""
        codes, absmax, code = quantize(weight, scheme)
        return cls(codes, absmax, code, scheme, weight.shape, weight.dtype)

    @property
    def device(self) -> torch.device:
        return self.codes.device

    @property
    def nbytes(self) -> int:
        """Bytes held: codes, scales and code map."""
        return sum(b.numel() * b.element_size() for b in self.buffers())

    def dequantize(self, dtype: torch.dtype | None = None) -> Tensor:
        """The dense weight [out, in] in `dtype` (default: the dtype it had before quantization)."""
        return dequantize(self.codes, self.absmax_bits.view(torch.float32), self.code_bits.view(torch.float32),
                          self.scheme, self.shape, dtype or self.dtype)

    def linear(self, x: Tensor) -> Tensor:
        """x [..., in] -> x W^T [..., out], in autocast's dtype under autocast, else in x's dtype."""
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        return _FrozenLinear.apply(x, self, dtype)

    def extra_repr(self) -> str:
        return f"{self.scheme}, shape={list(self.shape)}, dtype={self.dtype}"


class _FrozenLinear(torch.autograd.Function):
    """y = x W^T with W dequantized in forward and again in backward; only x gets a gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: QuantizedWeight, dtype: torch.dtype) -> Tensor:
        ctx.weight, ctx.dtype, ctx.x_dtype = weight, dtype, x.dtype
        return F.linear(x.to(dtype), weight.dequantize(dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return (grad.to(ctx.dtype) @ ctx.weight.dequantize(ctx.dtype)).to(ctx.x_dtype), None, None


class QuantLinear(nn.Module):
    """A bias-free linear layer on a frozen quantized weight: x [..., in] -> [..., out].

    `weight` is the `QuantizedWeight`, so `layer.weight.shape` reads as it did on the nn.Linear.
    """

    def __init__(self, weight: QuantizedWeight):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight

    def forward(self, x: Tensor) -> Tensor:
        return self.weight.linear(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
