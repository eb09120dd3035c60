"""Rendered documents -> one token stream, document offsets and (for `qa`) the trained-target mask.

Each segment is tokenized on its own and the pieces are concatenated, so every mask boundary falls exactly on a
token boundary. The World tokenizer is greedy longest-match, so tokenizing a whole string can merge characters
across a segment boundary into one token that would be half prompt, half answer; segment-wise tokenization never
does. It is also what inference sees: the prompt ends at "Assistant:" and the model produces " answer" from there.
(For the templates in `records.py` the two agree anyway; see `chat_mask.py`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
from tqdm import tqdm

from ..model.tokenizer import EOD, Tokenizer
from .chat_mask import ChatMarkers, chat_mask_stream
from .records import Rendered

_EOD_PIECE = [EOD]
_BATCH_SEGMENTS = 4096  # per encode_batch call: large enough to keep all cores busy, small for a live progress bar


@dataclass
class TokenStream:
    """Documents as one stream. Document d is tokens[doc_offsets[d]:doc_offsets[d+1]] and ends with EOD."""

    tokens: np.ndarray  # [S] token ids (uint16 in memory; any integer dtype, possibly memmapped, from binidx)
    doc_offsets: np.ndarray  # [D+1] int64, from 0 to S
    trained: np.ndarray | None  # [S] bool, token j is a trained target; None = every token is


def encode_texts(texts: list[str], tokenizer: Tokenizer, desc: str) -> list[list[int]]:
    """Many texts -> token lists on all cores, with a progress bar on a terminal."""
    out: list[list[int]] = []
    with tqdm(total=sum(len(t) for t in texts), unit="char", unit_scale=True, desc=desc, disable=None) as bar:
        for i in range(0, len(texts), _BATCH_SEGMENTS):
            part = texts[i:i + _BATCH_SEGMENTS]
            out.extend(tokenizer.encode_batch(part))
            bar.update(sum(len(t) for t in part))
    return out


def encode_documents(docs: list[Rendered], tokenizer: Tokenizer, qa: bool, desc: str = "tokenizing") -> TokenStream:
    """Tokenize `docs` segment by segment, append EOD to each, and build the `qa` mask when asked."""
    texts = [text for doc in docs for text, _ in doc.segments]
    pieces = encode_texts(texts, tokenizer, desc)
    seg_count = np.fromiter((len(doc.segments) for doc in docs), dtype=np.int64, count=len(docs))
    seg_end = np.cumsum(seg_count)

    def with_eod():
        start = 0
        for end in seg_end.tolist():
            yield from pieces[start:end]
            yield _EOD_PIECE
            start = end

    piece_len = np.fromiter(map(len, with_eod()), dtype=np.int64, count=len(texts) + len(docs))
    tokens = np.fromiter(chain.from_iterable(with_eod()), dtype=np.uint16, count=int(piece_len.sum()))
    # Piece p of document d sits at index seg_end[d-1] + d + p: each earlier document added one EOD piece.
    doc_piece_end = seg_end + np.arange(1, len(docs) + 1)
    doc_offsets = np.concatenate([[0], np.cumsum(piece_len)[doc_piece_end - 1]])
    return TokenStream(tokens, doc_offsets, _qa_mask(docs, tokens, doc_offsets, piece_len, tokenizer) if qa else None)


def _qa_mask(docs: list[Rendered], tokens: np.ndarray, doc_offsets: np.ndarray, piece_len: np.ndarray,
             tokenizer: Tokenizer) -> np.ndarray:
    """[S] bool: segment flags for structured records, chat markers for plain `text` records."""
    flags = []
    for doc in docs:
        flags.extend(trained for _, trained in doc.segments)
        flags.append(doc.segments[-1][1])  # the EOD is trained iff the document ends in a trained segment
    mask = np.repeat(np.array(flags, dtype=bool), piece_len)
    plain = np.fromiter((not doc.structured for doc in docs), dtype=bool, count=len(docs))
    if plain.any():
        scanned = chat_mask_stream(tokens, doc_offsets, ChatMarkers.from_tokenizer(tokenizer))
        mask = np.where(np.repeat(plain, np.diff(doc_offsets)), scanned, mask)
    return mask
