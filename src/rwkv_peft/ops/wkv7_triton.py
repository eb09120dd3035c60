"""The "triton" backend: WKV-7 in chunks, with this project's own Triton kernels.

Why another kernel when fla has one: at the shapes fine-tuning runs (1.5B at ctx 1024: B x H = 32 heads of one sequence)
fla's dozen kernels per layer are latency-bound, and fla keeps ~66 MB of intermediates per layer per 1K tokens for its
backward. These kernels keep each chunk's start state, its L^-1 and its A and Q (22.25 MiB per 1.5B layer per 1K tokens,
mostly bf16), and the sequential walks over the chunks split every head's value rows over several programs (the rows of
S never mix), so even one sequence fills more of the GPU. They launch on torch's current stream, so CUDA graphs capture
them, and are torch operators (`_fwd`, `_bwd`), so torch.compile traces them into the caller's graph without a break.

The math, per head and chunk of C tokens (shapes [C, N] unless noted; S is [N(value), N(key)]; the same
function as `wkv7_chunked`, whose docstring derives it). With g = cumsum(log w) inside the chunk, g' = g - log w
(the decay before token t), gC = g of the last token:

    M_xy[t, s] = sum_j x_t[j] y_s[j] exp(g_x,t[j] - g_s[j]),  kept for s <= t (rb, rk) or s < t (ab, ak)
    L = I - M_ab                                   (unit lower triangular; inverted by block doubling, `_tril_inverse`)
    SA = L^-1 (a e^g' S0^T + M_ak V)               [C, N(value)]: the S_{t-1} a_t^T terms
    Y  = r e^g S0^T + M_rb SA + M_rk V
    S1 = S0 e^gC + SA^T (b e^{gC-g}) + V^T (k e^{gC-g})

M is computed as one product of decayed factors, (x e^{g_x - gC/2}) (y e^{gC/2 - g})^T: the exponents stay within
|gC| / 2, which RWKV-7's bound log w >= -e^{-1/2} keeps finite for chunks up to 64 (the same bound fla's
`safe_gate` path assumes; anything that is not RWKV-7's decay must use another backend).

The kernels:
- prep, per chunk (all chunks in parallel): what does not depend on the chunk's start state, so that each walk
  does one small product per chunk (`_prep_kernel`); A and Q are kept for the backward walk (12.25 MiB per 1.5B
  layer per 1K tokens, `KEEP_PREP`) and L^-1 for the per-chunk backward (2 MiB, `KEEP_INVERSE`);
- forward walk: per (head, block of value rows), over the chunks: stores Y and each chunk's start state S0;
- backward walk: the same, back: dS0 = dY^T r e^g + dS1 e^gC + drhs^T a e^g' with drhs = L^-T (M_rb^T dY +
  b e^{gC-g} dS1^T); stores each chunk's end-state gradient dS1 and returns dS0 of the first chunk (the initial
  state's gradient, what State tuning trains);
- backward per chunk, in two halves (all chunks in parallel): from S0, dS1 and dY the first recomputes the chunk
  and writes dV, SA and drhs; the second forms the other inputs' gradients from those (written out where they are
  computed, in the kernels' comments). As one kernel it spilled 632 B of registers per thread and ran 4% slower at
  8 x 4096 (bench/wkv_regs.py, session 12).

RWKV-7's model passes its own terms (`ops.wkv7_terms`: w_raw, kk, iclr) and the kernels form log w, a and b as they
load a chunk (`_load_decay_ab`), so that backward keeps tensors the model's compiled graph keeps anyway.

Measured on an H200, GPU time per layer, forward + backward: 0.278 ms at B=1, T=1024, H=32 and 7.28 ms at B=8, T=4096
with A and Q kept, 0.312 and 7.80 without (session 27); with the kept inverse 0.316 and 7.85, 0.343 and 8.77 without it
(bench/results/2026-12-04-h200-session23.md); fla 0.340 and 7.43 (sessions 13, 16); the stable inverse (session 19) cost
2-3% of the time: 0.327 -> 0.334 ms and 8.01 -> 8.25 ms in one run. In session 13's trainer at 1.5B LoRA ctx 1024 it was
2.3% faster than fla with 2.15 GiB less (34.2 against 33.4 Kt/s); 1.5B LoRA at ctx 4096 x 8 trains without --grad_cp in
76 GiB (37.7% MFU, session 15), where fla would need ~60 GiB more (32 x the 1.9 GiB it keeps beyond ours at ctx 1024).
"auto" runs RWKV-7's model on them (`auto_runs_terms`) since session 22: at 1.5B ctx 1024 on an H200 the trainer ran
LoRA at 36.14 Kt/s in 6.84 GiB (nvidia-smi peak) against fla's 34.26 in 9.43, State tuning 46.83 / 5.66 against 42.30 /
7.97, and they need no first-use autotuning (fla's took ~300 s): bench/results/2026-12-04-h200-session22.md. Plain
`ops.wkv7` under "auto" (no terms: other callers) keeps fla."""

from functools import cache
from typing import Optional

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ..errors import UserError
from .wkv7 import LOG_DECAY_BOUND

try:  # Triton ships with CUDA builds of torch; CPU-only installs may lack it (then this backend is unavailable).
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without Triton
    triton = None

# The kernels assume RWKV-7's log decay, >= LOG_DECAY_BOUND = -e^{-1/2}: it bounds their exponents (module
# docstring).
CHUNK = 32          # tokens per chunk: 16 or 32 (at 64 one per-chunk backward kernel needed more shared memory than an
                    # H100 has, session 10)
