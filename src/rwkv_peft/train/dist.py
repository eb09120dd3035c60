"""Where this process stands in a (possibly) distributed run, and which device it trains on.

A run is N processes, one per GPU (or per CPU worker with --accelerator cpu), started by torchrun
(`torch.distributed.run`), which sets RANK, LOCAL_RANK and WORLD_SIZE in each one's environment; `rwkv-peft train
--devices N` starts torchrun itself (`launch.py`). A process started without a launcher is rank 0 of 1. Only rank
0 writes files and prints; the strategy wrappers (DDP, FSDP2, DeepSpeed; `wrap.py`) plug in on top of this.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from ..errors import UserError

# Set by torchrun (and by every launcher that follows its convention: Slurm's srun wrappers, DeepSpeed's).
LAUNCHER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def under_launcher() -> bool:
    """True in a worker process that torchrun (or a compatible launcher) started."""
    return all(name in os.environ for name in LAUNCHER_ENV)


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
            return cls(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        return cls()

    def all_reduce_sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of `values` over all ranks (the values themselves on a single process)."""
        return self._all_reduce(values, device, torch_dist.ReduceOp.SUM)

    def all_reduce_max(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise maximum of `values` over all ranks."""
        return self._all_reduce(values, device, torch_dist.ReduceOp.MAX)

    def _all_reduce(self, values: list[float], device: torch.device, op) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(t, op=op)
        return t.tolist()

    def barrier(self) -> None:
        """Wait until every rank got here (a no-op on one process)."""
        if self.world_size > 1:
            torch_dist.barrier()

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` (picklable) as a list on rank 0, None elsewhere; [obj] on one process."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        torch_dist.gather_object(obj, out, dst=0)
        return out


def _wants_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_gpu_count(accelerator: str, devices: int) -> None:
    """--devices N on GPUs needs N GPUs on this machine."""
    if not _wants_gpu(accelerator):
        return
    if not torch.cuda.is_available():
        raise UserError("--accelerator gpu, but PyTorch sees no CUDA GPU here; use --accelerator cpu (slow) or "
                        "install a CUDA build of PyTorch")
    if devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices}, but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                        "visible (CUDA_VISIBLE_DEVICES may hide some); lower --devices")


def init_distributed(accelerator: str) -> DistInfo:
    """Join the process group torchrun set up (NCCL on GPUs, Gloo on CPU); the current DistInfo.

    Does nothing in a plain process or when the group exists already (a caller that initialised it itself).
    """
    if not under_launcher() or int(os.environ["WORLD_SIZE"]) == 1 or torch_dist.is_initialized():
        return DistInfo.current()
    if _wants_gpu(accelerator):
        check_gpu_count(accelerator, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl", device_id=device)
    else:
        torch_dist.init_process_group("gloo")
    _OWNED.append(True)
    return DistInfo.current()


_OWNED: list[bool] = []  # non-empty while the process group is one init_distributed created


def shutdown_distributed() -> None:
    """Leave the process group init_distributed joined (one a caller created stays theirs)."""
    if _OWNED and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
    _OWNED.clear()


def resolve_device(accelerator: str, devices: int, num_nodes: int, dist: DistInfo) -> torch.device:
    """The device this rank trains on. A multi-process request without a launcher is an error, not a silent 1."""
    if dist.world_size == 1 and devices * num_nodes > 1:
        raise UserError(f"--devices {devices} --num_nodes {num_nodes} asks for {devices * num_nodes} processes, but "
                        "this one was not started by torchrun; run `rwkv-peft train --devices N` (it starts torchrun "
                        "itself) or `torchrun --nproc_per_node N -m rwkv_peft train ...`")
    if dist.world_size > 1 and devices * num_nodes not in (1, dist.world_size):
        raise UserError(f"--devices {devices} --num_nodes {num_nodes} asks for {devices * num_nodes} processes, but "
                        f"the launcher started {dist.world_size}; make them agree (or drop --devices/--num_nodes "
                        "under torchrun)")
    if _wants_gpu(accelerator):
        check_gpu_count(accelerator, 1)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")
