"""RWKV-7 "Goose" (x070), read top to bottom: TimeMix -> ChannelMix -> Block -> RWKV7.

Parameter names and shapes are the official checkpoint's, so an official `.pth` loads with strict=True:
- token-shift mixes `att.x_r .. x_g` and `ffn.x_k` are [1, 1, C];
- the model's own low-rank projections `w1/w2` (decay), `a1/a2` (in-context learning rate), `v1/v2` (value
  residual), `g1/g2` (output gate) are stored as `x @ w1 @ w2`, i.e. [C, D] then [D, C], not nn.Linear layout;
- `receptance/key/value/output` and `ffn.key/value` are nn.Linear (the layers PEFT adapters wrap);
- block 0 carries `v0/v1/v2` too (official files have them) but never uses them.

Choices that matter for parity with the official `rwkv` package: LayerNorm eps 1e-5, ln_x GroupNorm eps 64e-5,
decay = exp(-e^{-1/2} sigmoid(w0 + tanh(x w1) w2)) computed in fp32, and the WKV state kept in fp32.
"""

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import relu_squared, token_shift, wkv7_terms
from .compiled import block_runners
from .embed import embed
from .state import RWKVState


def _round32(x: float) -> int:
    return max(32, round(x / 32) * 32)


@dataclass(frozen=True)
class RWKV7Config:
    """Sizes of an RWKV-7 model. Low-rank dims default to RWKV-LM's sizing rule; loaders read them from shapes."""

    n_layer: int
    n_embd: int
    vocab_size: int = 65536
    head_size: int = 64
    dim_ffn: int = 0
    dim_w: int = 0
    dim_a: int = 0
    dim_v: int = 0
    dim_g: int = 0
    version: ClassVar[int] = 7

    def __post_init__(self):
        C = self.n_embd
        if C % self.head_size:
            raise ValueError(f"n_embd {C} is not a multiple of head_size {self.head_size}")
        defaults = dict(dim_ffn=4 * C, dim_w=_round32(1.8 * C**0.5), dim_a=_round32(1.8 * C**0.5),
                        dim_v=_round32(1.3 * C**0.5), dim_g=128 if C == 1024 else _round32(0.6 * C**0.8))
        for name, value in defaults.items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, value)

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class TimeMix(nn.Module):
    """RWKV-7 attention replacement: token shift, low-rank gates, WKV-7, GroupNorm, bonus, gated output."""

    # Linears of one shape run at one point on same-shaped inputs (their token-shift mixes): an adapter that lays
    # them side by side (adapters/fold.py) runs them as one batched product through the first one's
    # `forward_stacked`, which it signals by giving the first a `stack_folded` tensor.
    STACKED_LINEARS = ("receptance", "key", "value")

    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.n_head, self.head_size = H, N
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (_param(1, 1, C) for _ in range(6))
        self.w0, self.w1, self.w2 = _param(1, 1, C), _param(C, cfg.dim_w), _param(cfg.dim_w, C)
        self.a0, self.a1, self.a2 = _param(1, 1, C), _param(C, cfg.dim_a), _param(cfg.dim_a, C)
        self.v0, self.v1, self.v2 = _param(1, 1, C), _param(C, cfg.dim_v), _param(cfg.dim_v, C)
        self.g1, self.g2 = _param(C, cfg.dim_g), _param(cfg.dim_g, C)
        self.k_k, self.k_a, self.r_k = _param(1, 1, C), _param(1, 1, C), _param(H, N)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def initial_wkv(self, n: int) -> Tensor | None:
        """The WKV state a fresh sequence starts from: a tuned `time_state` [H, N, N] if one is attached
        (State tuning attaches it), shared by all n sequences, else None (zeros)."""
        time_state = getattr(self, "time_state", None)
        return None if time_state is None else time_state.float().expand(n, -1, -1, -1)

    def lowrank_hidden(self, x: Tensor, d: Tensor, value_residual: bool,
                       one_gemm: bool | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """The first products of the low-rank paths, xw @ w1, xa @ a1, xv @ v1, xg @ g1, each [B, T, dim_*], where
        x_m = x + d * mu_m is the path's token-shift mix (d: shift(x) - x, [B, T, C]). The value residual's (v1) only
        if `value_residual` (every layer but the first), else None.

        one_gemm (default: on CUDA) computes them as one product: x_m @ M = x @ M + d @ (mu_m^T * M), so all four
        are [x, d] @ [[w1 a1 v1 g1], [mu_w*w1 mu_a*a1 mu_v*v1 mu_g*g1]], [B, T, 2C] x [2C, dim_w + dim_a + dim_v +
        dim_g] (1.5B: K 4096, N 512), instead of four skinny, latency-bound ones, and the mixes xw, xa, xg are never
        built: H100, 1.5B LoRA ctx 1024, the trainer 29.59 -> 30.23 Kt/s in one run (bench/NOTES.md). It does twice
        the multiply-adds and rebuilds its weight on every call, which a CPU pays in full (1.5B, one token, 2 cores: 4.7
        ms against 0.3 per layer), so the CPU keeps the four products. The mixed weights round differently in bf16
        from the official order, within bf16 tolerance."""
        paths = "wavg" if value_residual else "wag"
        mats = [getattr(self, f"{p}1") for p in paths]
        mixes = [getattr(self, f"x_{p}") for p in paths]
        if x.is_cuda if one_gemm is None else one_gemm:
            weight = torch.cat((torch.cat(mats, 1), torch.cat([mu.view(-1, 1) * m for mu, m in zip(mixes, mats)], 1)))
            hidden = (torch.cat((x, d), -1) @ weight.to(x.dtype)).split([m.shape[1] for m in mats], -1)
        else:
            hidden = [(x + d * mu.to(x.dtype)) @ m for mu, m in zip(mixes, mats)]
        by_path = dict(zip(paths, hidden))
        return by_path["w"], by_path["a"], by_path.get("v"), by_path["g"]

    def forward(self, x: Tensor, v_first: Tensor | None, shift: Tensor | None, wkv_state: Tensor | None,
                cu_seqlens: Tensor | None, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x: ln1 output [B, T, C]; v_first: layer 0's values [B, T, C] (None in layer 0); shift [B, C];
        wkv_state [B, H, N, N] fp32.
        Returns (delta for the residual, v_first, new shift, new WKV state)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        # Elementwise work runs in the residual's dtype (bf16 in bf16 training) even where the parameter is a
        # trained fp32 master copy (train_parts time): `c` casts it; autograd carries the gradient back in fp32.
        c = lambda p: p.to(x.dtype)  # noqa: E731
        d = token_shift(x, shift, cu_seqlens) - x
        if getattr(self.receptance, "stack_folded", None) is not None:
            mixes = torch.stack((self.x_r, self.x_k, self.x_v))  # [3, 1, 1, C]
            layers = (self.receptance, self.key, self.value)
            r, k, v = self.receptance.forward_stacked(layers, x + d * c(mixes)).unbind(0)
        else:
            xr, xk, xv = (x + d * c(m) for m in (self.x_r, self.x_k, self.x_v))
            r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        hw, ha, hv, hg = self.lowrank_hidden(x, d, value_residual=v_first is not None)
        w_raw = self.w0 + torch.tanh(hw) @ self.w2   # the log decay is -e^{-1/2} sigmoid(w_raw): in wkv7_terms
        # Layer 0 is told apart by having no v_first yet, not by its index: a compiled block then serves every
        # layer (an index would be a guard, and each layer would recompile).
        if v_first is None:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(c(self.v0) + hv @ self.v2)
        iclr = torch.sigmoid(c(self.a0) + ha @ self.a2)
        g = torch.sigmoid(hg) @ self.g2

        # kk (the removal key) is built from k BEFORE the iclr rescaling below.
        kk = F.normalize((k * c(self.k_k)).view(B, T, H, N), dim=-1)
        k = k * (1 + (iclr - 1) * c(self.k_a))
        heads = lambda t: t.view(B, T, H, N)  # noqa: E731
        y, wkv_state = wkv7_terms(heads(r), heads(w_raw), heads(k), heads(v), kk, heads(iclr), wkv_state,
                                  cu_seqlens=cu_seqlens, backend=backend)

        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C).to(r.dtype)
        bonus = (heads(r) * heads(k) * c(self.r_k)).sum(-1, keepdim=True) * heads(v)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), v_first, x[:, -1], wkv_state