VALUE_BLOCK = 16    # value rows per program in the sequential kernels
# Warps per kernel (bench/wkv_bench.py). The per-chunk backward's first half at 4 (243 registers, no spills: two
# programs per multiprocessor) rather than 8: H200, per layer, 0.337 -> 0.326 ms at 1 x 1024 x 32, 8.50 -> 8.08
# at 8 x 4096 x 32 (session 16).
WARPS = dict(prep=4, fwd=4, state=4, values=4, factors=4)
STAGES = 3          # software pipelining of the walks' loads
# The walks can load the next chunk's operands before the current chunk's products (232 registers instead of 168
# per thread: two programs per multiprocessor instead of three). None: only when the walk has at most two programs
# per multiprocessor, where that costs no programs in flight. H200, per layer: 0.369 -> 0.353 ms at 1 x 1024 x 32
# (128 programs), 8.94 -> 9.05 ms at 8 x 4096 x 32 (1024 programs; session 13).
PREFETCH: bool | None = None
# bf16 operands in the products of the parallel kernels (L's inverse stays fp32): per-chunk backward, prep.
# Measured (bench/wkv_bench.py, H100): -5% and -10% of the kernels' time at ctx 1024 and 4096 x 8, errors against
# the fp32 reference of y 3.3e-3 and of the gradients 8.2e-3 (fla: 2.5e-3 and 3.5e-3; all fp32: 2.0e-3, 3.0e-3).
LOW_PRECISION = dict(chunk=True, prep=True)
# The forward's prep keeps each chunk's L^-1 [C, C] for backward, whose prep and per-chunk first half would
# otherwise invert L again: the inverse's serial chain of small products is most of those kernels' time. Kept in
# bf16 when every product it enters rounds it to bf16 anyway (LOW_PRECISION), so backward's numbers are the same
# either way; 2 MiB per 1.5B layer per 1K tokens.
KEEP_INVERSE = True
# The forward's prep also keeps what the backward walk reads, each chunk's A and Q (`_prep_kernel`), so that backward
# runs no prep. A is kept as its diagonal e^gC in fp32 (decays near 1 to the chunk's power: bf16's 3 digits would
# compound over the walk) and the rest, W^T b_d, in bf16 with Q (`KEPT_BF16`, under LOW_PRECISION's bf16 prep);
# backward's prep, when it runs, makes the same, so backward's numbers do not depend on KEEP_PREP. 12.25 MiB per
# 1.5B layer per 1K tokens (24.25 in fp32). H200, same call: the kernels 0.312 -> 0.278 ms per layer at 1 x 1024 x 32,
# 7.80 -> 7.28 at 8 x 4096; the trainer at 1.5B LoRA ctx 1024 37.82-37.87 -> 39.02-39.04 Kt/s, smi peak 6.60-6.64 ->
# 6.88 GiB; the initial state's gradient 7.3e-4 -> 1.8e-3 from the fp32 reference (fla's 1.8e-3; session 27).
KEEP_PREP = True
KEPT_BF16 = True


@cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _prefetch(programs: int, device: torch.device) -> bool:
    if PREFETCH is not None:
        return PREFETCH
    if device.type != "cuda":  # Triton's interpreter (tests): either way is right there
        return True
    return programs <= 2 * _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())


def installed() -> bool:
    return triton is not None


def takes_head_size(N: int) -> bool:
    return N >= VALUE_BLOCK and not N & (N - 1)


def auto_runs_terms(device: torch.device, dtype: torch.dtype, head_size: int, packed: bool) -> bool:
    """Whether "auto" runs RWKV-7's model (`ops.wkv7_terms`) on these kernels: in bf16 on CUDA, with a head size
    they take, and unpacked (packed documents would run one at a time; fla has varlen kernels for them)."""
    return available(device) and dtype == torch.bfloat16 and takes_head_size(head_size) and not packed


def available(device: torch.device) -> bool:
    return device.type == "cuda" and installed()


def unavailable_reason(device: torch.device) -> str:
    if device.type != "cuda":
        return f"it needs a CUDA device (tensors are on {device})"
    return "Triton is not installed (it comes with CUDA builds of torch)"


