"""The "triton" backend's kernels on the CPU, through Triton's interpreter (TRITON_INTERPRET=1), against the exact per-
step recurrence in float64: the kernels' own arithmetic with fp32 products, every output and gradient, at lengths that
end mid-chunk, with several chunks, a batch and an initial state, the walks with and without prefetch; both entry
points, log w, a, b and RWKV-7's terms w_raw, kk, iclr (against the recurrence of log w, a, b formed from them),
backward with the forward's chunk inverses and prep and without. Needs the `triton` package (CUDA builds of torch carry
it; `pip install triton` on a CPU machine); skipped without it. The GPU tests (test_wkv7_triton_gpu.py) check the bf16
products the backend runs by default."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rwkv_peft.ops import wkv7_triton

pytestmark = pytest.mark.skipif(not wkv7_triton.installed(), reason="Triton not installed")

# The interpreter runs the kernels in numpy's fp32: ~7e-7 from the float64 recurrence; a wrong index, mask or decay
# gives errors of order 1. The reference is float64 because torch's own fp32 recurrence on the CPU was seen 1.1e-4 off
# float64 in about one process of ten here, while the kernels' output did not change.
FP32_TOL = 2e-5
# The compiled model against the eager one, both through the same kernels (COMPILED below).
COMPILED_TOL = 1e-5

PRELUDE = textwrap.dedent("""
    import builtins
    import sys

    import numpy as np
    import torch
    import torch.nn.functional as F
    import triton.runtime.interpreter as interpreter
    from rwkv_peft.ops import registry, rwkv7_log_decay, wkv7_recurrent, wkv7_triton

    # Triton's interpreter (3.6 to 3.9 at least) turns a scalar argument into a one-element array and reads it back
    # with int() in tensor.__index__ (a loop over a runtime bound), which numpy >= 2.4 refuses for arrays that are not
    # 0-d.
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)

    def _patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: builtins.int(np.asarray(self.handle.data).item()))

    if patch_tensor is not None:
        interpreter._patch_lang_tensor = _patch_lang_tensor
""")

CHECK = PRELUDE + textwrap.dedent("""
    wkv7_triton.LOW_PRECISION = dict(chunk=False, prep=False)
    wkv7_triton.PREFETCH = sys.argv[4] == "prefetch"
    wkv7_triton.KEEP_INVERSE = sys.argv[5] == "kept"
    wkv7_triton.KEEP_PREP = sys.argv[6] == "kept"
    B, T, H, N, terms = int(sys.argv[1]), int(sys.argv[2]), 2, 16, sys.argv[3] == "terms"
    g = torch.Generator().manual_seed(T)
    rn = lambda *s: torch.randn(*s, generator=g)
    r, k, v = rn(B, T, H, N), rn(B, T, H, N), rn(B, T, H, N)
    log_w = -0.6065306597126334 * torch.sigmoid(2 * rn(B, T, H, N))
    kk = F.normalize(rn(B, T, H, N), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g)
    if sys.argv[3] == "repeat":  # one token over and over (padding, a run of newlines) and slow decay
        r, k, v, kk = (x[:, :1].expand(B, T, H, N) for x in (r, k, v, kk))
        log_w, iclr = -1e-3 * torch.rand(B, T, H, N, generator=g), 0.9 + 0.1 * iclr
    s0 = rn(B, H, N, N) * 0.5
    inputs = [r, log_w, k, v, -kk, kk * iclr, s0]
    gy, gs = rn(B, T, H, N), rn(B, H, N, N)
    fn = wkv7_triton.wkv7_triton
    if terms:
        inputs = [r, 2 * rn(B, T, H, N), k, v, kk, iclr, s0]
        fn = wkv7_triton.wkv7_triton_terms

    def reference(r, w_raw, k, v, kk, iclr, state):
        return wkv7_recurrent(r, rwkv7_log_decay(w_raw), k, v, -kk, kk * iclr, state)

    def run(fn, dtype):
        leaves = [x.detach().to(dtype).requires_grad_() for x in inputs]
        *seq, state = leaves
        y, s = fn(*seq, state)
        grads = torch.autograd.grad([y, s], leaves, [gy.to(dtype), gs.to(dtype)])
        return [t.detach().double() for t in (y, s, *grads)]

    got, ref = run(fn, torch.float32), run(reference if terms else wkv7_recurrent, torch.float64)
    print(max(float((a - b).norm() / b.norm()) for a, b in zip(got, ref)))
