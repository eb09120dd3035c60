"""jsonl records render with the documented templates and tokenize segment by segment, each ending with EOD."""

import numpy as np
import pytest

from rwkv_peft.data import build_dataset, render_record
from rwkv_peft.data.jsonl import read_jsonl

from .cases import CHATS, write_jsonl


def test_chat_template():
    doc = render_record(CHATS[0])
    assert doc.text == ("System: You are helpful.\n\nUser: Hi!\nHow are you?\n\nAssistant: Fine, thanks.\nAnd you?"
                        "\n\nUser: 写一首诗 😀\n\nAssistant: 床前明月光，\n疑是地上霜。")
    assert doc.structured
    assert [text for text, trained in doc.segments if trained] == [" Fine, thanks.\nAnd you?\n\n", " 床前明月光，\n疑是地上霜。"]


def test_sharegpt_spelling_and_top_level_system():
    doc = render_record({"system": "Be brief.", "conversations": [
        {"from": "human", "value": "  hi\r\n\r\nthere  "}, {"from": "gpt", "value": "yo"}]})
    assert doc.text == "System: Be brief.\n\nUser: hi\nthere\n\nAssistant: yo"


def test_alpaca_templates():
    assert render_record(CHATS[3]).text == "Instruction: Translate to French\n\nInput: Good morning\n\nResponse: Bonjour"
    assert render_record(CHATS[3]).segments[-1] == (" Bonjour", True)
    assert render_record(CHATS[4]).text == "User: Name a color\n\nAssistant: Blue"


def test_text_is_verbatim():
    doc = render_record({"text": "  keep\n\n\n  as is\r\n"})
    assert doc.text == "  keep\n\n\n  as is\r\n" and not doc.structured


def test_chat_has_precedence_over_text():
    assert render_record({"text": "ignored", "messages": [{"role": "user", "content": "q"}]}).text == "User: q"


def test_blank_lines_and_bom_are_ignored(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a"}\n\n   \n{"text": "b"}\n')
    docs, lines = read_jsonl(str(path))
    assert [d.text for d in docs] == ["a", "b"] and lines == [1, 4]


def test_stream_is_segment_tokens_plus_eod(tmp_path, tok):
    records = CHATS + [{"text": "Plain text, 中文 and emoji 🎉."}]
    ds = build_dataset(write_jsonl(tmp_path / "d.jsonl", records), "jsonl", tok, ctx_len=256)
    offsets = ds.stream.doc_offsets
    assert len(offsets) == len(records) + 1 and offsets[0] == 0 and offsets[-1] == ds.data_size
    for d, record in enumerate(records):
        expected = [t for text, _ in render_record(record).segments for t in tok.encode(text)] + [0]
        assert ds.stream.tokens[offsets[d]:offsets[d + 1]].tolist() == expected
    assert ds.stream.tokens.dtype == np.uint16 and ds.stream.trained is None


@pytest.mark.parametrize("data_type", ["utf-8", "txt"])
def test_text_files_one_document_each(tmp_path, tok, data_type):
    (tmp_path / "b.txt").write_text("second\n\nfile", encoding="utf-8")
    (tmp_path / "a.txt").write_text("\ufefffirst file", encoding="utf-8")
    (tmp_path / "skip.md").write_text("not read", encoding="utf-8")
    ds = build_dataset(str(tmp_path), data_type, tok, ctx_len=32)
    docs = [ds.stream.tokens[a:b].tolist() for a, b in zip(ds.stream.doc_offsets[:-1], ds.stream.doc_offsets[1:])]
    assert docs == [tok.encode("first file") + [0], tok.encode("second\n\nfile") + [0]]


def test_utf16_text_file(tmp_path, tok):
    (tmp_path / "a.txt").write_bytes("utf16 文本".encode("utf-16le"))
    ds = build_dataset(str(tmp_path / "a.txt"), "utf-16le", tok, ctx_len=32)
    assert ds.stream.tokens.tolist() == tok.encode("utf16 文本") + [0]