if triton is not None:
    _BOUND = tl.constexpr(LOG_DECAY_BOUND)

    @triton.jit
    def _tril_inverse(M, C: tl.constexpr, LOG_C: tl.constexpr):
        """(I - M)^-1 for strictly lower triangular M [C, C], by doubling: X holds the inverses of the diagonal
        blocks of size 2^l of I - M, and X <- X + X M_l X joins each pair of them, M_l being the entries of M
        between the two halves of each block of size 2^(l+1) ([[A, 0], [-B, D]]^-1 has D^-1 B A^-1 below).
        Every product is of exact inverses of unit-triangular blocks, which stay small. (The Neumann product
        (I + M)(I + M^2)(I + M^4)... that this replaced forms powers of M that cancel: for one token repeated
        (padding, a run of newlines) with slow decay M's entries are near -1, M^16 reached 1e8 and the inverse was
        lost, in fp32 too: NaN from position ~1500 of a padded 1.5B row, session 19.)"""
        rows = tl.arange(0, C)
        X = tl.where(rows[:, None] == rows[None, :], 1.0, 0.0)
        for level in tl.static_range(LOG_C):
            pair = (rows[:, None] >> (level + 1)) == (rows[None, :] >> (level + 1))
            halves = (rows[:, None] >> level) != (rows[None, :] >> level)
            X = X + tl.dot(tl.dot(X, tl.where(pair & halves, M, 0.0)), X)
        return X

    @triton.jit
    def _mm(x, y, LOWP: tl.constexpr):
        """x @ y in fp32; LOWP rounds both operands to bf16 first (the tensor cores' fast path)."""
        if LOWP:
            out = tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
        else:  # (no early return: Triton would still trace what follows it)
            out = tl.dot(x.to(tl.float32), y.to(tl.float32))
        return out

    @triton.jit
    def _load_chunk(ptr, c, T, rows, cols, ib, ih, H: tl.constexpr, N: tl.constexpr, C: tl.constexpr):
        """Tokens c*C .. c*C+C-1 of one (sequence, head) of a [B, T, H, N] tensor, columns `cols`, as fp32;
        rows past T read as 0 (log w = 0, k = v = a = b = 0: such a token leaves the state unchanged)."""
        t = c * C + rows
        offs = ((ib * T + t) * H + ih)[:, None] * N + cols[None, :]
        return tl.load(ptr + offs, mask=(t < T)[:, None], other=0.0).to(tl.float32), offs, (t < T)[:, None]

    @triton.jit
    def _load_decay_ab(lw_ptr, a_ptr, b_ptr, c, T, rows, cols, ib, ih, H: tl.constexpr, N: tl.constexpr,
                       C: tl.constexpr, TERMS: tl.constexpr):
        """log w, a, b of one chunk as fp32 [C, N]. TERMS: the pointers hold RWKV-7's own terms instead, w_raw, kk
        and iclr, and the model's formulas run here: log w = -e^{-1/2} sigmoid(w_raw), a = -kk, b = kk iclr (rows
        past T still get log w = 0)."""
        lw, _, mask = _load_chunk(lw_ptr, c, T, rows, cols, ib, ih, H, N, C)
        a, _, _ = _load_chunk(a_ptr, c, T, rows, cols, ib, ih, H, N, C)
        b, _, _ = _load_chunk(b_ptr, c, T, rows, cols, ib, ih, H, N, C)
        if TERMS:
            lw = tl.where(mask, _BOUND * tl.sigmoid(lw), 0.0)
            b = a * b
            a = -a
        return lw, a, b

    @triton.jit
    def _decays(lw, C: tl.constexpr):
        """Cumulative log decays of a chunk: g (inclusive), g' = g - log w, gC (the chunk's total), and the
        centre gC / 2 that keeps the factored exponents small."""
        g = tl.cumsum(lw, axis=0)
        gC = tl.sum(lw, axis=0)
        return g, g - lw, gC, gC * 0.5

    @triton.jit
    def _prep_kernel(r_ptr, lw_ptr, k_ptr, v_ptr, a_ptr, b_ptr, diag_ptr, trans_ptr, q_ptr, sv_ptr, yv_ptr,
                     linv_ptr, T, NT, H: tl.constexpr, N: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr,
                     FWD: tl.constexpr, LOWP: tl.constexpr, TERMS: tl.constexpr, KEEP_INV: tl.constexpr):
        """Grid (NT, B * H): everything of a chunk that does not depend on its start state S0, so that the walks
        over the chunks do one small product per chunk on their critical path:
            S1 = S0 A + Sv,   Y = Q S0^T + Yv                     (forward)
            dS0 = dS1 A^T + dY^T Q                                (backward)
        With W = L^-1 (a e^g'), SAv = L^-1 M_ak V (so that SA = W S0^T + SAv) and the end decays
        b_d = b e^{gC-g}, k_d = k e^{gC-g}:
            A = diag(e^gC) + W^T b_d,   Sv = SAv^T b_d + V^T k_d,   Q = r e^g + M_rb W,   Yv = M_rb SAv + M_rk V.
        Outputs: A as diag [B * H, NT, N] fp32, its diagonal e^gC, and trans [B * H, NT, N, N], the rest
        W^T b_d; Q as q [B * H, NT, C, N] (`_prep_shapes`: the forward may keep all three for backward's walk,
        `KEEP_PREP`); FWD: sv [B * H, NT, N, N] and yv [B * H, NT, C, N] fp32 too.
        KEEP_INV: the forward stores L^-1 in linv [B * H, NT, C, C] and backward loads it (`KEEP_INVERSE`).
        LOWP: bf16 operands in every product but L's inverse. TERMS: see `_load_decay_ab`."""
        c, bh = tl.program_id(0), tl.program_id(1)
        ib, ih = bh // H, bh % H
        rows, cols = tl.arange(0, C), tl.arange(0, N)
        incl = rows[:, None] >= rows[None, :]
        strict = rows[:, None] > rows[None, :]
        r, _, _ = _load_chunk(r_ptr, c, T, rows, cols, ib, ih, H, N, C)
        lw, a, b = _load_decay_ab(lw_ptr, a_ptr, b_ptr, c, T, rows, cols, ib, ih, H, N, C, TERMS)
        g, gp, gC, h = _decays(lw, C)
        r_c = r * tl.exp(g - h[None, :])
        a_c = a * tl.exp(gp - h[None, :])
        b_c = tl.trans(b * tl.exp(h[None, :] - g))
        M_rb = tl.where(incl, _mm(r_c, b_c, LOWP), 0.0)
        linv_offs = (bh * NT + c) * C * C + rows[:, None] * C + rows[None, :]
        if KEEP_INV and not FWD:
            Linv = tl.load(linv_ptr + linv_offs).to(tl.float32)
        else:
            Linv = _tril_inverse(tl.where(strict, _mm(a_c, b_c, LOWP), 0.0), C, LOG_C)
            if KEEP_INV:
                tl.store(linv_ptr + linv_offs, Linv.to(linv_ptr.dtype.element_ty))
        W = _mm(Linv, a * tl.exp(gp), LOWP)
        tail = tl.exp(gC[None, :] - g)
        b_d = b * tail
        state_offs = (bh * NT + c) * N * N + cols[:, None] * N + cols[None, :]
        offs = (bh * NT + c) * C * N + rows[:, None] * N + cols[None, :]
        tl.store(diag_ptr + (bh * NT + c) * N + cols, tl.exp(gC))
        tl.store(trans_ptr + state_offs, _mm(tl.trans(W), b_d, LOWP).to(trans_ptr.dtype.element_ty))
        tl.store(q_ptr + offs, (r * tl.exp(g) + _mm(M_rb, W, LOWP)).to(q_ptr.dtype.element_ty))
        if FWD:
            k, _, _ = _load_chunk(k_ptr, c, T, rows, cols, ib, ih, H, N, C)
            v, _, _ = _load_chunk(v_ptr, c, T, rows, cols, ib, ih, H, N, C)
            k_c = tl.trans(k * tl.exp(h[None, :] - g))
            M_rk = tl.where(incl, _mm(r_c, k_c, LOWP), 0.0)
            M_ak = tl.where(strict, _mm(a_c, k_c, LOWP), 0.0)
            SAv = _mm(Linv, _mm(M_ak, v, LOWP), LOWP)
            tl.store(sv_ptr + state_offs, _mm(tl.trans(SAv), b_d, LOWP) + _mm(tl.trans(v), k * tail, LOWP))
            tl.store(yv_ptr + offs, _mm(M_rb, SAv, LOWP) + _mm(M_rk, v, LOWP))

    @triton.jit
    def _fwd_loads(diag_ptr, trans_ptr, sv_ptr, q_ptr, yv_ptr, bh, c, NT, rows, cols, vcols, state_offs,
                   N: tl.constexpr, C: tl.constexpr):
        """What the forward walk reads for chunk c, as fp32: A's diagonal [N] and the rest of A [N, N], Sv [BV, N],
        Q [C, N], Yv [C, BV]."""
        chunk_states = (bh * NT + c) * N * N
        prep = (bh * NT + c) * C * N + rows[:, None] * N
        return (tl.load(diag_ptr + (bh * NT + c) * N + cols),
                tl.load(trans_ptr + chunk_states + cols[:, None] * N + cols[None, :]).to(tl.float32),
                tl.load(sv_ptr + chunk_states + state_offs), tl.load(q_ptr + prep + cols[None, :]).to(tl.float32),
                tl.load(yv_ptr + prep + vcols[None, :]))

    @triton.jit
    def _fwd_kernel(v_ptr, diag_ptr, trans_ptr, q_ptr, sv_ptr, yv_ptr, s0_ptr, y_ptr, states_ptr, sT_ptr, T, NT,
                    H: tl.constexpr, N: tl.constexpr, C: tl.constexpr, BV: tl.constexpr, HAS_S0: tl.constexpr,
                    PREFETCH: tl.constexpr):
        """Grid (N // BV, B * H): the walk over the chunks, value rows vcols of one head:
        Y = Q S0^T + Yv and S1 = S0 A + Sv (`_prep_kernel`; S0 A = S0 diag(e^gC) + S0 (W^T b_d)). States
        [B, H, NT, N, N] get each chunk's start state (`_state_dtype`); sT the final one. PREFETCH issues the next
        chunk's loads before this chunk's products, so that their latency overlaps the step's work on the critical
        path."""
        iv, bh = tl.program_id(0), tl.program_id(1)
        ib, ih = bh // H, bh % H
        rows, cols = tl.arange(0, C), tl.arange(0, N)
        vcols = iv * BV + tl.arange(0, BV)
        state_offs = vcols[:, None] * N + cols[None, :]          # [BV, N] inside one N x N state
        if HAS_S0:
            S = tl.load(s0_ptr + bh * N * N + state_offs)
        else:
            S = tl.zeros([BV, N], dtype=tl.float32)
        D, A, Sv, Q, Yv = _fwd_loads(diag_ptr, trans_ptr, sv_ptr, q_ptr, yv_ptr, bh, 0, NT, rows, cols, vcols,
                                     state_offs, N, C)
        for c in range(NT):
            nc = tl.minimum(c + 1, NT - 1)  # the last chunk reads itself again: in bounds, and unused
            if PREFETCH:
                nxt = _fwd_loads(diag_ptr, trans_ptr, sv_ptr, q_ptr, yv_ptr, bh, nc, NT, rows, cols, vcols,
                                 state_offs, N, C)
            tl.store(states_ptr + (bh * NT + c) * N * N + state_offs, S.to(states_ptr.dtype.element_ty))
            t = c * C + rows
            y_offs = ((ib * T + t) * H + ih)[:, None] * N + vcols[None, :]
            y = tl.dot(Q, tl.trans(S)) + Yv
            tl.store(y_ptr + y_offs, y.to(y_ptr.dtype.element_ty), mask=(t < T)[:, None])
            S = S * D[None, :] + tl.dot(S, A) + Sv
            if not PREFETCH:
                nxt = _fwd_loads(diag_ptr, trans_ptr, sv_ptr, q_ptr, yv_ptr, bh, nc, NT, rows, cols, vcols,
                                 state_offs, N, C)
            D, A, Sv, Q, Yv = nxt
        tl.store(sT_ptr + bh * N * N + state_offs, S)

    @triton.jit
    def _bwd_loads(diag_ptr, trans_ptr, q_ptr, dy_ptr, bh, c, T, NT, rows, cols, vcols, ib, ih, H: tl.constexpr,
                   N: tl.constexpr, C: tl.constexpr):
        """What the backward walk reads for chunk c, as fp32: A's diagonal [N] and the rest of A^T [N, N], Q
        [C, N], dY [C, BV]."""
        D = tl.load(diag_ptr + (bh * NT + c) * N + cols)
        At = tl.load(trans_ptr + (bh * NT + c) * N * N + cols[None, :] * N + cols[:, None]).to(tl.float32)
        Q = tl.load(q_ptr + (bh * NT + c) * C * N + rows[:, None] * N + cols[None, :]).to(tl.float32)
        dy, _, _ = _load_chunk(dy_ptr, c, T, rows, vcols, ib, ih, H, N, C)
        return D, At, Q, dy

    @triton.jit
    def _bwd_state_kernel(diag_ptr, trans_ptr, q_ptr, dy_ptr, dsT_ptr, dstates_ptr, ds0_ptr, T, NT,
                          H: tl.constexpr, N: tl.constexpr, C: tl.constexpr, BV: tl.constexpr,
                          HAS_DST: tl.constexpr, PREFETCH: tl.constexpr):
        """Grid (N // BV, B * H): the walk back, dS0 = dS1 A^T + dY^T Q (`_prep_kernel`; A as its diagonal and the
        rest, which backward's walk reads: dS1 A^T = dS1 diag(e^gC) + dS1 (W^T b_d)^T). dstates
        [B, H, NT, N, N] gets the gradient of each chunk's end state; ds0 the initial state's. PREFETCH as in
        `_fwd_kernel`."""
        iv, bh = tl.program_id(0), tl.program_id(1)
        ib, ih = bh // H, bh % H
        rows, cols = tl.arange(0, C), tl.arange(0, N)
        vcols = iv * BV + tl.arange(0, BV)
        state_offs = vcols[:, None] * N + cols[None, :]
        if HAS_DST:
            dS = tl.load(dsT_ptr + bh * N * N + state_offs)
        else:
            dS = tl.zeros([BV, N], dtype=tl.float32)
        D, At, Q, dy = _bwd_loads(diag_ptr, trans_ptr, q_ptr, dy_ptr, bh, NT - 1, T, NT, rows, cols, vcols, ib, ih,
                                  H, N, C)
        for i in range(NT):
            c = NT - 1 - i
            nc = tl.maximum(c - 1, 0)  # the first chunk reads itself again: in bounds, and unused
            if PREFETCH:
                nxt = _bwd_loads(diag_ptr, trans_ptr, q_ptr, dy_ptr, bh, nc, T, NT, rows, cols, vcols, ib, ih, H, N,
                                 C)
            tl.store(dstates_ptr + (bh * NT + c) * N * N + state_offs, dS)
            dS = dS * D[None, :] + tl.dot(dS, At) + tl.dot(tl.trans(dy), Q)
            if not PREFETCH:
                nxt = _bwd_loads(diag_ptr, trans_ptr, q_ptr, dy_ptr, bh, nc, T, NT, rows, cols, vcols, ib, ih, H, N,
                                 C)
            D, At, Q, dy = nxt
        tl.store(ds0_ptr + bh * N * N + state_offs, dS)

    @triton.jit
    def _load_factors(r_ptr, lw_ptr, k_ptr, a_ptr, b_ptr, c, T, rows, cols, ib, ih, H: tl.constexpr, N: tl.constexpr,
                      C: tl.constexpr, TERMS: tl.constexpr):
        """r, log w, k, a, b of one chunk (what M and the decays are made of, `_load_chunk`, `_load_decay_ab`), and
        the chunk's offsets and row mask."""
        r, offs, mask = _load_chunk(r_ptr, c, T, rows, cols, ib, ih, H, N, C)
        k, _, _ = _load_chunk(k_ptr, c, T, rows, cols, ib, ih, H, N, C)
        lw, a, b = _load_decay_ab(lw_ptr, a_ptr, b_ptr, c, T, rows, cols, ib, ih, H, N, C, TERMS)
        return r, lw, k, a, b, offs, mask

    @triton.jit
    def _bwd_values_kernel(r_ptr, lw_ptr, k_ptr, v_ptr, a_ptr, b_ptr, dy_ptr, states_ptr, dstates_ptr, linv_ptr,
                           dv_ptr, sa_ptr, drhs_ptr, T, NT,
                           H: tl.constexpr, N: tl.constexpr, C: tl.constexpr, LOG_C: tl.constexpr,
                           LOWP: tl.constexpr, TERMS: tl.constexpr, KEEP_INV: tl.constexpr):
        """Grid (NT, B * H), the first half of the per-chunk backward: one chunk of one head, all N value rows.
        From S0, dS1 and dY it recomputes the chunk (M, L^-1 unless kept, SA = L^-1 (a_d S0^T + M_ak V)), goes
        back through Y = r_d S0^T + M_rb SA + M_rk V and S1 = S0 e^gC + SA^T b_d + V^T k_d to SA and L's right-hand side
        (drhs = L^-T dSA), and writes dV. SA and drhs [B * H, NT, C, N] go to `_bwd_factors_kernel`, which needs
        neither M nor L. Each half holds about half the live values of the one kernel this was (255 registers and
        632 B spilled per thread); both run best at 4 warps, two programs to a multiprocessor (sessions 12, 16)."""
        c, bh = tl.program_id(0), tl.program_id(1)
        ib, ih = bh // H, bh % H
        rows, cols = tl.arange(0, C), tl.arange(0, N)
        incl = rows[:, None] >= rows[None, :]
        strict = rows[:, None] > rows[None, :]
        r, lw, k, a, b, offs, mask = _load_factors(r_ptr, lw_ptr, k_ptr, a_ptr, b_ptr, c, T, rows, cols, ib, ih,
                                                   H, N, C, TERMS)
        g, gp, gC, h = _decays(lw, C)
        # The decayed factors: _c centred ones of M, _d chunk-wide ones.
        r_c, a_c = r * tl.exp(g - h[None, :]), a * tl.exp(gp - h[None, :])
        b_c, k_c = b * tl.exp(h[None, :] - g), k * tl.exp(h[None, :] - g)
        a_d, tail = a * tl.exp(gp), tl.exp(gC[None, :] - g)
        b_d, k_d = b * tail, k * tail
        M_rb = tl.where(incl, _mm(r_c, tl.trans(b_c), LOWP), 0.0)
        M_rk = tl.where(incl, _mm(r_c, tl.trans(k_c), LOWP), 0.0)
        M_ak = tl.where(strict, _mm(a_c, tl.trans(k_c), LOWP), 0.0)
        if KEEP_INV:  # the forward's (`KEEP_INVERSE`)
            Linv = tl.load(linv_ptr + (bh * NT + c) * C * C + rows[:, None] * C + rows[None, :]).to(tl.float32)
        else:
            Linv = _tril_inverse(tl.where(strict, _mm(a_c, tl.trans(b_c), LOWP), 0.0), C, LOG_C)
        state_offs = (bh * NT + c) * N * N + cols[:, None] * N + cols[None, :]
        v, _, _ = _load_chunk(v_ptr, c, T, rows, cols, ib, ih, H, N, C)
        S0 = tl.load(states_ptr + state_offs).to(tl.float32)      # [N(value), N(key)]
        SA = _mm(Linv, _mm(a_d, tl.trans(S0), LOWP) + _mm(M_ak, v, LOWP), LOWP)           # [C, N(value)]
        dy, _, _ = _load_chunk(dy_ptr, c, T, rows, cols, ib, ih, H, N, C)
        dS1t = tl.trans(tl.load(dstates_ptr + state_offs))
        dSA = _mm(tl.trans(M_rb), dy, LOWP) + _mm(b_d, dS1t, LOWP)
        drhs = _mm(tl.trans(Linv), dSA, LOWP)                        # through SA = L^-1 rhs
        dv = _mm(tl.trans(M_rk), dy, LOWP) + _mm(k_d, dS1t, LOWP) + _mm(tl.trans(M_ak), drhs, LOWP)
        tl.store(dv_ptr + offs, dv.to(dv_ptr.dtype.element_ty), mask=mask)
        scratch = (bh * NT + c) * C * N + rows[:, None] * N + cols[None, :]
        tl.store(sa_ptr + scratch, SA.to(sa_ptr.dtype.element_ty))
        tl.store(drhs_ptr + scratch, drhs.to(drhs_ptr.dtype.element_ty))

    @triton.jit
    def _bwd_factors_kernel(r_ptr, lw_ptr, k_ptr, v_ptr, a_ptr, b_ptr, dy_ptr, states_ptr, dstates_ptr,
                            sa_ptr, drhs_ptr, dr_ptr, dlw_ptr, dk_ptr, da_ptr, db_ptr, T, NT,
                            H: tl.constexpr, N: tl.constexpr, C: tl.constexpr, LOWP: tl.constexpr,
                            TERMS: tl.constexpr):
        """Grid (NT, B * H), the second half: from SA and drhs (`_bwd_values_kernel`), dY, S0 and dS1, the
        gradients of M = x_c y_c^T and of the chunk-wide terms, and through them of r, log w, k, a, b (TERMS: of
        w_raw, kk and iclr, `_load_decay_ab`)."""
        c, bh = tl.program_id(0), tl.program_id(1)
        ib, ih = bh // H, bh % H
        rows, cols = tl.arange(0, C), tl.arange(0, N)
        incl = rows[:, None] >= rows[None, :]
        strict = rows[:, None] > rows[None, :]
        scratch = (bh * NT + c) * C * N + rows[:, None] * N + cols[None, :]
        # What enters only products is held in the products' dtype (with LOWP they round it to bf16 anyway), and
        # each input's gradient is finished and stored before the next is begun: with all products formed first
        # and the stores at the end this kernel spilled 840 B per thread, now 304 (bench/wkv_regs.py), and took
        # 11% longer (H200, 1 x 1024 x 32: 92 -> 82 us).
        OP: tl.constexpr = tl.bfloat16 if LOWP else tl.float32
        SA = tl.load(sa_ptr + scratch).to(OP)
        drhs = tl.load(drhs_ptr + scratch).to(OP)
        v, _, _ = _load_chunk(v_ptr, c, T, rows, cols, ib, ih, H, N, C)
        dy, _, _ = _load_chunk(dy_ptr, c, T, rows, cols, ib, ih, H, N, C)
        v, dy = v.to(OP), dy.to(OP)
        state_offs = (bh * NT + c) * N * N + cols[:, None] * N + cols[None, :]
        S0 = tl.load(states_ptr + state_offs).to(tl.float32)      # [N(value), N(key)]
        dS1 = tl.load(dstates_ptr + state_offs)
        dD = tl.sum(S0 * dS1, axis=0)                             # [N(key)]; after it the states enter only products
        S0, dS1 = S0.to(OP), dS1.to(OP)
        dM_rb = tl.where(incl, _mm(dy, tl.trans(SA), LOWP), 0.0).to(OP)
        dM_rk = tl.where(incl, _mm(dy, tl.trans(v), LOWP), 0.0).to(OP)
        dM_ab = tl.where(strict, _mm(drhs, tl.trans(SA), LOWP), 0.0).to(OP)  # L = I - M_ab: dM_ab = +drhs SA^T
        dM_ak = tl.where(strict, _mm(drhs, tl.trans(v), LOWP), 0.0).to(OP)
        r, lw, k, a, b, offs, mask = _load_factors(r_ptr, lw_ptr, k_ptr, a_ptr, b_ptr, c, T, rows, cols, ib, ih,
                                                   H, N, C, TERMS)
        g, gp, gC, h = _decays(lw, C)
        # Through M = x_c y_c^T (x_c = x e^{g-h}, y_c = y e^{h-g}; a's factor a e^{g'-h}) and the chunk-wide
        # terms (r e^g, a e^g', b and k times tail) to each input: the centre h = gC/2 cancels inside M, so it
        # carries no gradient. The exponentials are written out where used rather than named once: the same
        # values, and the order ptxas was measured with (304 B spilled; named, the code differs, unmeasured).
        r_c, a_c = (r * tl.exp(g - h[None, :])).to(OP), (a * tl.exp(gp - h[None, :])).to(OP)
        b_c, k_c = (b * tl.exp(h[None, :] - g)).to(OP), (k * tl.exp(h[None, :] - g)).to(OP)
        # The exponents' gradients: an operand x e^u gives u the gradient x e^u times the operand's, summed over
        # x's factors that is x * dx; g enters r's and a's (via g'), b's and k's with a minus sign, gC the tails
        # and D = e^gC.
        dr = (_mm(dM_rb, b_c, LOWP) + _mm(dM_rk, k_c, LOWP)) * tl.exp(g - h[None, :]) + _mm(dy, S0, LOWP) * tl.exp(g)
        dg = r * dr
        tl.store(dr_ptr + offs, dr.to(dr_ptr.dtype.element_ty), mask=mask)
        da = ((_mm(dM_ab, b_c, LOWP) + _mm(dM_ak, k_c, LOWP)) * tl.exp(gp - h[None, :])
              + _mm(drhs, S0, LOWP) * tl.exp(gp))
        dgp = a * da
        tail = tl.exp(gC[None, :] - g)
        dk_d = _mm(v, dS1, LOWP) * tail
        dk = (_mm(tl.trans(dM_rk), r_c, LOWP) + _mm(tl.trans(dM_ak), a_c, LOWP)) * tl.exp(h[None, :] - g) + dk_d
        dg -= k * dk
        dgC = tl.sum(k * dk_d, axis=0) + tl.exp(gC) * dD
        tl.store(dk_ptr + offs, dk.to(dk_ptr.dtype.element_ty), mask=mask)
        db_d = _mm(SA, dS1, LOWP) * tail
        db = (_mm(tl.trans(dM_rb), r_c, LOWP) + _mm(tl.trans(dM_ab), a_c, LOWP)) * tl.exp(h[None, :] - g) + db_d
        dg -= b * db
        dgC += tl.sum(b * db_d, axis=0)
        # g = inclusive cumsum of log w, g' = exclusive: log w_s gets the g-gradients of tokens t >= s, the
        # g'-gradients of tokens t > s, and the chunk total's.
        dlw = tl.cumsum(dg, axis=0, reverse=True) + tl.cumsum(dgp, axis=0, reverse=True) - dgp + dgC[None, :]
        # TERMS: on through a = -kk, b = kk iclr and log w = B sigmoid(w_raw), B the bound, whose derivative in
        # w_raw is log w (1 - log w / B).
        if TERMS:
            kk, _, _ = _load_chunk(a_ptr, c, T, rows, cols, ib, ih, H, N, C)
            iclr, _, _ = _load_chunk(b_ptr, c, T, rows, cols, ib, ih, H, N, C)
            da, db = db * iclr - da, db * kk
            dlw = dlw * lw * (1.0 - lw / _BOUND)
        tl.store(dlw_ptr + offs, dlw.to(dlw_ptr.dtype.element_ty), mask=mask)
        tl.store(da_ptr + offs, da.to(da_ptr.dtype.element_ty), mask=mask)
        tl.store(db_ptr + offs, db.to(db_ptr.dtype.element_ty), mask=mask)


