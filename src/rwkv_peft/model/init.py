"""Random official-shape checkpoints, for tests, benchmarks and the demo (real weights can't be downloaded here).

The values are moderate random numbers rather than RWKV-LM's training init: its init zeroes `att.output` and
`ffn.value`, which would make logits near-constant and useless for checking parity or watching a loss fall.
"""

import torch
from torch import Tensor

from .rwkv6 import RWKV6Config
from .rwkv7 import RWKV7Config


def random_state_dict(cfg: RWKV7Config | RWKV6Config, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                      device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """A flat {official key: tensor} dict for `cfg`, in the official key order of RWKV-LM's writer.

    `device` is where the numbers are drawn (a GPU makes billions in a moment); each device's generator gives
    its own numbers for the same seed.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    C, V, L = cfg.n_embd, cfg.vocab_size, cfg.n_layer

    def normal(*shape: int, std: float = 1.0) -> Tensor:
        return torch.randn(*shape, generator=g, device=device) * std

    def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return torch.rand(*shape, generator=g, device=device) * (hi - lo) + lo

    def linear(n_out: int, n_in: int) -> Tensor:
        return normal(n_out, n_in, std=n_in**-0.5)

    sd = {"emb.weight": normal(V, C, std=0.5)}
    for i in range(L):
        p, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        for n in (["ln0"] if i == 0 else []) + ["ln1", "ln2"]:
            sd[p + n + ".weight"] = 1 + normal(C, std=0.1)
            sd[p + n + ".bias"] = normal(C, std=0.1)
        if cfg.version == 7:
            for n in "rwkvag":
                sd[a + "x_" + n] = uniform(1, 1, C)
            for n, d in zip("wavg", (cfg.dim_w, cfg.dim_a, cfg.dim_v, cfg.dim_g)):
                sd[a + n + "1"] = normal(C, d, std=0.1)
                sd[a + n + "2"] = normal(d, C, std=0.1)
                if n != "g":
                    sd[a + n + "0"] = uniform(1, 1, C, lo=-6, hi=1) if n == "w" else normal(1, 1, C, std=0.5)
            sd[a + "k_k"] = uniform(1, 1, C, lo=0.5, hi=1.0)
            sd[a + "k_a"] = uniform(1, 1, C, lo=0.5, hi=1.5)
            sd[a + "r_k"] = normal(cfg.n_head, cfg.head_size, std=0.3)
            for n in ("receptance", "key", "value", "output"):
                sd[a + n + ".weight"] = linear(C, C)
            sd[f + "x_k"] = uniform(1, 1, C)
            sd[f + "key.weight"] = linear(cfg.dim_ffn, C)
            sd[f + "value.weight"] = linear(C, cfg.dim_ffn)
        else:
            A = cfg.dim_att
            for n in "xwkvrg":
                sd[a + "time_maa_" + n] = uniform(1, 1, C)
            sd[a + "time_maa_w1"] = normal(C, 5 * cfg.dim_mix, std=0.1)
            sd[a + "time_maa_w2"] = normal(5, cfg.dim_mix, C, std=0.1)
            sd[a + "time_decay"] = uniform(1, 1, A, lo=-6, hi=-1)
            sd[a + "time_decay_w1"] = normal(C, cfg.dim_decay, std=0.1)
            sd[a + "time_decay_w2"] = normal(cfg.dim_decay, A, std=0.1)
            sd[a + "time_faaaa"] = normal(cfg.n_head, cfg.head_size, std=0.3)
            for n in ("receptance", "key", "value", "gate"):
                sd[a + n + ".weight"] = linear(A, C)
            sd[a + "output.weight"] = linear(C, A)
            sd[f + "time_maa_k"] = uniform(1, 1, C)
            sd[f + "time_maa_r"] = uniform(1, 1, C)
            sd[f + "key.weight"] = linear(cfg.dim_ffn, C)
            sd[f + "receptance.weight"] = linear(C, C)
            sd[f + "value.weight"] = linear(C, cfg.dim_ffn)
        sd[a + "ln_x.weight"] = 1 + normal(cfg.dim_att if cfg.version == 6 else C, std=0.1)
        sd[a + "ln_x.bias"] = normal(cfg.dim_att if cfg.version == 6 else C, std=0.1)
    sd["ln_out.weight"] = 1 + normal(C, std=0.1)
    sd["ln_out.bias"] = normal(C, std=0.1)
    sd["head.weight"] = linear(V, C)
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}
