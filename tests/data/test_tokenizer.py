"""The World tokenizer wrapper gives the official ids and decodes anything without raising."""

import codecs
import os

import pytest
import torch

from rwkv_peft.model.tokenizer import EOD, VOCAB_SIZE

SAMPLE = [
    "Today is a beautiful day. 今天是美好的一天。",
    "User: 你好！\n\nAssistant: こんにちは、세계. Привет, мир! مرحبا بالعالم नमस्ते\n\nUser: ok",
    "Emoji 😀🎉🚀 👩‍👩‍👧‍👦 🇨🇳🇺🇸 ❤️‍🔥 👍🏽 ∑∫√∞",
    "def f(x):\n\treturn {'a': [x ** 2, \"s\\n\"]}\n\n\nclass A:  # comment\n    pass\r\n",
    "", " ", "\n", "\n\n", "\n\n\n\n", "\x00\x01", "a" * 300, "Ünïcödé façade crème brûlée",
    "".join(chr(c) for c in (0x7F, 0x80, 0x7FF, 0x800, 0xFFFD, 0x10000, 0x1F600, 0x10FFFF)),
]


@pytest.fixture(scope="module")
def reference():
    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt"))


def test_known_ids(tok):
    assert tok.encode("Today is a beautiful day. 今天是美好的一天。") == [
        33520, 4600, 332, 59219, 21509, 47, 33, 10381, 11639, 13091, 15597, 11685, 14734, 10250, 11639, 10080]
    assert tok.encode("\n\n") == [261]
    assert (tok.vocab_size, tok.EOD, VOCAB_SIZE, EOD) == (65536, 0, 65536, 0)


def test_ids_equal_official_trie(tok, reference):
    expected = [reference.encode(s) for s in SAMPLE]
    assert [tok.encode(s) for s in SAMPLE] == expected
    assert tok.encode_batch(SAMPLE) == expected
    assert tok.encode_batch([]) == []


def test_token_bytes_equal_official_table(tok, reference):
    assert tok.token_bytes[1:65530] == [reference.idx2token[i] for i in range(1, 65530)]
    assert tok.token_bytes[0] == b"" and tok.token_bytes[65530:] == [b""] * 6


def test_round_trip(tok):
    for s in SAMPLE:
        assert tok.decode(tok.encode(s)) == s


def test_decode_never_raises(tok):
    today = tok.encode("Today")
    # 229 is the lone byte 0xE4: the first byte of a 3-byte character, cut off.
    assert tok.decode(today + [229]) == "Today\ufffd"
    assert tok.decode([0] + today + [0, 65530, 65535, 65536, -1, 10**12]) == "Today"
    assert tok.decode([]) == ""
    assert tok.decode(torch.tensor(today)) == "Today"
    invalid = [256, 255, 193]  # bytes 0xFF 0xFE 0xC0: never valid UTF-8
    assert tok.decode(invalid) == "\ufffd" * 3
    assert tok.decode_bytes(invalid) == b"\xff\xfe\xc0"


def test_streaming_decode_of_split_characters(tok):
    # Byte tokens (id = byte + 1) split the emoji's 4 bytes over 4 tokens; an incremental decoder reassembles them.
    ids = tok.encode("今天") + [b + 1 for b in "😀".encode()]
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces = [decoder.decode(tok.decode_bytes([i])) for i in ids]
    assert "".join(pieces) == "今天😀"
    assert pieces[-2] == ""  # nothing is emitted until the character is complete


def test_unpaired_surrogate_is_a_value_error(tok):
    with pytest.raises(UnicodeEncodeError):
        tok.encode("a\ud800b")