def _sizes(N: int) -> dict:
    return dict(N=N, C=CHUNK, LOG_C=CHUNK.bit_length() - 1)


def _prep(r, log_w, k, v, a, b, linv: Tensor, NT: int, fwd: bool, terms: bool) -> list[Tensor]:
    """`_prep_kernel` on every chunk: A (its diagonal and the rest) and Q (`_prep_shapes`), and with fwd Sv and Yv.
    linv: L^-1 of every chunk, written by the forward and read by backward (`_inverse_shape`; empty: not kept)."""
    B, T, H, N = r.shape
    D, A, Q = (torch.empty(shape, dtype=dtype, device=r.device) for shape, dtype in _prep_shapes(B, H, NT, N))
    Sv, Yv = (torch.empty_like(A, dtype=torch.float32), torch.empty_like(Q, dtype=torch.float32)) if fwd else (A, Q)
    _prep_kernel[(NT, B * H)](r, log_w, k, v, a, b, D, A, Q, Sv, Yv, linv, T, NT, H=H, FWD=fwd,
                              LOWP=LOW_PRECISION["prep"], TERMS=terms, KEEP_INV=linv.numel() > 0,
                              num_warps=WARPS["prep"], **_sizes(N))
    return [D, A, Q, Sv, Yv] if fwd else [D, A, Q]


