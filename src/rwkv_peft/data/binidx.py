"""binidx (`prefix.bin` + `prefix.idx`), the Megatron "MMIDIDX" format RWKV-LM's make_data.py writes.

`.bin` is every item's tokens back to back, no header. `.idx` is little-endian:

    9 bytes  magic b"MMIDIDX\\x00\\x00"      u64 version = 1          u8 dtype code (below)
    u64 n_items                              u64 n_doc_idx
    int32[n_items] sizes (tokens per item)   int64[n_items] pointers (byte offset of each item in .bin)
    int64[n_doc_idx] doc_idx (first item of each document, then n_items; make_data writes 0..n_items)

The header is 34 bytes. make_data.py writes uint16 (code 8); json2binidx writes int32 (code 4) for the World
vocabulary; both are read. Everything is memory-mapped, so files larger than RAM work. Each item is one document
(true for both writers); `.bin` is also read as one stream by `--dataload get`, so items must be contiguous.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import UserError

MAGIC = b"MMIDIDX\x00\x00"
HEADER = struct.Struct("<9sQBQQ")  # 34 bytes
# Codes 6 and 7 (float, double) exist in the format but cannot hold token ids.
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
_CHECK_BLOCK = 1 << 26  # tokens per block when scanning a file for out-of-range ids


def binidx_prefix(data_file: str) -> str:
    """Accept `prefix`, `prefix.bin` or `prefix.idx` (users pass all three)."""
    return data_file[:-4] if data_file.endswith((".bin", ".idx")) else data_file


class BinIdx:
    """A memory-mapped binidx pair.

    tokens: [S] the whole .bin as one token stream; doc_offsets: [n_items + 1] int64 token offset of each item.
    """

    def __init__(self, data_file: str, vocab_size: int = 65536) -> None:
        prefix = binidx_prefix(data_file)
        self.idx_path, self.bin_path = prefix + ".idx", prefix + ".bin"
        for path in (self.idx_path, self.bin_path):
            if not os.path.isfile(path):
                raise UserError(f"binidx data needs {path}, which does not exist (data_file is the path without "
                                f".bin/.idx; make it with `rwkv-peft make-data`)")
        self._read_index()
        self._check_tokens(vocab_size)

    def _fail(self, what: str) -> UserError:
        return UserError(f"{self.idx_path}: {what}. The file is damaged or not binidx; re-create it with "
                         f"`rwkv-peft make-data`")

    def _read_index(self) -> None:
        idx_size = os.path.getsize(self.idx_path)
        with open(self.idx_path, "rb") as f:
            head = f.read(HEADER.size)
        if len(head) < HEADER.size:
            raise self._fail(f"only {idx_size} bytes, shorter than the {HEADER.size}-byte header")
        magic, version, code, n_items, n_doc = HEADER.unpack(head)
        if magic != MAGIC:
            raise self._fail(f"wrong magic {magic!r} (expected {MAGIC!r})")
        if version != 1:
            raise self._fail(f"unsupported version {version} (expected 1)")
        if code not in DTYPES:
            raise self._fail(f"dtype code {code} is not an integer token type (uint16 = 8, int32 = 4)")
        if n_items == 0:
            raise self._fail("it holds no documents")
        expected = HEADER.size + 12 * n_items + 8 * n_doc
        if idx_size != expected:
            raise self._fail(f"{idx_size} bytes, but its header ({n_items} items, {n_doc} doc_idx) needs {expected}")
        self.dtype = np.dtype(DTYPES[code])
        self.sizes = np.memmap(self.idx_path, np.int32, "r", HEADER.size, (n_items,))
        self.pointers = np.memmap(self.idx_path, np.int64, "r", HEADER.size + 4 * n_items, (n_items,))
        self.doc_idx = np.memmap(self.idx_path, np.int64, "r", HEADER.size + 12 * n_items, (n_doc,))
        self.doc_offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])
        if (self.sizes < 0).any() or not np.array_equal(self.pointers, self.doc_offsets[:-1] * self.dtype.itemsize):
            raise self._fail("item sizes and pointers disagree (items must be stored back to back)")
        n_tokens = int(self.doc_offsets[-1])
        bin_size = os.path.getsize(self.bin_path)
        if bin_size != n_tokens * self.dtype.itemsize:
            state = "truncated" if bin_size < n_tokens * self.dtype.itemsize else "longer than its index says"
            raise UserError(f"{self.bin_path} is {state}: {bin_size} bytes, but {self.idx_path} lists {n_tokens} "
                            f"{self.dtype.name} tokens = {n_tokens * self.dtype.itemsize} bytes. Re-create the "
                            f"pair with `rwkv-peft make-data` (or copy the complete file)")
        self.tokens = np.memmap(self.bin_path, self.dtype, "r", 0, (n_tokens,))

    def _check_tokens(self, vocab_size: int) -> None:
        if self.dtype.kind == "u" and np.iinfo(self.dtype).max < vocab_size:
            return  # every value of the type is a valid id
        for start in range(0, len(self.tokens), _CHECK_BLOCK):
            block = np.asarray(self.tokens[start:start + _CHECK_BLOCK])
            bad = np.flatnonzero((block < 0) | (block >= vocab_size))
            if len(bad):
                pos = start + int(bad[0])
                item = int(np.searchsorted(self.doc_offsets, pos, side="right")) - 1
                raise UserError(f"{self.bin_path}: token id {int(self.tokens[pos])} at token {pos} (item {item}) is "
                                f"outside the vocabulary [0, {vocab_size}); the file was made with another "
                                f"tokenizer. Re-create it with `rwkv-peft make-data`")

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> np.ndarray:
        """Item i's tokens, [sizes[i]]."""
        return self.tokens[self.doc_offsets[i]:self.doc_offsets[i + 1]]


def write_binidx(prefix: str, items: Iterable[np.ndarray], dtype=np.uint16) -> int:
    """Write `items` (each a 1-D array of token ids) as `prefix.bin/.idx`, one item per document.

    Both files are written to temporary names in the same folder and renamed into place only when complete, so
    an interrupted run never leaves a half-written pair. Returns the number of tokens written.
    """
    dtype = np.dtype(dtype)
    folder = Path(prefix).parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp_bin = tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-", suffix=".bin", delete=False)
    tmp_idx = tmp_bin.name[:-4] + ".idx"
    try:
        sizes = []
        with tmp_bin as f:
            for item in items:
                f.write(np.ascontiguousarray(item, dtype=dtype).tobytes())
                sizes.append(len(item))
        sizes_arr = np.array(sizes, dtype=np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        pointers[1:] = np.cumsum(sizes_arr[:-1], dtype=np.int64) * dtype.itemsize
        with open(tmp_idx, "wb") as f:
            f.write(HEADER.pack(MAGIC, 1, DTYPE_CODES[dtype], len(sizes), len(sizes) + 1))
            f.write(sizes_arr.tobytes())
            f.write(pointers.tobytes())
            f.write(np.arange(len(sizes) + 1, dtype=np.int64).tobytes())
        os.replace(tmp_bin.name, prefix + ".bin")
        os.replace(tmp_idx, prefix + ".idx")
    finally:
        for leftover in (tmp_bin.name, tmp_idx):
            if os.path.exists(leftover):
                os.remove(leftover)
    return int(sizes_arr.sum(dtype=np.int64))
