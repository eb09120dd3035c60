"""MiSS (formerly DiSHA / Bone): one small zero-initialised block per linear, shared across the weight's shards.

Bone (RWKV-PEFT `BoneLinear`, HF peft MiSS default), D [r, out]: x is right-padded with zeros to a multiple of
r, cut into ceil(in / r) chunks of r, and the chunks are summed before multiplying by D:

    y = W x + (sum_b x_b) D          <=>   W'[o, b r + j] = W[o, b r + j] + D[j, o]   for every block b

in % r != 0 is fine: the last, partial block uses D[:in % r].

Bat (RWKV-PEFT `BatLinear`), D [in / r, r, r]: W is cut into r x r blocks W_ab (a: output block, b: input
block) and each becomes W_ab + W_ab D_b + D_b. **D is indexed by the input block b, as RWKV-PEFT does**; HF peft's
MiSS `init_weights="bat"` indexes by the output block a (shape [out / r, r, r]), so the two file formats are
not interchangeable (they agree only when all blocks of D are equal). Needs in % r == 0 and out % r == 0; the
update depends on W, so each forward builds the full adapted weight.
"""

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import AdapterLinear

MODES = ("bone", "bat")


@dataclass(frozen=True)
class MissConfig:
    """r: block size; mode: "bone" or "bat"; dropout on the bone input (HF's miss_dropout; bat has none)."""

    r: int = 64
    mode: str = "bone"
    dropout: float = 0.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"MiSS/DiSHA mode {self.mode!r} is not valid; use \"bone\" or \"bat\"")
        if not (isinstance(self.r, int) and self.r > 0):
            raise UserError(f"MiSS/DiSHA r must be a positive integer, got {self.r!r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"MiSS dropout must be in [0, 1), got {self.dropout!r}")
        if self.mode == "bat" and self.dropout:
            raise UserError("bat has no dropout (neither RWKV-PEFT's nor HF peft's); drop miss_dropout")

    @property
    def method(self) -> str:
        return self.mode

    def make_layer(self, base: nn.Linear, init: None = None) -> AdapterLinear:
        return (BoneLinear if self.mode == "bone" else BatLinear)(base, self)


class BoneLinear(AdapterLinear):
    """y = base(x) + (sum of the r-wide chunks of dropout(x)) @ D; D [r, out] starts at zero."""

    tensor_names = ("disha",)

    def __init__(self, base: nn.Linear, config: MissConfig):
        super().__init__(base, config)
        self.disha = self.new_tensor("disha", config.r)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    @staticmethod
    def shapes(out_features: int, in_features: int, r: int) -> dict[str, tuple[int, ...]]:
        if r > in_features:
            raise UserError(f"MiSS/DiSHA r={r} is larger than the layer's input size {in_features}")
        return {"disha": (r, out_features)}

    @staticmethod
    def rank(tensors: dict[str, Tensor]) -> int:
        return tensors["disha"].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in] -> [..., out]."""
        y = self.base_forward(x)
        r = self.config.r
        # The chunks are summed in D's dtype (fp32) from x as it comes: a cast of x first (x.float()) is the same
        # node as the FFN's relu^2 backward's y.float(), and torch.compile's partitioner then kept that fp32 copy
        # of the FFN's [T, dim_ffn] activation for backward instead of the bf16 one (bench/kept_tensors.py, 1.5B,
        # no autocast: 87.1 -> 71.1 MiB per layer per 1K tokens). Under the trainer's bf16 autocast on an H200 the
        # step is 2% faster and 0.18 GiB larger instead (bench/results/2026-12-03-h200-session17.md).
        h = x if self.config.dropout == 0 else self.dropout(x.to(self.disha.dtype))
        h = F.pad(h, (0, -h.shape[-1] % r))
        h = h.reshape(*h.shape[:-1], h.shape[-1] // r, r).sum(dim=-2, dtype=self.disha.dtype)
        return (y + h @ self.disha).to(y.dtype)

    @staticmethod
    def merge_weight(weight: Tensor, tensors: dict[str, Tensor], config: MissConfig) -> Tensor:
        """W + D^T tiled along the input axis (cut to `in` columns)."""
        D = tensors["disha"]
        n_blocks = math.ceil(weight.shape[1] / D.shape[0])
        return weight + D.t().repeat(1, n_blocks)[:, :weight.shape[1]]


class BatLinear(AdapterLinear):
    """y = (W + bat_delta(W, D)) x; D [in / r, r, r] starts at zero."""

    tensor_names = ("disha",)

    def __init__(self, base: nn.Linear, config: MissConfig):
        super().__init__(base, config)
        self.disha = self.new_tensor("disha", config.r)

    @staticmethod
    def shapes(out_features: int, in_features: int, r: int) -> dict[str, tuple[int, ...]]:
        if in_features % r or out_features % r:
            raise UserError(f"bat needs r to divide both sides of the weight; r={r} does not divide "
                            f"{out_features}x{in_features} (pick r dividing both, or use bone)")
        return {"disha": (in_features // r, r, r)}

    @staticmethod
    def rank(tensors: dict[str, Tensor]) -> int:
        return tensors["disha"].shape[-1]

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in] -> [..., out]."""
        weight = self.base_weight().to(self.disha.dtype)
        return F.linear(x.to(self.disha.dtype), weight + bat_delta(weight, self.disha)).to(x.dtype)

    @staticmethod
    def merge_weight(weight: Tensor, tensors: dict[str, Tensor], config: MissConfig) -> Tensor:
        return weight + bat_delta(weight, tensors["disha"])


def bat_delta(weight: Tensor, D: Tensor) -> Tensor:
    """W_ab D_b + D_b for every r x r block (a output, b input), as a [out, in] tensor. weight [out, in]."""
    n_in, r, _ = D.shape
    out_features = weight.shape[0]
    blocks = weight.reshape(out_features // r, r, n_in, r).permute(0, 2, 1, 3)  # [a, b, r, r]
    return (blocks @ D + D).permute(0, 2, 1, 3).reshape(out_features, n_in * r)
