"""LoRA, and PiSSA as an initialisation option of the same layer.

LoRA (RWKV-PEFT `LoraLinear`, HF peft `lora.Linear`): A [r, in] kaiming-uniform (a = sqrt 5), B [out, r] zeros,

    y = W x + (alpha / r) * B A dropout(x)

PiSSA: the same layer, started from the principal singular directions of W instead of noise. With the
randomized `torch.svd_lowrank(W, r, niter)`, W ~ U diag(S) V^T:

    A0 = diag(sqrt(S / s)) V^T     B0 = U diag(sqrt(S / s))     base <- W - s B0 A0       (s = alpha / r)

so the layer starts equal to W up to fp32 rounding. RWKV-PEFT's PiSSA is s = 1 (alpha = r) with no dropout,
which is what `--pissa_config` gives; HF peft's `init_lora_weights="pissa_niter_N"` is any alpha, and its
`"pissa"` (svd_niter None here) takes the exact SVD `torch.linalg.svd` instead: slower, no randomness. The initial
A0, B0 are kept (non-persistent buffers) because the merge needs them: W_merged = W - s B0 A0 + s B A, exactly.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import AdapterLinear
from .fold import folded_forward, stacked_forward


@dataclass(frozen=True)
class LoraConfig:
    """Hyperparameters of LoRA / PiSSA. Defaults are RWKV-PEFT's training defaults."""

    r: int = 8
    alpha: float = 32.0
    dropout: float = 0.01
    pissa: bool = False
    svd_niter: int | None = 4  # None: exact SVD

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r > 0):
            raise UserError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise UserError(f"lora_alpha must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"lora_dropout must be in [0, 1), got {self.dropout!r}")
        if self.svd_niter is not None and not (isinstance(self.svd_niter, int) and self.svd_niter >= 0):
            raise UserError(f"svd_niter must be a non-negative integer, got {self.svd_niter!r}")

    @property
    def method(self) -> str:
        return "pissa" if self.pissa else "lora"

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def make_layer(self, base: nn.Linear, init: tuple[Tensor, Tensor] | None = None) -> "LoraLinear":
        return LoraLinear(base, self, init)


def pissa_factors(weight: Tensor, r: int, niter: int | None, scaling: float) -> tuple[Tensor, Tensor]:
    """(A0 [r, in], B0 [out, r]) in fp32 from the rank-r SVD of weight [out, in]: randomized with `niter` power
    iterations, or exact (niter None)."""
    if niter is None:
        U, S, Vh = torch.linalg.svd(weight.float(), full_matrices=False)
        U, S, Vt = U[:, :r], S[:r], Vh[:r]
    else:
        U, S, V = torch.svd_lowrank(weight.float(), r, niter=niter)
        Vt = V.t()
    S = S / scaling
    return torch.diag(torch.sqrt(S)) @ Vt, U @ torch.diag(torch.sqrt(S))


def pissa_residual(weight: Tensor, init_A: Tensor, init_B: Tensor, scaling: float) -> Tensor:
    """The base PiSSA trains against: W - s B0 A0 (fp32 in, fp32 out)."""
    return weight - (scaling * init_B) @ init_A


class LoraLinear(AdapterLinear):
    """y = base(x) + s * B A dropout(x); adapter math runs in the adapter dtype (fp32) or, under autocast, in
    autocast's; the result in x's dtype.

    `init` = (A0, B0) makes a PiSSA layer reuse saved initial factors (resume, mount, other ranks) instead of
    running a new randomized SVD, which would give different factors.
    """

    tensor_names = ("lora_A", "lora_B")

    def __init__(self, base: nn.Linear, config: LoraConfig, init: tuple[Tensor, Tensor] | None = None):
        super().__init__(base, config)
        r = config.r
        self.lora_A, self.lora_B = self.new_tensor("lora_A", r), self.new_tensor("lora_B", r)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.register_buffer("folded", None, persistent=False)  # fold.py: [out + r, in], base rows then A's
        self.register_buffer("stack_folded", None, persistent=False)  # fold.py: this layer's stack, if it heads one
        if not config.pissa:
            if init is not None:
                raise ValueError("initial factors are for PiSSA only")
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            return
        if r > min(self.in_features, self.out_features):
            raise UserError(f"PiSSA rank {r} exceeds the layer's smaller side "
                            f"({self.out_features}x{self.in_features}); lower pissa_r")
        A0, B0 = init if init is not None else pissa_factors(self.weight, r, config.svd_niter, config.scaling)
        if A0.shape != self.lora_A.shape or B0.shape != self.lora_B.shape:
            raise UserError(f"PiSSA initial factors have shapes {tuple(A0.shape)}, {tuple(B0.shape)}; this layer "
                            f"needs {tuple(self.lora_A.shape)}, {tuple(self.lora_B.shape)} (another rank or another "
                            "base?)")
        with torch.no_grad():
            self.lora_A.copy_(A0)
            self.lora_B.copy_(B0)
        self.register_buffer("init_lora_A", self.lora_A.detach().clone(), persistent=False)
        self.register_buffer("init_lora_B", self.lora_B.detach().clone(), persistent=False)
        # A new tensor, not an in-place edit: the loaded base may share storage with a memory-mapped file.
        residual = pissa_residual(self.weight.float(), self.init_lora_A.float(), self.init_lora_B.float(),
                                  config.scaling)
        self.weight.data = residual.to(self.weight.dtype)

    @staticmethod
    def shapes(out_features: int, in_features: int, r: int) -> dict[str, tuple[int, ...]]:
        return {"lora_A": (r, in_features), "lora_B": (out_features, r)}

    @staticmethod
    def rank(tensors: dict[str, Tensor]) -> int:
        return tensors["lora_A"].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in] -> [..., out]."""
        if self.folded is not None:
            return folded_forward(self, x)
        y = self.base_forward(x)
        # Under autocast the matmuls run in its dtype whatever x's, and a cast of x would be one more copy of the
        # layer's input kept for backward (the A gradient's), beside the one the layer before keeps.
        h = x if torch.is_autocast_enabled(x.device.type) else x.to(self.lora_A.dtype)
        h = self.dropout(h)
        return (y + F.linear(F.linear(h, self.lora_A), self.lora_B) * self.config.scaling).to(y.dtype)

    def forward_stacked(self, layers: tuple[nn.Module, ...], x: Tensor) -> Tensor:
        """x [G, ..., in] -> [G, ..., out], slice i through layers[i]: one batched product for the stack this layer
        heads (`stack_folded` set by fold.py; layers[0] is this layer)."""
        return stacked_forward(layers, x)

    @staticmethod
    def merge_weight(weight: Tensor, tensors: dict[str, Tensor], config: LoraConfig) -> Tensor:
        """W + s * B @ A. For PiSSA, `weight` must already be the residual W - s B0 A0."""
        return weight + (tensors["lora_B"] @ tensors["lora_A"]) * config.scaling
