"""`make-data`: jsonl -> binidx, as RWKV-LM's make_data.py does it.

Same output as `python make_data.py file.jsonl N CTX_LEN`: N copies of the records, each copy shuffled on its own,
every record's text tokenized whole (like make_data.py, not segment-wise: see `chat_mask.py` for why the `qa`
mask still comes out right) plus EOD, stored as uint16 items, doc_idx 0..n, and the --magic_prime line for
RWKV-LM-style `get` training. Beyond make_data.py: chat and Alpaca records are rendered with the templates of
`records.py`, each record is tokenized once (copies reuse the tokens), bad lines are reported by number, the shuffle
can be seeded, and the files are written atomically beside the input (nothing in the working directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..errors import UserError
from ..model.checkpoint import check_output_path
from ..model.tokenizer import Tokenizer
from .binidx import BinIdx, write_binidx
from .encode import TokenStream, encode_documents
from .jsonl import read_jsonl
from .magic_prime import magic_prime
from .records import Rendered


@dataclass(frozen=True)
class MakeDataResult:
    prefix: str  # the files are prefix.bin and prefix.idx
    n_items: int  # records x repeat
    data_size: int  # tokens, EODs included
    ctx_len: int | None
    magic_prime: int | None

    @property
    def train_args(self) -> str:
        """The flags make_data.py prints for `--dataload get` training ("" when the data is too small)."""
        if self.magic_prime is None:
            return ""
        return f"--my_exit_tokens {self.data_size} --magic_prime {self.magic_prime} --ctx_len {self.ctx_len}"


def _check_round_trip(stream: TokenStream, docs: list[Rendered], lines: list[int], path: str,
                      tokenizer: Tokenizer) -> None:
    # make_data.py aborts on a record whose tokens do not decode back to its text; so do we.
    offsets = stream.doc_offsets.tolist()
    for d, doc in enumerate(docs):
        if tokenizer.decode(stream.tokens[offsets[d]:offsets[d + 1] - 1]) != doc.text:
            raise UserError(f"{path}: line {lines[d]}: the text does not survive encode -> decode with the World "
                            f"tokenizer; check the record's characters")


def _copies(stream: TokenStream, repeat: int, seed: int | None) -> Iterator[np.ndarray]:
    """All documents `repeat` times, each copy in its own random order."""
    rng = np.random.default_rng(seed)
    offsets = stream.doc_offsets.tolist()
    for _ in tqdm(range(repeat), desc="writing copies", disable=None):
        for d in rng.permutation(len(offsets) - 1).tolist():
            yield stream.tokens[offsets[d]:offsets[d + 1]]


def make_data(in_jsonl: str, out_prefix: str | None = None, repeat: int = 1, ctx_len: int | None = None,
              seed: int | None = None, skip_bad_records: bool = False,
              tokenizer: Tokenizer | None = None) -> MakeDataResult:
    """Write `out_prefix.bin/.idx` (default: the input path without its extension) from `in_jsonl`.

    repeat: copies of the data (make_data.py's N_EPOCH); ctx_len: for the magic_prime line; seed: None shuffles
    differently every run, as make_data.py does. Tokenizes on all cores (the tokenizer's batch call).
    Prints make_data.py's summary and returns it.
    """
    if repeat < 1:
        raise UserError(f"repeat must be at least 1, got {repeat}")
    prefix = out_prefix or os.path.splitext(in_jsonl)[0]
    if os.path.abspath(in_jsonl) in {os.path.abspath(prefix + ext) for ext in (".bin", ".idx")}:
        raise UserError(f"the output {prefix}.bin/.idx would overwrite the input {in_jsonl}; choose another prefix")
    check_output_path(prefix, "--out", "data")
    tokenizer = tokenizer or Tokenizer()
    docs, lines = read_jsonl(in_jsonl, skip_bad_records)
    whole = [Rendered(((doc.text, True),), structured=False) for doc in docs]
    stream = encode_documents(whole, tokenizer, qa=False, desc=f"tokenizing {in_jsonl}")
    _check_round_trip(stream, docs, lines, in_jsonl, tokenizer)
    data_size = write_binidx(prefix, _copies(stream, repeat, seed), np.uint16)
    written = BinIdx(prefix)
    assert written[0][-1] == 0 and written[len(written) - 1][-1] == 0, "every item must end with EOD"
    result = MakeDataResult(prefix, len(written), data_size, ctx_len,
                            magic_prime(data_size, ctx_len) if ctx_len else None)
    print(f"{prefix}.bin/.idx: {len(docs)} records x {repeat} = {result.n_items} items, {data_size} tokens")
    if result.train_args:
        print(result.train_args)
    elif ctx_len:
        print(f"(fewer than 3 x ctx_len = {3 * ctx_len} tokens: no magic_prime; use --dataload pad or pack)")
    return result
