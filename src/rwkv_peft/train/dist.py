"""Where this process stands in a (possibly) distributed run, and which device it trains on.

Minimal on purpose: rank, world size and the device. A run started without a launcher is rank 0 of 1. Only rank 0
writes files and prints; the distributed wrapper (DDP, FSDP2, DeepSpeed) plugs in on top of this.
"""

from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from ..errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "DistInfo":
        if torch_dist.is_available() and torch_dist.is_initialized():
            rank = torch_dist.get_rank()
            local = rank % max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 0
            return cls(rank, torch_dist.get_world_size(), local)
        return cls()

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of `values` over all ranks (the values themselves on a single process)."""
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t)
        return t.tolist()


def resolve_device(accelerator: str, devices: int, num_nodes: int, dist: DistInfo) -> torch.device:
    """The device this rank trains on. A multi-GPU request without a launcher is an error, not a silent 1."""
    if dist.world_size == 1 and devices * num_nodes > 1:
        raise UserError(f"--devices {devices} --num_nodes {num_nodes} asks for {devices * num_nodes} processes, but "
                        "this one was not started by a distributed launcher (torchrun); multi-GPU training is not "
                        "in this build yet, so use --devices 1")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--accelerator gpu, but PyTorch sees no CUDA GPU here; use --accelerator cpu (slow) or "
                            "install a CUDA build of PyTorch")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")
