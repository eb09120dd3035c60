"""`build_dataset`: a data file -> a tokenized, masked `TokenDataset` that the loader cuts into samples.

Everything is tokenized once, up front, and kept in memory as one uint16 stream (binidx stays memory-mapped).
A sample is one or more spans of the stream; a span (start, n) gives inputs tokens[start:start+n] and labels
tokens[start+1:start+n+1], a label being -100 where its target is not trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..model.tokenizer import Tokenizer
from .binidx import BinIdx
from .chat_mask import ChatMarkers, chat_mask_stream
from .encode import TokenStream, encode_documents
from .jsonl import read_jsonl
from .magic_prime import check_magic_prime
from .text import read_text

log = logging.getLogger(__name__)

IGNORE = -100
# --data_type spellings -> (reader, text encoding)
DATA_TYPES = {"jsonl": ("jsonl", None), "json": ("jsonl", None), "binidx": ("binidx", None),
              "utf-8": ("text", "utf-8"), "txt": ("text", "utf-8"), "text": ("text", "utf-8"),
              "utf-16le": ("text", "utf-16le")}
LOSS_MASKS = ("pad", "qa", "none")
DATALOADS = ("pad", "get", "pack")


@dataclass
class TokenDataset:
    """Tokenized data plus how to sample it.

    pieces: for `pad` the first ctx_len (input, label) pairs of every document, for `pack` every document cut into
    ctx_len-pair pieces; piece_starts/piece_lens [P] are their stream offsets and pair counts. Pieces without a
    single trained label are left out. `get` samples windows of the whole stream instead and has no pieces.
    """

    stream: TokenStream
    ctx_len: int
    dataload: str
    loss_mask: str
    source: str
    seed: int = 0
    magic_prime: int | None = None
    piece_starts: np.ndarray | None = None
    piece_lens: np.ndarray | None = None

    @property
    def data_size(self) -> int:
        """Tokens in the stream, EODs included (RWKV-LM's data_size / --my_exit_tokens)."""
        return len(self.stream.tokens)

    @property
    def num_docs(self) -> int:
        return len(self.stream.doc_offsets) - 1

    def span(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs [n], labels [n]) int64 for the n pairs starting at stream offset `start`."""
        tokens = np.asarray(self.stream.tokens[start:start + n + 1], dtype=np.int64)
        labels = tokens[1:].copy()
        if self.stream.trained is not None:
            labels[~self.stream.trained[start + 1:start + n + 1]] = IGNORE
        return tokens[:-1], labels


def _pieces(offsets: np.ndarray, ctx_len: int, first_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Documents [D+1 offsets] -> pieces of at most ctx_len pairs: (starts [P], pair counts [P])."""
    pairs = np.diff(offsets) - 1  # a document of n tokens has n - 1 (input, label) pairs
    keep = pairs > 0
    starts, pairs = offsets[:-1][keep], pairs[keep]
    if first_only:
        return starts, np.minimum(pairs, ctx_len)
    count = -(-pairs // ctx_len)
    first = np.cumsum(count) - count
    k = np.arange(int(count.sum())) - np.repeat(first, count)  # index of the piece within its document
    doc_pairs = np.repeat(pairs, count)
    return np.repeat(starts, count) + k * ctx_len, np.minimum(ctx_len, doc_pairs - k * ctx_len)


def _any_trained(trained: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """[P] bool: does the piece have a trained label (targets trained[start+1 : start+1+len])?"""
    bounds = np.empty(2 * len(starts), dtype=np.int64)
    bounds[0::2], bounds[1::2] = starts + 1, starts + 1 + lens
    # reduceat wants indices < len(trained); its last range runs to the end, which is right if the last piece does.
    ends_at_last = bounds[-1] == len(trained)
    sums = np.add.reduceat(trained, bounds[:-1] if ends_at_last else bounds)
    return sums[0::2] > 0


def _read_stream(data_file: str, reader: str, encoding: str | None, tokenizer: Tokenizer | None, qa: bool,
                 skip_bad_records: bool) -> TokenStream:
    if reader == "binidx":
        data = BinIdx(data_file)
        trained = None
        if qa:
            trained = chat_mask_stream(data.tokens, data.doc_offsets, ChatMarkers.from_tokenizer(tokenizer))
        return TokenStream(data.tokens, data.doc_offsets, trained)
    docs = (read_jsonl(data_file, skip_bad_records)[0] if reader == "jsonl"
            else read_text(data_file, encoding, skip_bad_records))
    return encode_documents(docs, tokenizer, qa, desc=f"tokenizing {data_file}")


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise UserError(f"--{name} {value!r} is not supported; use one of: {', '.join(allowed)}")


def build_dataset(data_file: str, data_type: str = "jsonl", tokenizer: Tokenizer | None = None, ctx_len: int = 1024,
                  loss_mask: str = "pad", dataload: str = "pad", seed: int = 0, skip_bad_records: bool = False,
                  magic_prime: int | None = None) -> TokenDataset:
    """Read, tokenize and mask `data_file`; the result is sampled by `BatchLoader` / `batches`.

    data_type: jsonl | binidx | utf-8 (= txt) | utf-16le. loss_mask: pad = none (train on every document token;
    padding is never trained) | qa (only assistant / answer tokens). dataload: pad (one document per row) |
    pack (whole documents packed per row, state reset at each) | get (random ctx_len windows, RWKV-LM style; with
    magic_prime, RWKV-LM's exact sampling). seed is the loader's default shuffling seed.
    """
    _choice("data_type", data_type, DATA_TYPES)
    _choice("loss_mask", loss_mask, LOSS_MASKS)
    _choice("dataload", dataload, DATALOADS)
    if ctx_len < 1:
        raise UserError(f"--ctx_len must be at least 1, got {ctx_len}")
    reader, encoding = DATA_TYPES[data_type]
    qa = loss_mask == "qa"
    if tokenizer is None and (reader != "binidx" or qa):
        tokenizer = Tokenizer()
    stream = _read_stream(data_file, reader, encoding, tokenizer, qa, skip_bad_records)
    ds = TokenDataset(stream, ctx_len, dataload, loss_mask, data_file, seed)
    if dataload == "get":
        if ds.data_size < ctx_len + 1:
            raise UserError(f"{data_file} has {ds.data_size} tokens; --dataload get needs at least ctx_len + 1 = "
                            f"{ctx_len + 1}. Lower --ctx_len or use --dataload pad")
        if magic_prime:
            check_magic_prime(magic_prime, ds.data_size, ctx_len)
            ds.magic_prime = magic_prime
    else:
        if magic_prime:
            log.warning("--magic_prime is used only by --dataload get; ignored with --dataload %s", dataload)
        _cut_pieces(ds)
    log.info("%s: %d documents, %d tokens, loss_mask %s, dataload %s", data_file, ds.num_docs, ds.data_size,
             loss_mask, dataload)
    return ds


def _cut_pieces(ds: TokenDataset) -> None:
    """Fill ds.piece_starts / piece_lens for pad and pack, and say what is lost."""
    offsets = ds.stream.doc_offsets
    starts, lens = _pieces(offsets, ds.ctx_len, first_only=ds.dataload == "pad")
    if ds.dataload == "pad":
        unused = int((np.diff(offsets) - 1).clip(min=0).sum() - lens.sum())
        if unused:
            log.warning("%s: --dataload pad keeps the first %d (ctx_len) pairs of each document; %d tokens (%.1f%%) "
                        "beyond them are unused (--dataload pack uses them)", ds.source, ds.ctx_len, unused,
                        100 * unused / ds.data_size)
    if ds.stream.trained is not None and len(starts):
        useful = _any_trained(ds.stream.trained, starts, lens)
        if not useful.all():
            log.warning("%s: %d of %d %s have no trained tokens (empty, no assistant turn, or the answer lies beyond "
                        "ctx_len %d) and are skipped", ds.source, int((~useful).sum()), len(starts),
                        "documents" if ds.dataload == "pad" else "pieces", ds.ctx_len)
            starts, lens = starts[useful], lens[useful]
    if len(starts) == 0:
        why = "empty, or without answer tokens within ctx_len (--loss_mask qa)" if ds.stream.trained is not None \
            else "empty"
        raise UserError(f"{ds.source}: nothing to train on: every document is {why}")
    ds.piece_starts, ds.piece_lens = starts, lens