def _prep_shapes(B: int, H: int, NT: int, N: int, kept: bool = True) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """Shapes and dtypes of A's diagonal, the rest of A, and Q (`_prep_kernel`); with kept=False, (0,) each: what
    `_fwd` returns for them without `KEEP_PREP`."""
    kept_dtype = torch.bfloat16 if KEPT_BF16 and LOW_PRECISION["prep"] else torch.float32
    shapes = [(B * H, NT, N), (B * H, NT, N, N), (B * H, NT, CHUNK, N)] if kept else [(0,)] * 3
    return list(zip(shapes, (torch.float32, kept_dtype, kept_dtype)))


def _state_dtype() -> torch.dtype:
    # The chunks' start states are kept for backward, where they enter only products, and so only bf16 ones when the
    # products are bf16 (and the sum over value rows for the decay's gradient): stored in bf16 then, half the memory
    # (1.5B ctx 1024: 8 of 16 MiB per layer; H200, trainer: 7.48 -> 7.29 GiB allocated, speed unchanged), the same
    # numbers but for that sum's rounding (errors against fp32 unchanged at 2 digits).
    return torch.bfloat16 if LOW_PRECISION["chunk"] else torch.float32


def _inverse_shape(B: int, H: int, NT: int) -> tuple[int, ...]:
    return (B * H, NT, CHUNK, CHUNK) if KEEP_INVERSE else (0,)


