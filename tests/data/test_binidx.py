"""make_data writes binidx exactly as RWKV-LM does; the reader accepts uint16 and int32 and rejects damage."""

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from rwkv_peft.data import BinIdx, build_dataset, make_data, render_record, write_binidx
from rwkv_peft.errors import UserError

from .cases import CHATS, write_jsonl

RECORDS = CHATS + [{"text": f"Document {i}: 今天 🎉 {'x' * i}"} for i in range(20)]


def independent_read(prefix: str) -> tuple[int, list[list[int]], list[int]]:
    """From the documented layout only: (dtype code, items, doc_idx)."""
    idx = Path(prefix + ".idx").read_bytes()
    magic, version, code, n, n_doc = struct.unpack("<9sQBQQ", idx[:34])
    assert magic == b"MMIDIDX\x00\x00" and version == 1
    dtype = {8: np.uint16, 4: np.int32}[code]
    sizes = np.frombuffer(idx, np.int32, n, 34)
    pointers = np.frombuffer(idx, np.int64, n, 34 + 4 * n)
    doc_idx = np.frombuffer(idx, np.int64, n_doc, 34 + 12 * n)
    data = Path(prefix + ".bin").read_bytes()
    items = [np.frombuffer(data, dtype, s, p).tolist() for s, p in zip(sizes, pointers)]
    return code, items, doc_idx.tolist()


def test_make_data_layout(tmp_path, tok, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
    result = make_data(src, str(tmp_path / "out"), repeat=3, ctx_len=16, seed=1)
    code, items, doc_idx = independent_read(result.prefix)
    assert code == 8 and len(items) == 3 * len(RECORDS) and doc_idx == list(range(len(items) + 1))
    expected = sorted(tuple(tok.encode(render_record(r).text) + [0]) for r in RECORDS)
    for copy in range(3):  # every copy holds each record once, in its own order
        assert sorted(map(tuple, items[copy * len(RECORDS):(copy + 1) * len(RECORDS)])) == expected
    assert items[:len(RECORDS)] != items[len(RECORDS):2 * len(RECORDS)]
    ours = BinIdx(result.prefix)
    assert [ours[i].tolist() for i in range(len(ours))] == items
    assert ours.tokens.tolist() == [t for item in items for t in item]
    assert result.data_size == len(ours.tokens) and result.magic_prime is not None
    assert f"--my_exit_tokens {result.data_size} --magic_prime {result.magic_prime} --ctx_len 16" in capsys.readouterr().out
    assert hashlib.sha256(Path(src).read_bytes()).hexdigest() == digest  # the input is untouched
    assert sorted(os.listdir(tmp_path)) == ["d.jsonl", "out.bin", "out.idx"]  # no temporary files left


def test_make_data_seed_is_reproducible_and_default_prefix(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", RECORDS)
    make_data(src, str(tmp_path / "a"), repeat=2, seed=7)
    result = make_data(src, repeat=2, seed=7)
    assert result.prefix == str(tmp_path / "d")
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "d.bin").read_bytes()


def test_int32_files_read_like_uint16(tmp_path):
    items = [np.array([5, 6, 7, 0]), np.array([65529, 0]), np.array([1, 2, 3, 4, 5, 0])]
    write_binidx(str(tmp_path / "u"), items, np.uint16)
    write_binidx(str(tmp_path / "i"), items, np.int32)
    assert independent_read(str(tmp_path / "i"))[0] == 4
    u, i = BinIdx(str(tmp_path / "u")), BinIdx(str(tmp_path / "i") + ".bin")
    assert i.dtype == np.int32 and u.dtype == np.uint16
    assert i.tokens.tolist() == u.tokens.tolist() == [t for item in items for t in item.tolist()]
    ds = build_dataset(str(tmp_path / "i.idx"), "binidx", ctx_len=4)
    assert ds.stream.doc_offsets.tolist() == [0, 4, 6, 12]


def _pair(tmp_path, dtype=np.uint16):
    prefix = str(tmp_path / "p")
    write_binidx(prefix, [np.array([1, 2, 3, 0]), np.array([4, 5, 0])], dtype)
    return prefix


def _patch(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("offset, data, message", [
    (0, b"NOTMAGIC!", "wrong magic"),
    (9, struct.pack("<Q", 2), "unsupported version 2"),
    (17, b"\x06", "dtype code 6"),
])
def test_bad_index_header(tmp_path, offset, data, message):
    prefix = _pair(tmp_path)
    _patch(prefix + ".idx", offset, data)
    with pytest.raises(UserError, match=message) as e:
        BinIdx(prefix)
    assert prefix + ".idx" in str(e.value) and "make-data" in str(e.value)


def test_truncated_files(tmp_path):
    prefix = _pair(tmp_path)
    with open(prefix + ".bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UserError, match=r"p\.bin is truncated: 10 bytes.* 7 uint16 tokens = 14 bytes"):
        BinIdx(prefix)
    with open(prefix + ".idx", "r+b") as f:
        f.truncate(40)
    with pytest.raises(UserError, match="40 bytes, but its header"):
        BinIdx(prefix)
    with open(prefix + ".idx", "r+b") as f:
        f.truncate(20)
    with pytest.raises(UserError, match="shorter than the 34-byte header"):
        BinIdx(prefix)


def test_missing_and_inconsistent_files(tmp_path):
    with pytest.raises(UserError, match=r"needs .*nothing\.idx, which does not exist"):
        BinIdx(str(tmp_path / "nothing"))
    prefix = _pair(tmp_path)
    _patch(prefix + ".idx", 34 + 8 + 8, struct.pack("<q", 2))  # second pointer: byte 2 instead of 8
    with pytest.raises(UserError, match="sizes and pointers disagree"):
        BinIdx(prefix)


def test_token_ids_outside_vocab(tmp_path):
    prefix = str(tmp_path / "big")
    write_binidx(prefix, [np.array([1, 0]), np.array([3, 70000, 0])], np.int32)
    with pytest.raises(UserError, match=r"token id 70000 at token 3 \(item 1\) is outside the vocabulary"):
        BinIdx(prefix)
