"""Which implementation computes an op: chosen by an argument, resolved here, never at import time.

Backends register a function per op name. `"auto"` picks the first registered backend whose `available(device)`
says yes, in registration order of preference; `"torch"` (the pure-PyTorch chunked form) is always available
and is the fallback. Nothing is imported or compiled until a backend is actually called.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import UserError


@dataclass(frozen=True)
class Backend:
    name: str
    fn: Callable
    available: Callable[[torch.device], bool]
    # Higher wins under "auto".
    priority: int = 0


_REGISTRY: dict[str, dict[str, Backend]] = {}


def register(op: str, name: str, fn: Callable, available: Callable[[torch.device], bool], priority: int = 0) -> None:
    _REGISTRY.setdefault(op, {})[name] = Backend(name, fn, available, priority)


def backends(op: str) -> list[str]:
    return sorted(_REGISTRY.get(op, {}))


def resolve(op: str, backend: str, device: torch.device) -> Backend:
    """The backend for `op` on `device`: the named one, or under "auto" the best available one."""
    table = _REGISTRY[op]
    if backend == "auto":
        usable = [b for b in table.values() if b.available(device)]
        return max(usable, key=lambda b: b.priority)
    if backend not in table:
        raise UserError(f"unknown backend {backend!r} for {op}; choose one of: auto, {', '.join(backends(op))}")
    chosen = table[backend]
    if not chosen.available(device):
        raise UserError(f"backend {backend!r} for {op} cannot run on {device}; use --op auto or torch")
    return chosen
