"""Recurrent text generation with the RWKV decoding parameters.

The prompt runs through the model once in sequence mode; then one token at a time carries the state forward.
Sampling follows the `rwkv` package's PIPELINE: top-p/top-k truncation on the untempered distribution, then the
temperature; presence and frequency penalties (ChatRWKV's alpha_presence / alpha_frequency) on tokens already
generated, with their counts decaying by `penalty_decay` every step. Token 0 (end of document) always stops.
"""

import codecs
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from .state import RWKVState


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 0.3
    top_k: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    max_new_tokens: int = 200
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def sample_logits(logits: Tensor, temperature: float, top_p: float, top_k: int,
                  generator: torch.Generator | None = None) -> int:
    """One token id from logits [V]. temperature 0 is greedy."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float(), dim=-1)
    if top_k > 0:
        kth = torch.topk(probs, min(top_k, probs.numel())).values[-1]
        probs = torch.where(probs < kth, 0.0, probs)
    if 0 < top_p < 1:
        # Keep the smallest set of most likely tokens whose mass reaches top_p (ties at the cutoff stay).
        sorted_probs = torch.sort(probs, descending=True).values
        index = int(torch.searchsorted(sorted_probs.cumsum(0), top_p))
        cutoff = sorted_probs[min(index, sorted_probs.numel() - 1)].item()
        probs = torch.where(probs < cutoff, 0.0, probs)
    if temperature != 1.0:
        probs = probs ** (1.0 / temperature)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


@torch.inference_mode()
def generate(model: torch.nn.Module, tokenizer, prompt: str, sampling: Sampling,
             state: RWKVState | None = None) -> Iterator[str]:
    """Yield the continuation of `prompt` piece by piece (whole UTF-8 characters), stopping at token 0, a stop
    string (not included in the output) or max_new_tokens."""
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu")
    if sampling.seed is not None:
        generator.manual_seed(sampling.seed)
    ids = tokenizer.encode(prompt) or [0]
    logits, state = model.forward_with_state(torch.tensor([ids], device=device), state)
    logits = logits[0, -1].float().cpu()
    counts = torch.zeros_like(logits)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # Hold back as many characters as a stop string could still be completing.
    hold = max((len(s) for s in sampling.stop), default=1) - 1
    text, sent, stopped = "", 0, False
    for _ in range(sampling.max_new_tokens):
        adjusted = logits - (counts > 0) * sampling.presence_penalty - counts * sampling.frequency_penalty
        token = sample_logits(adjusted, sampling.temperature, sampling.top_p, sampling.top_k, generator)
        if token == 0:
            break
        counts *= sampling.penalty_decay
        counts[token] += 1
        text += decoder.decode(tokenizer.decode_bytes([token]))
        hits = [i for i in (text.find(s) for s in sampling.stop if s) if i >= 0]
        if hits:
            text, stopped = text[:min(hits)], True
            break
        if len(text) - hold > sent:
            yield text[sent:len(text) - hold]
            sent = len(text) - hold
        logits, state = model.forward_with_state(torch.tensor([[token]], device=device), state)
        logits = logits[0, -1].float().cpu()
    if not stopped:
        text += decoder.decode(b"", final=True)
    if len(text) > sent:
        yield text[sent:]
