"""Plain text data (`--data_type utf-8|txt|utf-16le`): one document per file.

`data_file` is a text file, or a folder whose `*.txt` files (recursively, in sorted path order) are read. Each file
is one document, taken verbatim, ending with EOD. Splitting on blank lines would cut ordinary prose and code into
fragments, and a file is the natural unit a user controls; for long files use `--dataload get` (random windows over
the whole stream, as RWKV-LM pre-training does) or `pack`, which uses every token; `pad` keeps only the first
ctx_len tokens of each file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .bad_records import BadRecords
from .records import Rendered


def text_files(data_file: str) -> list[Path]:
    """The files a plain-text `data_file` names."""
    path = Path(data_file)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise UserError(f"{data_file} is a folder without .txt files; put the training text in *.txt files")
        return files
    if not path.is_file():
        raise UserError(f"data file {data_file} does not exist")
    return [path]


def read_text(data_file: str, encoding: str = "utf-8", skip_bad_records: bool = False) -> list[Rendered]:
    """A text file or folder -> one plain (unstructured) document per file."""
    bad = BadRecords(data_file, skip_bad_records, unit="file")
    docs = []
    for path in text_files(data_file):
        try:
            text = path.read_bytes().decode(encoding)
        except UnicodeDecodeError as e:
            bad.add(str(path), f"not valid {encoding} at byte {e.start}")
            continue
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from None
        text = text.removeprefix("\ufeff")  # a byte-order mark is not text
        if text:
            docs.append(Rendered(((text, True),), structured=False))
    bad.report()
    if not docs:
        raise UserError(f"{data_file} contains no text")
    return docs
