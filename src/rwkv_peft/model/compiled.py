"""How the models run their blocks: in training steps through one torch.compile entry point shared by every block
of every model (RWKV-7 and RWKV-6) when `model.compile` is set, and under activation checkpointing for the share
of blocks `model.grad_cp` names (0 none, 1 all, 0.5 every other one); otherwise plainly.

The parameters are graph inputs, so all layers share one compiled graph (a few: RWKV-7's layer 0, which has no
v_first yet, and the rest; each model version) and nothing recompiles per layer, provided a block's code never
branches on its layer index. Shapes are static; a new (B, T) compiles once more. fla's and wind's WKV kernels
are excluded from compilation (`ops.wkv7` / `ops.wkv6`): the graph breaks there, and the elementwise work on either
side is compiled and fused. --op triton's kernels are torch operators, traced into the block's one graph (H200, 1.5B
LoRA ctx 1024, the trainer: +4.0%; bench/results/2026-12-03-h200-session14.md).

Inductor's combo kernels launch a block's independent small fused kernels as one (H100, 1.5B LoRA r64 ctx 1024,
the trainer: 28.1 -> 29.15 Kt/s, compile time unchanged; bench/results/2026-11-23-h100-session6.md). Coordinate-
descent tuning added 2% more there but ~70 s of compilation on each new shape, so it is left to the benches.
"""

import math
from collections.abc import Callable
from functools import cache, partial

import torch
import torch._functorch.config as functorch_config
from torch import nn
from torch.utils.checkpoint import checkpoint


def call_block(block: nn.Module, *args):
    return block(*args)


# Inductor settings for the compiled blocks (torch._inductor.config keys, dotted for sub-configs); the benches'
# --inductor flag changes them before the first compile. Combo kernels launch a block's independent small kernels as
# one (H100, 1.5B LoRA ctx 1024: +3.7%); pointwise ones only, since a combined reduction runs all its parts with
# one block shape: LayerNorm's row sums (1024 x 2048) with a weight gradient's split column sums (16384 x 128) took
# 65 us per layer; apart they cost the step 0.7 ms less GPU time (H200: 35.1 -> 36.1 Kt/s, bench/NOTES.md row 28).
INDUCTOR_OPTIONS: dict[str, object] = {"combo_kernels": True, "combo_kernels_pointwise_only": True}
# AOTAutograd's partitioner settings for the compiled blocks (torch._functorch.config keys: what a block keeps for
# backward, what it recomputes there); the benches' --partitioner flag changes them before the first compile. Its
# defaults keep a tensor whenever recomputing it would need a kernel of its own in backward, or when its uses lie far
# apart; at RWKV-7's width that keeps the LoRA inputs (the token-shift mixes), the removal key kk and the normed WKV
# output, all cheap elementwise functions of tensors kept anyway. Counted on the CPU (AOTAutograd with Inductor's
# decompositions on the meta device, 1.5B width, --op triton): 108.5 -> 84.7 MiB per layer per 1K tokens with these
# two off. Matrix products and the WKV kernels are never recomputed (not on the partitioner's list of recomputable
# ops).
# Under an activation budget below 1 the partitioner drops more, down to what fits the budget, weighing recomputation
# by FLOPs (our WKV operator has a formula: wkv7_triton.forward_flops), and `is_non_builtin_to_include` bars it from
# recomputing custom operators (the WKV kernels) at all. H200, 1.5B ctx 1024 bsz 1, --op triton, the trainer
# (bench/results/2026-12-04-h200-session21.md): 0.9 takes LoRA 7.20 -> 6.80 GiB nvidia-smi peak at -0.5% tokens/s,
# State tuning 5.99 -> 5.66 GiB at -2.6%.
PARTITIONER_OPTIONS: dict[str, object] = {"ban_recompute_materialized_backward": False,
                                          "ban_recompute_used_far_apart": False,
                                          "activation_memory_budget": 0.9,
                                          "is_non_builtin_to_include": True}


@cache
def compiled_block() -> Callable:
    if torch.torch_version.TorchVersion(torch.__version__) < "2.13":
        # Before the fix (pytorch#185630, mid 2026), a compiled graph loaded back from AOTAutograd's on-disk cache
        # can carry corrupted view metadata for its aliased outputs: a later run fails with garbage shapes in
        # apply_view_meta_sequence, or crashes outright (seen on torch 2.11, H100, State tuning). Inductor's own
        # kernel cache stays on, so a warm start still skips code generation.
        torch._functorch.config.enable_autograd_cache = False
    compiled = torch.compile(call_block, dynamic=False, options=dict(INDUCTOR_OPTIONS))
    # Scoped to the blocks: the partition happens when a call first compiles (the trainer's other compiled parts and
    # a user's own keep torch's settings).
    partitioner = {k: v for k, v in PARTITIONER_OPTIONS.items() if hasattr(functorch_config, k)}
    if "is_non_builtin_to_include" not in partitioner:
        # An older torch: under a budget its partitioner may run the WKV forward again in backward (-6.6% at 0.9 in
        # session 16), so it keeps what it keeps by default.
        partitioner.pop("activation_memory_budget", None)

    def run(*args):
        with functorch_config.patch(partitioner):
            return compiled(*args)

    return run


def checkpointed_blocks(n_layer: int, share: float) -> list[bool]:
    """Which of `n_layer` blocks recompute their activations in backward for `share` in [0, 1] of them, spread
    evenly (0.5: every other block). Every block stores about the same activations, so the share sets the memory
    and the recompute time between grad_cp 0 and 1 in proportion."""
    count = lambda n: math.floor(n * share + 1e-9)  # noqa: E731
    return [count(i + 1) > count(i) for i in range(n_layer)]


def block_runners(model: nn.Module) -> list[Callable]:
    """One run(block, *args) -> block(*args) per block of `model` for this pass: compiled if `model.compile`, its
    activations recomputed in backward for the blocks `model.grad_cp` picks, both in training steps only.
    Evaluation and generation (no gradient; prompt lengths, T = 1) stay eager: each shape would compile anew for
    a pass that is cheap."""
    training = model.training and torch.is_grad_enabled()
    run = compiled_block() if model.compile and training else call_block
    share = float(model.grad_cp) if training else 0.0
    recomputed = partial(checkpoint, run, use_reentrant=False)
    return [recomputed if cp else run for cp in checkpointed_blocks(len(model.blocks), share)]
