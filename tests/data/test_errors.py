"""Bad input raises one UserError that names the file, the line and what to do; skip_bad_records counts instead."""

import logging

import pytest

from rwkv_peft.data import build_dataset, make_data
from rwkv_peft.errors import UserError

from .cases import write_jsonl

GOOD = {"text": "fine"}


@pytest.mark.parametrize("line, message", [
    ('{"text": "unterminated', "malformed JSON"),
    ('{"txt": "typo"}', 'no "text", "messages"/"conversations" or "instruction"\\+"output" field; found "txt"'),
    ('{"text": 42}', 'field "text" must be a string, but is a int'),
    ('["a", "list"]', "a record must be a JSON object, not a list"),
    ('{"instruction": "no output"}', 'field "output" must be a string, but is missing'),
    ('{"messages": []}', '"messages" must be a non-empty list'),
    ('{"messages": [{"role": "tool", "content": "x"}]}', "has role 'tool'; accepted roles: user, human"),
    ('{"conversations": [{"from": "human"}]}', 'needs "role" and "content" \\(or "from" and "value"\\)'),
    ('{"text": "\\ud800 lone surrogate"}', "unpaired surrogate"),
])
def test_bad_record_names_file_and_line(tmp_path, tok, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, GOOD], raw_lines={1: line})
    with pytest.raises(UserError, match=message) as e:
        build_dataset(path, "jsonl", tok, ctx_len=16)
    assert f"{path}: line 2: " in str(e.value) and "--skip_bad_records" in str(e.value)


def test_invalid_utf8_line(tmp_path, tok):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(UserError, match="line 2: not valid UTF-8"):
        build_dataset(str(path), "jsonl", tok, ctx_len=16)


def test_skip_bad_records_counts_and_reports(tmp_path, tok, caplog):
    raw = {i: "{broken" for i in (1, 3, 4, 6, 7, 8, 9)}
    path = write_jsonl(tmp_path / "mixed.jsonl", [GOOD] * 11, raw_lines=raw)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(path, "jsonl", tok, ctx_len=16, skip_bad_records=True)
    assert ds.num_docs == 4
    assert f"{path}: skipped 7 bad record(s) (lines 2, 4, 5, 7, 8, ...)" in caplog.text


def test_all_records_bad_or_file_empty(tmp_path, tok):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(UserError, match="empty.jsonl has no records"):
        build_dataset(str(empty), "jsonl", tok, ctx_len=16)
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD], raw_lines={0: "nope"})
    with pytest.raises(UserError, match="bad.jsonl has no usable records"):
        build_dataset(bad, "jsonl", tok, ctx_len=16, skip_bad_records=True)
    with pytest.raises(UserError, match="cannot read data file .*missing.jsonl"):
        build_dataset(str(tmp_path / "missing.jsonl"), "jsonl", tok, ctx_len=16)


def test_bad_options(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD])
    for kwargs, message in [({"data_type": "sft"}, "--data_type 'sft' is not supported; use one of: jsonl"),
                            ({"loss_mask": "se"}, "--loss_mask 'se'"), ({"dataload": "only"}, "--dataload 'only'"),
                            ({"ctx_len": 0}, "--ctx_len must be at least 1")]:
        with pytest.raises(UserError, match=message):
            build_dataset(path, tokenizer=tok, **({"data_type": "jsonl", "ctx_len": 16} | kwargs))


def test_get_needs_enough_tokens_and_a_fitting_magic_prime(tmp_path, tok):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "word " * 200}])
    with pytest.raises(UserError, match="needs at least ctx_len \\+ 1 = 1025"):
        build_dataset(path, "jsonl", tok, ctx_len=1024, dataload="get")
    with pytest.raises(UserError, match=r"--magic_prime 7 does not fit 202 tokens at ctx_len 16.*use --magic_prime 11"):
        build_dataset(path, "jsonl", tok, ctx_len=16, dataload="get", magic_prime=7)


def test_qa_with_nothing_to_train(tmp_path, tok, caplog):
    only_user = {"messages": [{"role": "user", "content": "a question with no answer"}]}
    path = write_jsonl(tmp_path / "q.jsonl", [only_user, {"messages": [{"role": "user", "content": "q"},
                                                                        {"role": "assistant", "content": "a"}]}])
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(path, "jsonl", tok, ctx_len=64, loss_mask="qa")
    assert len(ds.piece_starts) == 1 and "1 of 2 documents have no trained tokens" in caplog.text
    with pytest.raises(UserError, match="nothing to train on"):
        build_dataset(write_jsonl(tmp_path / "u.jsonl", [only_user]), "jsonl", tok, ctx_len=64, loss_mask="qa")


def test_make_data_reports_bad_lines_and_protects_input(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD], raw_lines={1: '{"text": null}'})
    with pytest.raises(UserError, match='d.jsonl: line 2: field "text" must be a string'):
        make_data(path, str(tmp_path / "out"))
    assert not (tmp_path / "out.bin").exists()
    assert make_data(path, str(tmp_path / "out"), skip_bad_records=True).n_items == 1
    odd = write_jsonl(tmp_path / "named.bin", [GOOD])
    with pytest.raises(UserError, match="would overwrite the input"):
        make_data(odd, str(tmp_path / "named"))