class ChannelMix(nn.Module):
    """RWKV-7 FFN: token shift, squared ReLU, no gate."""

    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.x_k = _param(1, 1, cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.dim_ffn, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, cfg.n_embd, bias=False)

    def forward(self, x: Tensor, shift: Tensor | None, cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor]:
        """x: ln2 output [B, T, C]. Returns (delta for the residual, new shift [B, C])."""
        xk = x + (token_shift(x, shift, cu_seqlens) - x) * self.x_k.to(x.dtype)
        return self.value(relu_squared(self.key(xk))), x[:, -1]


class Block(nn.Module):
    def __init__(self, cfg: RWKV7Config, layer_id: int):
        super().__init__()
        if layer_id == 0:
            # LayerNorm of the embedding, stored under block 0 in official files; RWKV7.hidden applies it.
            self.ln0 = nn.LayerNorm(cfg.n_embd)
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.att = TimeMix(cfg)
        self.ffn = ChannelMix(cfg)

    def forward(self, x, v_first, att_shift, wkv_state, ffn_shift, cu_seqlens, backend):
        # The norms' outputs are cast back to the residual stream's dtype: autocast runs LayerNorm/GroupNorm in
        # fp32 and would otherwise turn every elementwise op after them into fp32 work plus casts (bf16 training:
        # the residual is bf16, as in RWKV-LM's bf16 training; fp32 models are unaffected).
        dx, v_first, att_shift, wkv_state = self.att(self.ln1(x).to(x.dtype), v_first, att_shift, wkv_state,
                                                     cu_seqlens, backend)
        x = x + dx
        dx, ffn_shift = self.ffn(self.ln2(x).to(x.dtype), ffn_shift, cu_seqlens)
        return x + dx, v_first, att_shift, wkv_state, ffn_shift


