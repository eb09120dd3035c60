"""Training data: readers, the World-tokenizer encoding, loss masks, batching, and `make-data`.

Formats (`--data_type`)
-----------------------
- `jsonl`: one JSON object per line (blank lines ignored). Accepted records, by precedence:
  - chat: `{"messages": [{"role": "user", "content": "..."}, ...]}`, or `conversations` with `from`/`value`;
    roles `user`/`human`, `assistant`/`gpt`, `system` (plus an optional top-level `"system": "..."`);
  - Alpaca: `{"instruction": ..., "input": ... (optional), "output": ...}`;
  - plain: `{"text": "..."}`, used verbatim.
- `binidx`: `prefix.bin/.idx` (Megatron MMIDIDX, uint16 or int32 tokens), memory-mapped; see `binidx.py`.
- `utf-8` (or `txt`), `utf-16le`: a text file, or a folder of `*.txt` files, one document per file.
Every document ends with EOD (token 0), so the model learns to stop.

Chat template (RWKV World / G1)
-------------------------------
    System: {system}\\n\\nUser: {question}\\n\\nAssistant: {answer}\\n\\nUser: {question 2}\\n\\nAssistant: {answer 2}<EOD>

Turns are separated by one blank line and never contain one: inside a turn, CRLF becomes LF, the text is stripped,
and runs of newlines collapse to a single `\\n` (the G1 template's rule; chat front-ends stop generating at
`\\n\\n`). The System turn appears only when given. An Alpaca record renders as a chat (`User: {instruction}`,
`Assistant: {output}`) when it has no input, and otherwise in the World instruction format
`Instruction: {instruction}\\n\\nInput: {input}\\n\\nResponse: {output}<EOD>`.

Loss masks (`--loss_mask`)
--------------------------
- `pad` and `none` (the same, as in RWKV-PEFT): every next-token target of every document is trained, EOD
  included; padding positions are never trained (label -100).
- `qa`: only the answers: the text after each `Assistant:` (its leading space, the answer, the `\\n\\n` that ends
  the turn) and the EOD after a final answer; Alpaca: the output and its EOD. Plain `text` records and binidx
  tokens are scanned for the same role markers (`chat_mask.py`); text without any `Assistant:`/`Response:`
  marker is trained everywhere.

Batching (`--dataload`) and the `Batch` convention: see `batch.py` and `loader.py`.
- `pad`: one document per row: inputs doc[:ctx_len], labels doc[1:ctx_len+1], -100 beyond the document, pad id 0
  (RWKV-PEFT's semantics); rows are padded to the batch's longest, rounded up to 16 (or to ctx_len: fixed_len).
- `pack`: whole documents packed into rows of ctx_len, documents longer than ctx_len split into ctx_len pieces;
  the batch is flattened to [1, B*T] with `cu_seqlens`, so the model restarts its state at every document.
- `get`: ctx_len windows anywhere in the token stream, crossing documents (RWKV-LM pre-training); with
  `--magic_prime`, RWKV-LM's exact sample order, else seeded uniform random windows.
"""

from .batch import Batch
from .binidx import BinIdx, write_binidx
from .dataset import DATA_TYPES, DATALOADS, IGNORE, LOSS_MASKS, TokenDataset, build_dataset
from .loader import BatchLoader, batches
from .magic_prime import magic_prime
from .make_data import MakeDataResult, make_data
from .records import Rendered, render_record

__all__ = ["DATALOADS", "DATA_TYPES", "IGNORE", "LOSS_MASKS", "Batch", "BatchLoader", "BinIdx", "MakeDataResult",
           "Rendered", "TokenDataset", "batches", "build_dataset", "magic_prime", "make_data", "render_record",
           "write_binidx"]
