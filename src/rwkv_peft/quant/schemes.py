"""The quantization schemes of a frozen base weight, on bitsandbytes' maintained functional API (0.50.x).

| scheme | storage per element | bitsandbytes call | block |
|---|---|---|---|
| `nf4`  | 4 bits + fp32 absmax / 64 | `quantize_4bit(quant_type="nf4")` / `dequantize_4bit` | 64 |
| `fp4`  | 4 bits + fp32 absmax / 64 | `quantize_4bit(quant_type="fp4")` / `dequantize_4bit` | 64 |
| `int8` | 8 bits + fp32 absmax / 64 | `quantize_blockwise` / `dequantize_blockwise` (dynamic 8-bit map) | 64 |

RWKV-PEFT's `4bit` is bitsandbytes' default 4-bit type, fp4, and is accepted as such. Its `int8` called
`bitsandbytes.functional.quantize` (one absmax for the whole tensor), which bitsandbytes 0.50 removed; blockwise
8-bit is the maintained replacement and is more accurate.

Why block 64 for int8 (bitsandbytes' default is 4096): the relative error of the dequantized weight grows with the
block, because one outlier sets the scale of its whole block. Measured on 1024x1024 weights: Gaussian 0.95% (64),
1.08% (256), 1.29% (4096); heavy-tailed (Student-t, 3 dof) 1.13%, 1.42%, 1.94%. The price is one fp32 absmax
per 64 weights, 1/16 byte per element: 75 MB for the 1.2 G linear weights of a 1.5B model, against its 1.2 GB
of int8 codes. 4-bit uses 64 too (QLoRA's and RWKV-PEFT's choice), without nested ("double") quantization of the
absmax, as RWKV-PEFT does.

bitsandbytes is imported only when a scheme is used, so the rest of rwkv-peft runs without it.
"""

import importlib
import logging
from types import ModuleType

import torch
from torch import Tensor

from ..errors import UserError

SCHEMES = ("nf4", "fp4", "int8")
ALIASES = {"4bit": "fp4"}
BLOCKSIZE = 64
INSTALL_HINT = "pip install 'rwkv-peft[quant]'"


def canonical_scheme(scheme: str) -> str:
    """The scheme's canonical name ("4bit" -> "fp4"), or "none". Raises UserError for anything unsupported."""
    name = ALIASES.get(scheme, scheme)
    if name == "none" or name in SCHEMES:
        return name
    if name == "fp8":
        raise UserError("--quant fp8 is not supported: the fp8 base (Hopper scaled matmul) is not implemented; "
                        "use int8, nf4 or fp4")
    raise UserError(f"unknown quant scheme {scheme!r}; choose from none, {', '.join(SCHEMES)} (4bit = fp4)")


def bnb_functional() -> ModuleType:
    """`bitsandbytes.functional`, imported on first use; UserError naming the extra when it is missing."""
    # Its CPU backend tries to fetch an optional kernel from the Hugging Face hub at import and logs a warning when
    # it cannot (offline, or the repository not trusted); nothing here uses that kernel, so the warning is noise.
    cpu_ops_log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = cpu_ops_log.level
    cpu_ops_log.setLevel(logging.ERROR)
    try:
        return importlib.import_module("bitsandbytes.functional")
    except ImportError as e:
        raise UserError(f"--quant needs bitsandbytes>=0.50 ({e}): install it with {INSTALL_HINT}, or use --quant none "
                        "(an unquantized base; for merge, the original weights)") from None
    finally:
        cpu_ops_log.setLevel(level)


def quantize(weight: Tensor, scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """Quantize a weight [out, in] on its device. Returns (codes, absmax, code map):

    codes: uint8, [out * in / 2, 1] for 4-bit (two per byte) or [out, in] for int8; absmax: fp32 [n_blocks], one
    scale per BLOCKSIZE consecutive elements of the row-major weight; code map: fp32, the 16 (4-bit) or 256
    (int8) values a code stands for.
    """
    bnb = bnb_functional()
    weight = weight.detach().contiguous()
    if scheme == "int8":
        codes, state = bnb.quantize_blockwise(weight, blocksize=BLOCKSIZE)
    else:
        codes, state = bnb.quantize_4bit(weight, blocksize=BLOCKSIZE, quant_type=scheme)
    return codes, state.absmax.float(), state.code.float()


def dequantize(codes: Tensor, absmax: Tensor, code: Tensor, scheme: str, shape: torch.Size,
               dtype: torch.dtype) -> Tensor:
    """The dense weight [out, in] in `dtype` from what `quantize` returned."""
    bnb = bnb_functional()
    state = bnb.QuantState(absmax=absmax, shape=shape, code=code, blocksize=BLOCKSIZE,
                           quant_type=None if scheme == "int8" else scheme, dtype=dtype)
    if scheme == "int8":
        return bnb.dequantize_blockwise(codes, state)
    return bnb.dequantize_4bit(codes, state)


def roundtrip(weight: Tensor, scheme: str) -> Tensor:
    """Quantize then dequantize (same shape, dtype and device): the base a quantized run trained against."""
    codes, absmax, code = quantize(weight, scheme)
    return dequantize(codes, absmax, code, scheme, weight.shape, weight.dtype)
