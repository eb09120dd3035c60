"""Loss masks: `qa` trains exactly the assistant / answer tokens of every turn, `pad`/`none` everything but padding."""

import numpy as np
import pytest

from rwkv_peft.data import IGNORE, batches, build_dataset, make_data, render_record
from rwkv_peft.data.chat_mask import ChatMarkers, chat_mask

from .cases import CHATS, write_jsonl


def expected_labels(record, tok) -> list[int]:
    """Labels of a whole document from its segments: the target token if its segment is trained, else -100."""
    segments = render_record(record).segments
    tokens, trained = [], []
    for text, flag in segments:
        ids = tok.encode(text)
        tokens += ids
        trained += [flag] * len(ids)
    tokens.append(0)
    trained.append(segments[-1][1])
    return [t if m else IGNORE for t, m in zip(tokens[1:], trained[1:])]


def rows_by_first_token(ds, micro_bsz=8):
    """Every pad-mode row of one epoch, as {input tuple: labels list}, padding cut off."""
    out = {}
    for batch in batches(ds, micro_bsz, seed=0):
        for inp, lab in zip(batch.input_ids.tolist(), batch.labels.tolist()):
            out[tuple(inp)] = lab
    return out


def test_qa_trains_exactly_each_assistant_turn(tmp_path, tok):
    ds = build_dataset(write_jsonl(tmp_path / "c.jsonl", CHATS), "jsonl", tok, ctx_len=512, loss_mask="qa")
    rows = list(rows_by_first_token(ds).values())
    for record in CHATS:
        want = expected_labels(record, tok)
        assert any(row[:len(want)] == want and set(row[len(want):]) <= {IGNORE} for row in rows), record


def test_qa_trained_text_is_the_answers(tmp_path, tok):
    ds = build_dataset(write_jsonl(tmp_path / "c.jsonl", CHATS[:1]), "jsonl", tok, ctx_len=512, loss_mask="qa")
    labels = next(batches(ds, 1)).labels[0].tolist()
    trained = [t for t in labels if t != IGNORE]
    assert trained[-1] == 0  # the EOD after the last answer
    assert tok.decode(trained) == " Fine, thanks.\nAnd you?\n\n 床前明月光，\n疑是地上霜。"


def test_alpaca_trains_output_only(tmp_path, tok):
    ds = build_dataset(write_jsonl(tmp_path / "a.jsonl", CHATS[3:4]), "jsonl", tok, ctx_len=512, loss_mask="qa")
    labels = next(batches(ds, 1)).labels[0].tolist()
    assert [t for t in labels if t != IGNORE] == tok.encode(" Bonjour") + [0]


def test_chat_ending_with_user_turn_has_untrained_eod(tmp_path, tok):
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "user", "content": "c"}]}
    assert expected_labels(record, tok)[-1] == IGNORE
    ds = build_dataset(write_jsonl(tmp_path / "c.jsonl", [record]), "jsonl", tok, ctx_len=64, loss_mask="qa")
    assert [t for t in next(batches(ds, 1)).labels[0].tolist() if t != IGNORE] == tok.encode(" b\n\n")


@pytest.mark.parametrize("loss_mask", ["pad", "none"])
def test_pad_and_none_train_every_document_token(tmp_path, tok, loss_mask):
    ds = build_dataset(write_jsonl(tmp_path / "c.jsonl", CHATS), "jsonl", tok, ctx_len=512, loss_mask=loss_mask)
    for inp, lab in rows_by_first_token(ds).items():
        n = sum(1 for t in lab if t != IGNORE)
        assert list(inp[1:n]) == lab[:n - 1] and lab[n - 1] == 0 and set(lab[n:]) <= {IGNORE}


def test_plain_text_without_markers_is_all_trained(tmp_path, tok):
    text = "Just some prose.\nResponse time was 5 ms."
    ds = build_dataset(write_jsonl(tmp_path / "t.jsonl", [{"text": text}]), "jsonl", tok, ctx_len=64, loss_mask="qa")
    assert next(batches(ds, 1)).labels[0].tolist()[:len(tok.encode(text))] == tok.encode(text)[1:] + [0]


def test_text_records_and_binidx_get_the_segment_mask(tmp_path, tok):
    """Rendered chats as plain text (jsonl `text` or make_data binidx): the marker scan recovers the exact mask."""
    texts = [{"text": render_record(r).text} for r in CHATS]
    want = [expected_labels(r, tok) for r in CHATS]
    via_text = build_dataset(write_jsonl(tmp_path / "t.jsonl", texts), "jsonl", tok, ctx_len=512, loss_mask="qa")
    make_data(write_jsonl(tmp_path / "c.jsonl", CHATS), str(tmp_path / "c"), seed=0)
    via_binidx = build_dataset(str(tmp_path / "c"), "binidx", tok, ctx_len=512, loss_mask="qa")
    for ds in (via_text, via_binidx):
        got = [lab for lab in rows_by_first_token(ds).values()]
        for w in want:
            assert any(g[:len(w)] == w for g in got)


def test_marker_scan_edge_cases(tok):
    markers = ChatMarkers.from_tokenizer(tok)
    docs = ["User: q\n\nAssistant: a", "Plain Assistant: not a marker mid-line", "Assistant: x\n\nUser: y"]
    pieces = [tok.encode(d) + [0] for d in docs]
    tokens = np.array([t for p in pieces for t in p])
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    mask = chat_mask(tokens, starts, markers)
    first = mask[:len(pieces[0])]
    assert tok.decode(tokens[:len(pieces[0])][first]) == " a" and first[-1]  # answer and its EOD
    assert mask[starts[1]:starts[2]].all()  # no marker at a line start: plain text
    third = tokens[starts[2]:][mask[starts[2]:]]
    assert tok.decode(third) == " x\n\n" and not mask[-1]
