"""Reading a jsonl file into rendered documents, with line numbers for every error."""

from __future__ import annotations

import json

from ..errors import UserError
from .bad_records import BadRecords
from .records import RecordError, Rendered, render_record


def _check_unicode(doc: Rendered) -> None:
    # JSON can spell unpaired surrogates ("\ud800"): valid JSON, but not text any tokenizer can encode.
    for text, _ in doc.segments:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise RecordError(f"the text contains an unpaired surrogate {text[e.start]!r} (invalid Unicode)") from None


def read_jsonl(path: str, skip_bad_records: bool = False) -> tuple[list[Rendered], list[int]]:
    """A jsonl file -> (documents, their 1-based line numbers). Blank lines are ignored, as make_data.py does.

    Every non-blank line must be a JSON object that `render_record` accepts; anything else raises UserError
    naming the line, or with `skip_bad_records` is skipped and counted in one warning.
    """
    bad = BadRecords(path, skip_bad_records)
    docs, lines = [], []
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"cannot read data file {path}: {e.strerror}") from None
    with f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad.add(line_no, f"not valid UTF-8 at byte {e.start}")
                continue
            if not line.strip():
                continue
            try:
                doc = render_record(json.loads(line))
                _check_unicode(doc)
            except json.JSONDecodeError as e:
                bad.add(line_no, f"malformed JSON ({e.msg} at column {e.colno})")
                continue
            except RecordError as e:
                bad.add(line_no, str(e))
                continue
            docs.append(doc)
            lines.append(line_no)
    bad.report()
    if not docs:
        what = "no usable records" if bad.where else "no records (it is empty or only blank lines)"
        raise UserError(f"{path} has {what}; expected one JSON object per line, e.g. {{\"text\": \"...\"}}")
    return docs, lines
