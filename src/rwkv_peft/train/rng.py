"""The random state that training consumes (dropout), saved and restored: by checkpoints, so a resumed run
draws what the uninterrupted one would have, and by infctx, so a recomputed chunk draws the same masks."""

import torch
from torch import Tensor


def rng_state(device: torch.device) -> dict[str, Tensor | None]:
    """torch's CPU generator, and the CUDA generator of `device` when training there."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict[str, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
