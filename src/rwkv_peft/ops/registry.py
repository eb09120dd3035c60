"""Which implementation computes an op: chosen by an argument, resolved here, never at import time.

Backends register a function per op name. `"auto"` picks, among the backends whose `available(device)` says yes,
the one of highest priority; `"torch"` (the pure-PyTorch chunked form) is always available and is the fallback.
Nothing is imported or compiled until a backend is actually called.
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
    # Why it cannot run on a device (e.g. which pip extra is missing); None gives a generic message.
    unavailable_reason: Callable[[torch.device], str] | None = None


_REGISTRY: dict[str, dict[str, Backend]] = {}


def register(op: str, name: str, fn: Callable, available: Callable[[torch.device], bool], priority: int = 0,
             unavailable_reason: Callable[[torch.device], str] | None = None) -> None:
    _REGISTRY.setdefault(op, {})[name] = Backend(name, fn, available, priority, unavailable_reason)


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
        reason = chosen.unavailable_reason(device) if chosen.unavailable_reason else f"it cannot run on {device}"
        raise UserError(f"backend {backend!r} for {op}: {reason}; use --op auto or torch")
    return chosen