""")


@pytest.mark.parametrize("B,T,inputs,walks,inverse,prep", [
    (1, 1, "wab", "prefetch", "kept", "kept"), (2, 45, "wab", "plain", "kept", "kept"),
    (2, 45, "wab", "plain", "inverted again", "run again"), (1, 100, "wab", "prefetch", "kept", "run again"),
    (2, 45, "terms", "prefetch", "kept", "kept"), (1, 100, "terms", "plain", "kept", "kept"),
    (1, 100, "repeat", "plain", "kept", "kept"), (1, 100, "repeat", "plain", "inverted again", "run again")])
def test_kernels_match_the_recurrence_in_the_interpreter(B, T, inputs, walks, inverse, prep):
    """inverse: whether backward takes the forward's L^-1 (`KEEP_INVERSE`) or inverts L again; prep: whether it
    takes the forward's A and Q (`KEEP_PREP`) or runs the prep again."""
    assert _interpret(CHECK, str(B), str(T), inputs, walks, inverse, prep) < FP32_TOL


# Under torch.compile the model's WKV (through `ops.wkv7_terms`) is traced as the backend's two torch operators:
# fullgraph=True fails on any graph break, and the compiled block must give the eager block's loss and gradients (the
# same kernels; AOTAutograd only reorders the elementwise work around them: ~1e-7 in fp32).
COMPILED = PRELUDE + textwrap.dedent("""
    from torch import nn
    from rwkv_peft.model import RWKV7Config, compiled, model_from_state_dict
    from rwkv_peft.model.init import random_state_dict

    # The interpreter runs on the CPU, which the backend otherwise refuses.
    registry.register("wkv7_terms", "triton", wkv7_triton.wkv7_triton_terms, lambda device: True)
    wkv7_triton.LOW_PRECISION = dict(chunk=False, prep=False)
    compiled.compiled_block = lambda: torch.compile(compiled.call_block, fullgraph=True, backend="aot_eager")
    cfg = RWKV7Config(n_layer=2, n_embd=32, vocab_size=50, head_size=16)
    model = model_from_state_dict(random_state_dict(cfg, seed=1))
    model.backend = "triton"
    for block in model.blocks:  # State tuning's trained initial state: its gradient flows through the WKV too
        block.att.time_state = nn.Parameter(0.3 * torch.randn(cfg.n_head, 16, 16))
    tokens = torch.randint(0, 50, (2, 45), generator=torch.Generator().manual_seed(0))

    def run(compile):
        model.compile = compile
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.flatten())
        loss.backward()
        return [loss.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    eager, graph = run(False), run(True)
    print(max(float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in zip(graph, eager)))
""")


def _interpret(script: str, *args: str) -> float:
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env=dict(os.environ, TRITON_INTERPRET="1"), timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return float(run.stdout.split()[-1])


def test_compiled_model_traces_through_the_kernels():
    assert _interpret(COMPILED) < COMPILED_TOL


def test_the_forward_operator_has_a_flop_count():
    """torch.compile's partitioner weighs ops by FLOPs under an activation budget; at 0 it recomputed our WKV in
    backward (ops/wkv7_triton.py). 32 chunks x 32 heads x 3,538,944 at one 1.5B layer, 1 x 1024."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.empty(1, 1024, 32, 64, device="meta")
    with FlopCounterMode(display=False) as counter:
        torch.ops.rwkv_peft.wkv7_triton_fwd(x, x, x, x, x, x, None, True)
    assert counter.get_total_flops() == wkv7_triton.forward_flops(1, 1024, 32, 64) == 32 * 32 * 3_538_944
