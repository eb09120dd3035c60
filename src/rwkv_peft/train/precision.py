"""--precision: which dtypes the weights live in and compute in.

| precision | frozen base weights | trained tensors | compute                         | loss scaling |
|-----------|---------------------|-----------------|---------------------------------|--------------|
| bf16      | bf16                | fp32            | autocast bf16 (matmuls)         | no           |
| fp16      | fp16                | fp32            | autocast fp16                   | GradScaler   |
| tf32      | fp32                | fp32            | fp32 with TF32 matmuls (Ampere+)| no           |
| fp32      | fp32                | fp32            | fp32, TF32 off                  | no           |

Trained tensors stay fp32 (the optimizer's master copy), so small updates are not rounded away; the WKV state is
fp32 in every mode.
"""

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("bf16", "fp16", "fp32", "tf32")
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    name: str
    device: torch.device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return _HALF.get(self.name)

    @property
    def frozen_dtype(self) -> torch.dtype:
        return _HALF.get(self.name, torch.float32)

    @property
    def compute_dtype(self) -> torch.dtype:
        return _HALF.get(self.name, torch.float32)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler | None":
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None

    def configure_backends(self) -> None:
        """TF32 matmuls for tf32 (and under bf16/fp16, where fp32 leftovers may as well be fast); never for fp32."""
        allow = self.name != "fp32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
