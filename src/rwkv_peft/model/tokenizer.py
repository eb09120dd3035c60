"""The RWKV World tokenizer (`rwkv_vocab_v20230424`), used by every RWKV-4/5/6/7 World and G1 model.

Encoding is byte-level greedy longest-prefix matching over a fixed vocabulary: ids 1..256 are the single bytes
0x00..0xFF (so any text encodes), ids 257..65529 are longer byte strings, id 0 is end-of-document (it is not in
the vocabulary file) and ids 65530..65535 are unused rows of the 65536-row embedding.

Encoding goes through `pyrwkv-tokenizer`, a Rust implementation that bundles the vocabulary and has a
multi-threaded `encode_batch`; `bench/tokenizer_bench.py` measured it against the alternatives and checked that
its ids equal the official `rwkv` package's. Decoding does NOT go through the Rust package: its `decode` panics
(a `BaseException` that `except Exception` misses) on invalid UTF-8 or unknown ids, and sampled tokens hit both.
We decode through our own id -> bytes table read from the same bundled vocabulary file, so decoding never fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence

import pyrwkv_tokenizer

VOCAB_SIZE = 65536
EOD = 0
# Ids of the vocabulary file are 1..65529; 0 and 65530.. have no bytes.
_FIRST_UNUSED_ID = 65530


def _parse_vocab_line(line: str) -> tuple[int, bytes]:
    """One `<id> <python literal> <byte length>` line -> (id, token bytes)."""
    first, last = line.index(" "), line.rindex(" ")
    literal = line[first + 1:last]
    # Most literals are a quoted str without escapes; literal_eval on all 65k lines costs ~1 s, this costs ~50 ms.
    if literal[0] in "'\"" and "\\" not in literal:
        token = literal[1:-1].encode("utf-8")
    else:
        value = ast.literal_eval(literal)
        token = value if isinstance(value, bytes) else value.encode("utf-8")
    if len(token) != int(line[last + 1:]):
        raise ValueError(f"vocabulary line {line!r}: byte length does not match")
    return int(line[:first]), token


def load_token_bytes(path: str) -> list[bytes]:
    """The vocabulary file at `path` -> a list of VOCAB_SIZE byte strings, b"" for ids without bytes."""
    table = [b""] * VOCAB_SIZE
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line:
                idx, token = _parse_vocab_line(line)
                table[idx] = token
    return table


class Tokenizer:
    """RWKV World tokenizer: str <-> list of token ids in [0, 65536).

    `encode` never appends EOD; the data pipeline adds it where a document ends.
    """

    vocab_size: int = VOCAB_SIZE
    EOD: int = EOD

    def __init__(self) -> None:
        self._impl = pyrwkv_tokenizer.RWKVTokenizer()
        self._token_bytes: list[bytes] | None = None

    def encode(self, text: str) -> list[int]:
        """Text -> ids. Raises UnicodeEncodeError for text that is not valid Unicode (unpaired surrogates)."""
        return self._impl.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Many texts -> their ids, encoded on all CPU cores. Same error as `encode` if any text is invalid."""
        if not texts:
            return []
        return self._impl.encode_batch(list(texts))

    @property
    def token_bytes(self) -> list[bytes]:
        """id -> the token's bytes (b"" for EOD and unused ids); built on first use (~0.1 s)."""
        if self._token_bytes is None:
            self._token_bytes = load_token_bytes(self._impl.vocab_filepath)
        return self._token_bytes

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the raw bytes they stand for. EOD, unused and out-of-range ids contribute nothing.

        For streaming generation: a token may end in the middle of a multi-byte character, so join the bytes
        of consecutive tokens and decode incrementally (e.g. with codecs.getincrementaldecoder("utf-8")).
        """
        table = self.token_bytes
        if hasattr(ids, "tolist"):  # torch / numpy arrays: plain ints are much faster to index with
            ids = ids.tolist()
        return b"".join(table[i] for i in map(int, ids) if 0 < i < _FIRST_UNUSED_ID)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; never raises. Invalid or partial UTF-8 becomes U+FFFD, EOD and unknown ids are skipped."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