class RWKV7(nn.Module):
    """The whole model. `backend` picks the WKV implementation ("auto", "torch", "fla", ...); `grad_cp`
    (a share of the blocks, 0 to 1; True is 1) recomputes those blocks' activations in the backward pass instead
    of storing them; `compile` runs the blocks of training steps through torch.compile."""

    def __init__(self, cfg: RWKV7Config):
        super().__init__()
        self.config = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.backend = "auto"
        self.grad_cp = 0.0  # share of blocks recomputed in backward (compiled.py)
        # torch.compile each block (its elementwise work fused; fla's WKV kernels run eagerly in between).
        self.compile = False
        # Called with no arguments at the start of every pass, before the first block: adapters keep derived
        # copies of what trains up to date there (adapters/fold.py).
        self.pass_hooks: list[Callable[[], None]] = []

    def hidden(self, tokens: Tensor, state: RWKVState | None = None,
               cu_seqlens: Tensor | None = None) -> tuple[Tensor, RWKVState]:
        """tokens [B, T] -> final hidden states after ln_out [B, T, C], and the state after the last token.
        tokens may also be their embeddings [B, T, C] already gathered (see `embed`).

        state None starts every sequence fresh (zeros, or the tuned time_state). With cu_seqlens (B = 1) each
        packed document starts fresh; the returned WKV states are then one per document.
        """
        for hook in self.pass_hooks:
            hook()
        e = embed(self.emb, tokens)
        x = self.blocks[0].ln0(e).to(e.dtype)
        n_seq = tokens.shape[0] if cu_seqlens is None else len(cu_seqlens) - 1
        v_first = None
        new = RWKVState([], [], [])
        runs = block_runners(self)
        for i, block in enumerate(self.blocks):
            att_shift = ffn_shift = None
            wkv_state = block.att.initial_wkv(n_seq)
            if state is not None:
                att_shift, wkv_state, ffn_shift = state.att_shift[i], state.wkv[i], state.ffn_shift[i]
            args = (block, x, v_first, att_shift, wkv_state, ffn_shift, cu_seqlens, self.backend)
            x, v_first, att_shift, wkv_state, ffn_shift = runs[i](*args)
            new.att_shift.append(att_shift)
            new.wkv.append(wkv_state)
            new.ffn_shift.append(ffn_shift)
        return self.ln_out(x), new

    def forward(self, tokens: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """tokens [B, T] -> logits [B, T, V]."""
        return self.head(self.hidden(tokens, cu_seqlens=cu_seqlens)[0])

    def forward_with_state(self, tokens: Tensor, state: RWKVState | None = None) -> tuple[Tensor, RWKVState]:
        """tokens [B, T], state from a previous call (or None) -> (logits [B, T, V], state after the last token)."""
        x, new = self.hidden(tokens, state)
        return self.head(x), new
