"""RWKV-LM's `magic_prime` sampling: every ctx_len chunk of the token stream exactly once per pass, spread out.

Sample number ii (1-based, counted over all ranks) starts at chunk `(k * ii**3) mod p`, k = int(p * 0.618...). For a
prime p with p % 3 == 2, x -> x**3 is a bijection mod p, so p consecutive samples visit chunks 0..p-1 once each.
"""

from __future__ import annotations

import logging

from ..errors import UserError

log = logging.getLogger(__name__)

_GOLDEN = 0.6180339887


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def magic_prime(data_size: int, ctx_len: int) -> int | None:
    """The largest prime p <= data_size // ctx_len - 1 with p % 3 == 2, as make_data.py computes it.

    None when the data has fewer than 3 * ctx_len tokens (make_data.py prints nothing then).
    """
    if data_size < 3 * ctx_len:
        return None
    p = data_size // ctx_len - 1
    while not (p % 3 == 2 and is_prime(p)):
        p -= 1
    return p


def check_magic_prime(p: int, data_size: int, ctx_len: int) -> None:
    """RWKV-LM's conditions on --magic_prime, as a UserError that gives the right value.

    RWKV-LM also asserts p / (data_size // ctx_len) > 0.9; that fails for small data even with the value
    make_data.py prints, so here a p below make_data's only warns (the chunks past p are never sampled).
    """
    chunks = data_size // ctx_len
    right = magic_prime(data_size, ctx_len)
    # The last window starts at (p - 1) * ctx_len and needs ctx_len + 1 tokens.
    if not (is_prime(p) and p % 3 == 2 and p * ctx_len + 1 <= data_size):
        hint = f"use --magic_prime {right}" if right else f"get mode with magic_prime needs >= {3 * ctx_len} tokens"
        raise UserError(f"--magic_prime {p} does not fit {data_size} tokens at ctx_len {ctx_len} (it must be a "
                        f"prime with p % 3 == 2 and p * ctx_len < tokens); {hint}")
    if p < right:
        log.warning("--magic_prime %d samples only %d of the data's %d ctx_len chunks; make_data's value %d "
                    "samples %d", p, p, chunks, right, right)


def magic_chunk(p: int, ii: int) -> int:
    """The chunk index of sample number ii (1-based)."""
    return (int(p * _GOLDEN) * ii ** 3) % p
