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

_BATCH_SEGMENTS = 4096  # per encode_batch call: large enough to keep all cores busy, small for a live progress bar


@dataclass
class TokenStream:
    """Documents as one stream: document d is tokens[doc_offsets[d]:doc_offsets[d+1]].

    Documents read from jsonl/text end with EOD; binidx items do when their writer appended it (make_data does).
    """

    tokens: np.ndarray  # [S] token ids (uint16 in memory; any integer dtype, possibly memmapped, from binidx)
    doc_offsets: np.ndarray  # [D+1] int64, from 0 to S
    trained: np.ndarray | None  # [S] bool, token j is a trained target; None = every token is


def encode_texts(texts: list[str], tokenizer: Tokenizer, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Many texts -> (all their tokens back to back [sum(lens)] uint16, tokens per text [len(texts)] int64).

    Encodes on all cores with a progress bar on a terminal. Each batch's Python lists become numpy at once: a
    Python int costs ~36 bytes against 2, which would make 100 MB of text peak at several GB.
    """
    flat, lens = [], []
    with tqdm(total=sum(len(t) for t in texts), unit="char", unit_scale=True, desc=desc, disable=None) as bar:
        for i in range(0, len(texts), _BATCH_SEGMENTS):
            part = texts[i:i + _BATCH_SEGMENTS]
            ids = tokenizer.encode_batch(part)
            n = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            flat.append(np.fromiter(chain.from_iterable(ids), dtype=np.uint16, count=int(n.sum())))
            lens.append(n)
            bar.update(sum(len(t) for t in part))
    return np.concatenate(flat or [np.zeros(0, np.uint16)]), np.concatenate(lens or [np.zeros(0, np.int64)])


def encode_documents(docs: list[Rendered], tokenizer: Tokenizer, qa: bool, desc: str = "tokenizing") -> TokenStream:
    """Tokenize `docs` segment by segment, append EOD to each, and build the `qa` mask when asked."""
    flat, seg_lens = encode_texts([text for doc in docs for text, _ in doc.segments], tokenizer, desc)
    # next_doc[d]: index of document d+1's first segment; every document has at least one segment
    next_doc = np.cumsum(np.fromiter((len(doc.segments) for doc in docs), dtype=np.int64, count=len(docs)))
    doc_ends = np.cumsum(seg_lens)[next_doc - 1]  # where each document's tokens end in `flat`
    tokens = np.insert(flat, doc_ends, EOD)
    doc_offsets = np.concatenate([[0], doc_ends + np.arange(1, len(docs) + 1)])
    trained = None
    if qa:
        # Pieces in stream order: a document's segments, then its EOD (trained iff its last segment is).
        flags = np.fromiter((f for doc in docs for _, f in doc.segments), dtype=bool, count=len(seg_lens))
        piece_lens = np.insert(seg_lens, next_doc, 1)
        piece_flags = np.insert(flags, next_doc, flags[next_doc - 1])
        trained = _qa_mask(docs, tokens, doc_offsets, np.repeat(piece_flags, piece_lens), tokenizer)
    return TokenStream(tokens, doc_offsets, trained)


def _qa_mask(docs: list[Rendered], tokens: np.ndarray, doc_offsets: np.ndarray, segment_mask: np.ndarray,
             tokenizer: Tokenizer) -> np.ndarray:
    """[S] bool: the segment mask for structured records, chat markers for plain `text` records."""
    plain = np.fromiter((not doc.structured for doc in docs), dtype=bool, count=len(docs))
    if not plain.any():
        return segment_mask
    scanned = chat_mask_stream(tokens, doc_offsets, ChatMarkers.from_tokenizer(tokenizer))
    return np.where(np.repeat(plain, np.diff(doc_offsets)), scanned, segment_mask)
