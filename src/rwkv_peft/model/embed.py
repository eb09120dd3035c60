"""The token-embedding lookup both models use, which also serves a frozen table kept in host memory.

A frozen embedding table stays on the CPU while one GPU trains with a quantized base or with CUDA graphs
(train/session.py): the table is 0.25 GiB at 1.5B, 0.5 GiB at 7B, and a step needs only B x T of its rows. The
rows are then gathered on the host and copied over; the trainer does that itself before a CUDA graph replays (a
graph cannot contain the round trip) and passes the embeddings in place of the ids.
"""

from torch import Tensor, nn


def embed(emb: nn.Embedding, tokens: Tensor) -> Tensor:
    """tokens [B, T] ids -> [B, T, C] on the ids' device; tokens already embedded ([B, T, C], floating point)
    pass through unchanged."""
    if tokens.is_floating_point():
        return tokens
    if emb.weight.device == tokens.device:
        return emb(tokens)
    return emb(tokens.to(emb.weight.device)).to(tokens.device, non_blocking=True)