def _inverse_dtype() -> torch.dtype:
    # bf16 only where every product L^-1 enters in backward is bf16 (prep's and the per-chunk first half's)
    return torch.bfloat16 if LOW_PRECISION["prep"] and LOW_PRECISION["chunk"] else torch.float32


# The kernels are registered as two torch operators (forward, backward) with a shape function each, so that
# torch.compile traces through the WKV instead of breaking the block's graph in two there: one graph per block,
# forward and backward, with the work on both sides of the WKV fused and no eager gradient sums where a tensor
# crosses a graph break.
@torch.library.custom_op("rwkv_peft::wkv7_triton_fwd", mutates_args=())
def _fwd(r: Tensor, decay: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, s0: Optional[Tensor],
         terms: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(r, log w, k, v, a, b) or with `terms` (r, w_raw, k, v, kk, iclr): `_load_decay_ab`. All [B, T, H, N],
    contiguous; s0 [B or 1, H, N, N] or None. Returns y [B, T, H, N], the final state sT [B, H, N, N] fp32, and
    for backward the chunks' start states [B, H, NT, N, N] (`_state_dtype`), their L^-1 (`_inverse_shape`) and
    what the backward walk reads (A and Q, `_prep_shapes`; empty without `KEEP_PREP`)."""
    B, T, H, N = r.shape
    NT = triton.cdiv(T, CHUNK)
    linv = r.new_empty(_inverse_shape(B, H, NT), dtype=_inverse_dtype())
    D, A, Q, Sv, Yv = _prep(r, decay, k, v, a, b, linv, NT, fwd=True, terms=terms)
    y = torch.empty_like(r)
    states = torch.empty(B, H, NT, N, N, dtype=_state_dtype(), device=r.device)
    sT = torch.empty(B, H, N, N, dtype=torch.float32, device=r.device)
    s0_arg = sT if s0 is None else s0.float().expand(B, -1, -1, -1).contiguous()
    _fwd_kernel[(N // VALUE_BLOCK, B * H)](v, D, A, Q, Sv, Yv, s0_arg, y, states, sT, T, NT, H=H, N=N, C=CHUNK,
                                          BV=VALUE_BLOCK, HAS_S0=s0 is not None,
                                          PREFETCH=_prefetch(N // VALUE_BLOCK * B * H, r.device),
                                          num_warps=WARPS["fwd"], num_stages=STAGES)
    kept = (D, A, Q) if KEEP_PREP else (x.new_empty(0) for x in (D, A, Q))
    return y, sT, states, linv, *kept


@_fwd.register_fake
def _(r, decay, k, v, a, b, s0, terms):
    B, T, H, N = r.shape
    NT = -(-T // CHUNK)
    return (torch.empty_like(r), r.new_empty(B, H, N, N, dtype=torch.float32),
            r.new_empty(B, H, NT, N, N, dtype=_state_dtype()), r.new_empty(_inverse_shape(B, H, NT),
                                                                            dtype=_inverse_dtype()),
            *(r.new_empty(shape, dtype=dtype) for shape, dtype in _prep_shapes(B, H, NT, N, KEEP_PREP)))


def forward_flops(B: int, T: int, H: int, N: int, C: int = CHUNK) -> int:
    """Floating-point operations of `_fwd` on [B, T, H, N] inputs in chunks of C: per chunk and head, the prep's
    products (the four M, L's inverse, W, A, Q, SAv, Sv, Yv: 20 C^2 N + 6 C N^2 + 4 log2(C) C^3) and the walk's
    (Y, S A: 2 C N^2 + 2 N^3). 3.54 MFLOP per chunk and head at C 32, N 64: 3.6 GFLOP per 1.5B layer at 1 x 1024."""
    per_chunk = 20 * C * C * N + 8 * C * N * N + 4 * (C.bit_length() - 1) * C ** 3 + 2 * N ** 3
    return B * H * -(-T // C) * per_chunk


# torch.compile's partitioner under an activation budget picks what to recompute by a knapsack over the forward's
# ops, weighing each by its FLOPs; without a formula a custom operator weighs 0, so the knapsack ran the WKV again in
# backward rather than keep its outputs: State tuning, 1.5B ctx 1024, budget 0.9 (bench/kept_tensors.py): 53.2 MiB
# kept per block with the WKV dropped, 57.5 with this formula and the WKV kept (65.6 without a budget).
@register_flop_formula(torch.ops.rwkv_peft.wkv7_triton_fwd)
def _fwd_flops(r_shape, *args, **kwargs) -> int:
    return forward_flops(*r_shape)


@torch.library.custom_op("rwkv_peft::wkv7_triton_bwd", mutates_args=())
def _bwd(r: Tensor, decay: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, states: Tensor, linv: Tensor,
         kept_diag: Tensor, kept_rest: Tensor, kept_q: Tensor, dy: Tensor, dsT: Optional[Tensor], terms: bool
         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of `_fwd`'s inputs (r, decay, k, v, a, b, and the start state's [B, H, N, N] fp32) from dy and
    dsT (None: zero); states, linv and A and Q as `_fwd` returned them (those empty: the prep runs again)."""
    B, T, H, N = r.shape
    NT = states.shape[2]
    D, A, Q = (kept_diag, kept_rest, kept_q) if kept_diag.numel() else _prep(r, decay, k, v, a, b, linv, NT, False,
                                                                             terms)
    dy = dy.contiguous()
    dstates = torch.empty_like(states, dtype=torch.float32)
    ds0 = torch.empty(B, H, N, N, dtype=torch.float32, device=r.device)
    dsT_arg = ds0 if dsT is None else dsT.float().contiguous()
    _bwd_state_kernel[(N // VALUE_BLOCK, B * H)](D, A, Q, dy, dsT_arg, dstates, ds0, T, NT, H=H, N=N, C=CHUNK,
                                                BV=VALUE_BLOCK, HAS_DST=dsT is not None,
                                                PREFETCH=_prefetch(N // VALUE_BLOCK * B * H, r.device),
                                                num_warps=WARPS["state"], num_stages=STAGES)
    del D, A, Q, kept_diag, kept_rest, kept_q   # frees them when the prep ran here (kept ones stay saved)
    dr, ddecay, dk, dv, da, db = (torch.empty_like(x) for x in (r, decay, k, v, a, b))
    # SA and drhs, like the kept states, enter only bf16 products when the products are bf16: stored as those.
    lowp = LOW_PRECISION["chunk"]
    SA = torch.empty(B * H, NT, CHUNK, N, dtype=states.dtype, device=r.device)
    drhs = torch.empty_like(SA)
    chunks = (NT, B * H)
    _bwd_values_kernel[chunks](r, decay, k, v, a, b, dy, states, dstates, linv, dv, SA, drhs, T, NT, H=H,
                               LOWP=lowp, TERMS=terms, KEEP_INV=linv.numel() > 0, num_warps=WARPS["values"],
                               **_sizes(N))
    _bwd_factors_kernel[chunks](r, decay, k, v, a, b, dy, states, dstates, SA, drhs, dr, ddecay, dk, da, db, T, NT,
                                H=H, N=N, C=CHUNK, LOWP=lowp, TERMS=terms, num_warps=WARPS["factors"])
    return dr, ddecay, dk, dv, da, db, ds0


@_bwd.register_fake
def _(r, decay, k, v, a, b, states, linv, kept_diag, kept_rest, kept_q, dy, dsT, terms):
    B, T, H, N = r.shape
    return (*(torch.empty_like(x) for x in (r, decay, k, v, a, b)), r.new_empty(B, H, N, N, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    r, decay, k, v, a, b, s0, terms = inputs
    kept = output[2:]   # states, linv, and A and Q (`_prep_shapes`)
    ctx.save_for_backward(r, decay, k, v, a, b, *kept)
    ctx.terms = terms
    ctx.s0_batch = None if s0 is None else s0.shape[0]
    ctx.mark_non_differentiable(*kept)
    ctx.set_materialize_grads(False)  # an unused final state's gradient stays None: no [B, H, N, N] of zeros


def _backward(ctx, dy, dsT, *_):
    dy = torch.zeros_like(ctx.saved_tensors[0]) if dy is None else dy
    *grads, ds0 = _bwd(*ctx.saved_tensors, dy, dsT, ctx.terms)
    dstate = None
    if ctx.s0_batch is not None:
        dstate = ds0 if ctx.s0_batch == dy.shape[0] else ds0.sum(0, keepdim=True)
    return *grads, dstate, None


_fwd.register_autograd(_backward, setup_context=_setup_context)


def _call(entry, terms: bool, r, decay, k, v, a, b, state, cu_seqlens) -> tuple[Tensor, Tensor]:
    """Both entry points: checks, packed documents one at a time, dtypes and layout, then the kernels."""
    N = r.shape[-1]
    if not takes_head_size(N):
        raise UserError(f"--op triton needs a head size that is a power of two >= {VALUE_BLOCK}, not {N}; "
                        "use --op auto")
    if cu_seqlens is not None:
        from . import _per_document  # imported late: ops imports us

        return _per_document(entry, cu_seqlens, state, (r, decay, k, v, a, b))
    k, v, a, b = (t.to(r.dtype) for t in (k, v, a, b))
    y, sT, *_ = _fwd(*(t.contiguous() for t in (r, decay, k, v, a, b)), state, terms)
    return y, sT


def wkv7_triton(r: Tensor, log_w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None,
                cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Shapes as `wkv7_recurrent`: r, log_w, k, v, a, b [B, T, H, N]; state [B or 1, H, N, N] fp32 or None.
    Needs log_w >= -e^{-1/2} (what RWKV-7 computes). Returns y [B, T, H, N] in r's dtype and the final state
    [B, H, N, N] fp32. Packed documents (cu_seqlens) run one document at a time."""
    return _call(wkv7_triton, False, r, log_w, k, v, a, b, state, cu_seqlens)


def wkv7_triton_terms(r: Tensor, w_raw: Tensor, k: Tensor, v: Tensor, kk: Tensor, iclr: Tensor,
                      state: Tensor | None = None, cu_seqlens: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """`wkv7_triton` from RWKV-7's own terms (`ops.wkv7_terms`): log w = -e^{-1/2} sigmoid(w_raw), a = -kk and
    b = kk iclr are formed inside the kernels, so that what backward keeps is w_raw, kk and iclr, tensors the
    model's compiled graph keeps anyway, instead of an fp32 log w and two products of its own (1.5B: 12 MiB per
    layer per 1K tokens less, counted on the CPU with the saved-tensor hooks)."""
    return _call(wkv7_triton_terms, True, r, w_raw, k, v, kk, iclr, state, cu_seqlens)
