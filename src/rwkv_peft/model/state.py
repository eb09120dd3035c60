"""The recurrent state of an RWKV-6/7 model, carried between calls in generation and infctx training.

Per layer: the last ln1 output (att token shift), the WKV matrix and the last ln2 output (ffn token shift), the
same three slots the `rwkv` pip package keeps in its flat list `[3i], [3i+1], [3i+2]`.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RWKVState:
    """att_shift, ffn_shift: L x [B, C] in the model dtype; wkv: L x [B, H, N, N] fp32, value rows x key columns."""

    att_shift: list[Tensor]
    wkv: list[Tensor]
    ffn_shift: list[Tensor]

    @classmethod
    def zeros(cls, n_layer: int, batch: int, n_embd: int, n_head: int, head_size: int,
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> "RWKVState":
        shift = [torch.zeros(batch, n_embd, dtype=dtype, device=device) for _ in range(n_layer)]
        wkv = [torch.zeros(batch, n_head, head_size, head_size, dtype=torch.float32, device=device)
               for _ in range(n_layer)]
        return cls(shift, wkv, [s.clone() for s in shift])

    def detach(self) -> "RWKVState":
        return RWKVState([s.detach() for s in self.att_shift], [s.detach() for s in self.wkv],
                         [s.detach() for s in self.ffn_shift])

    def clone(self) -> "RWKVState":
        return RWKVState([s.clone() for s in self.att_shift], [s.clone() for s in self.wkv],
                         [s.clone() for s in self.ffn_shift])

    def to_pip_list(self, version: int, batch_index: int = 0) -> list[Tensor]:
        """The `rwkv` package's state list for one sequence (its v6 class keeps WKV transposed: key rows)."""
        out = []
        for att, wkv, ffn in zip(self.att_shift, self.wkv, self.ffn_shift):
            s = wkv[batch_index]
            out += [att[batch_index], s.transpose(-1, -2).contiguous() if version == 6 else s, ffn[batch_index]]
        return out
