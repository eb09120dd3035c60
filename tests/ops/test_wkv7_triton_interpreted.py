"""The "triton" backend's kernels on the CPU, through Triton's interpreter (TRITON_INTERPRET=1), against the exact
per-step recurrence in float64: the kernels' own arithmetic with fp32 products, every output and gradient, at lengths
that end mid-chunk, with several chunks, a batch and an initial state, the walks with and without prefetch; both entry
points, log w, a, b and RWKV-7's terms w_raw, kk, iclr (against the recurrence of log w, a, b formed from them). Needs
the `triton` package (CUDA builds of torch carry it; `pip install triton` on a CPU machine); skipped without it. The GPU
tests (test_wkv7_triton_gpu.py) check the bf16 products the backend runs by default."""

import os
import subprocess
import sys
import textwrap

import pytest

from rwkv_peft.ops import wkv7_triton

pytestmark = pytest.mark.skipif(not wkv7_triton.installed(), reason="Triton not installed")

# The interpreter runs the kernels in numpy's fp32: ~7e-7 from the float64 recurrence; a wrong index, mask or decay
# gives errors of order 1. The reference is float64 because torch's own fp32 recurrence on the CPU was seen 1.1e-4 off
# float64 in about one process of ten here, while the kernels' output did not change.
FP32_TOL = 2e-5

CHECK = textwrap.dedent("""
    import builtins
    import sys

    import numpy as np
    import torch
    import torch.nn.functional as F
    import triton.runtime.interpreter as interpreter
    from rwkv_peft.ops import rwkv7_log_decay, wkv7_recurrent, wkv7_triton

    # Triton's interpreter (3.6 to 3.9 at least) turns a scalar argument into a one-element array and reads it back
    # with int() in tensor.__index__ (a loop over a runtime bound), which numpy >= 2.4 refuses for arrays that are not
    # 0-d.
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)

    def _patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: builtins.int(np.asarray(self.handle.data).item()))

    if patch_tensor is not None:
        interpreter._patch_lang_tensor = _patch_lang_tensor

    wkv7_triton.LOW_PRECISION = dict(chunk=False, prep=False)
    wkv7_triton.PREFETCH = sys.argv[4] == "prefetch"
    B, T, H, N, terms = int(sys.argv[1]), int(sys.argv[2]), 2, 16, sys.argv[3] == "terms"
    g = torch.Generator().manual_seed(T)
    rn = lambda *s: torch.randn(*s, generator=g)
    r, k, v = rn(B, T, H, N), rn(B, T, H, N), rn(B, T, H, N)
    log_w = -0.6065306597126334 * torch.sigmoid(2 * rn(B, T, H, N))
    kk = F.normalize(rn(B, T, H, N), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g)
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


@pytest.mark.parametrize("B,T,inputs,walks", [(1, 1, "wab", "prefetch"), (2, 45, "wab", "plain"),
                                              (1, 100, "wab", "prefetch"), (2, 45, "terms", "prefetch"),
                                              (1, 100, "terms", "plain")])
def test_kernels_match_the_recurrence_in_the_interpreter(B, T, inputs, walks):
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-c", CHECK, str(B), str(T), inputs, walks], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split()[-1]) < FP32_TOL
