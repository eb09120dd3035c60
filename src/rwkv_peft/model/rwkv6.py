"""RWKV-6 "Finch" (x060), read top to bottom: TimeMix -> ChannelMix -> Block -> RWKV6.

Official parameter names and shapes: data-dependent token shift ("ddlerp") through `time_maa_w1` [C, 5*Dm] and
`time_maa_w2` [5, Dm, C] whose five outputs are in the order w, k, v, r, g; decay LoRA `time_decay_w1/w2`;
bonus `time_faaaa` [H, N] used as is; ln_x GroupNorm eps 64e-5; FFN with a sigmoid receptance gate.
"""

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import relu_squared, token_shift, wkv6
from .compiled import block_runners
from .embed import embed
from .state import RWKVState


@dataclass(frozen=True)
class RWKV6Config:
    """Sizes of an RWKV-6 model. Defaults follow RWKV-LM (Dm 32/Dd 64, doubled at C=4096); loaders read shapes."""

    n_layer: int
    n_embd: int
    vocab_size: int = 65536
    head_size: int = 64
    dim_att: int = 0
    dim_ffn: int = 0
    dim_mix: int = 0
    dim_decay: int = 0
    version: ClassVar[int] = 6

    def __post_init__(self):
        C = self.n_embd
        defaults = dict(dim_att=C, dim_ffn=int(3.5 * C) // 32 * 32, dim_mix=64 if C >= 4096 else 32,
                        dim_decay=128 if C >= 4096 else 64)
        for name, value in defaults.items():
            if getattr(self, name) == 0:
                object.__setattr__(self, name, value)
        if self.dim_att % self.head_size:
            raise ValueError(f"dim_att {self.dim_att} is not a multiple of head_size {self.head_size}")

    @property
    def n_head(self) -> int:
        return self.dim_att // self.head_size


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class TimeMix(nn.Module):
    def __init__(self, cfg: RWKV6Config):
        super().__init__()
        C, A, H, N = cfg.n_embd, cfg.dim_att, cfg.n_head, cfg.head_size
        self.n_head, self.head_size, self.dim_mix = H, N, cfg.dim_mix
        self.time_maa_x, self.time_maa_w, self.time_maa_k = _param(1, 1, C), _param(1, 1, C), _param(1, 1, C)
        self.time_maa_v, self.time_maa_r, self.time_maa_g = _param(1, 1, C), _param(1, 1, C), _param(1, 1, C)
        self.time_maa_w1 = _param(C, 5 * cfg.dim_mix)
        self.time_maa_w2 = _param(5, cfg.dim_mix, C)
        self.time_decay = _param(1, 1, A)
        self.time_decay_w1, self.time_decay_w2 = _param(C, cfg.dim_decay), _param(cfg.dim_decay, A)
        self.time_faaaa = _param(H, N)
        self.receptance = nn.Linear(C, A, bias=False)
        self.key = nn.Linear(C, A, bias=False)
        self.value = nn.Linear(C, A, bias=False)
        self.gate = nn.Linear(C, A, bias=False)
        self.output = nn.Linear(A, C, bias=False)
        self.ln_x = nn.GroupNorm(H, A, eps=64e-5)

    def initial_wkv(self, n: int) -> Tensor | None:
        """A tuned `time_state` [H, N, N] (attached by State tuning) shared by n sequences, else None (zeros)."""
        time_state = getattr(self, "time_state", None)
        return None if time_state is None else time_state.float().expand(n, -1, -1, -1)

    def forward(self, x: Tensor, shift: Tensor | None, wkv_state: Tensor | None, cu_seqlens: Tensor | None,
                backend: str) -> tuple[Tensor, Tensor, Tensor]:
        """x: ln1 output [B, T, C]. Returns (delta for the residual, new shift [B, C], new WKV state)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        d = token_shift(x, shift, cu_seqlens) - x
        # Five data-dependent mix offsets from one shared low-rank projection.
        m = torch.tanh((x + d * self.time_maa_x) @ self.time_maa_w1).view(B * T, 5, self.dim_mix).transpose(0, 1)
        mw, mk, mv, mr, mg = (t.view(B, T, C) for t in torch.bmm(m, self.time_maa_w2))
        xw = x + d * (self.time_maa_w + mw)
        xk = x + d * (self.time_maa_k + mk)
        xv = x + d * (self.time_maa_v + mv)
        xr = x + d * (self.time_maa_r + mr)
        xg = x + d * (self.time_maa_g + mg)

        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        log_w = -torch.exp((self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2).float())
        A = r.shape[-1]
        heads = lambda t: t.view(B, T, H, N)  # noqa: E731
        y, wkv_state = wkv6(heads(r), heads(log_w), heads(k), heads(v), self.time_faaaa, wkv_state,
                            cu_seqlens=cu_seqlens, backend=backend)
        y = self.ln_x(y.reshape(B * T, A)).view(B, T, A).to(r.dtype)
        return self.output(y * g), x[:, -1], wkv_state


class ChannelMix(nn.Module):
    def __init__(self, cfg: RWKV6Config):
        super().__init__()
        C = cfg.n_embd
        self.time_maa_k, self.time_maa_r = _param(1, 1, C), _param(1, 1, C)
        self.key = nn.Linear(C, cfg.dim_ffn, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, C, bias=False)

    def forward(self, x: Tensor, shift: Tensor | None, cu_seqlens: Tensor | None) -> tuple[Tensor, Tensor]:
        d = token_shift(x, shift, cu_seqlens) - x
        k = relu_squared(self.key(x + d * self.time_maa_k))
        return torch.sigmoid(self.receptance(x + d * self.time_maa_r)) * self.value(k), x[:, -1]


class Block(nn.Module):
    def __init__(self, cfg: RWKV6Config, layer_id: int):
        super().__init__()
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(cfg.n_embd)
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.att = TimeMix(cfg)
        self.ffn = ChannelMix(cfg)

    def forward(self, x, att_shift, wkv_state, ffn_shift, cu_seqlens, backend):
        # Norm outputs back in the residual's dtype: see rwkv7.Block (autocast runs norms in fp32). Block 0's ln0
        # is applied by RWKV6.hidden, so that no block branches on its index (compiled.py).
        dx, att_shift, wkv_state = self.att(self.ln1(x).to(x.dtype), att_shift, wkv_state, cu_seqlens, backend)
        x = x + dx
        dx, ffn_shift = self.ffn(self.ln2(x).to(x.dtype), ffn_shift, cu_seqlens)
        return x + dx, att_shift, wkv_state, ffn_shift


class RWKV6(nn.Module):
    """The whole model; same interface as RWKV7."""

    def __init__(self, cfg: RWKV6Config):
        super().__init__()
        self.config = cfg
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.backend = "auto"
        self.grad_cp = 0.0  # share of blocks recomputed in backward (compiled.py)
        self.compile = False  # torch.compile each block in training steps (compiled.py)
        # Called with no arguments at the start of every pass, before the first block: adapters keep derived
        # copies of what trains up to date there (adapters/fold.py).
        self.pass_hooks: list[Callable[[], None]] = []

    def hidden(self, tokens: Tensor, state: RWKVState | None = None,
               cu_seqlens: Tensor | None = None) -> tuple[Tensor, RWKVState]:
        """tokens [B, T] -> (hidden after ln_out [B, T, C], state after the last token). See RWKV7.hidden."""
        for hook in self.pass_hooks:
            hook()
        e = embed(self.emb, tokens)
        x = self.blocks[0].ln0(e).to(e.dtype)
        n_seq = tokens.shape[0] if cu_seqlens is None else len(cu_seqlens) - 1
        new = RWKVState([], [], [])
        runs = block_runners(self)
        for i, block in enumerate(self.blocks):
            att_shift = ffn_shift = None
            wkv_state = block.att.initial_wkv(n_seq)
            if state is not None:
                att_shift, wkv_state, ffn_shift = state.att_shift[i], state.wkv[i], state.ffn_shift[i]
            args = (block, x, att_shift, wkv_state, ffn_shift, cu_seqlens, self.backend)
            x, att_shift, wkv_state, ffn_shift = runs[i](*args)
            new.att_shift.append(att_shift)
            new.wkv.append(wkv_state)
            new.ffn_shift.append(ffn_shift)
        return self.ln_out(x), new

    def forward(self, tokens: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """tokens [B, T] -> logits [B, T, V]."""
        return self.head(self.hidden(tokens, cu_seqlens=cu_seqlens)[0])

    def forward_with_state(self, tokens: Tensor, state: RWKVState | None = None) -> tuple[Tensor, RWKVState]:
        x, new = self.hidden(tokens, state)
        return self.head(x), new
