"""How the models run their blocks in training: through one torch.compile entry point shared by every block of
every model (RWKV-7 and RWKV-6), or plainly.

The parameters are graph inputs, so all layers share one compiled graph (a few: RWKV-7's layer 0, which has no
v_first yet, and the rest; each model version) and nothing recompiles per layer, provided a block's code never
branches on its layer index. Shapes are static; a new (B, T) compiles once more. The WKV kernels are excluded
from compilation (`ops.wkv7` / `ops.wkv6`): the graph breaks there, and the elementwise work on either side is
compiled and fused.
"""

from collections.abc import Callable
from functools import cache

import torch
from torch import nn


def call_block(block: nn.Module, *args):
    return block(*args)


@cache
def compiled_block() -> Callable:
    return torch.compile(call_block, dynamic=False)


def block_runner(model: nn.Module) -> Callable:
    """`call_block`, compiled when `model.compile` is set and this is a training step. Evaluation and generation
    (no gradient; prompt lengths, T = 1) stay eager: each shape would compile anew for a pass that is cheap."""
    training = model.training and torch.is_grad_enabled()
    return compiled_block() if getattr(model, "compile", False) and training else call_block
