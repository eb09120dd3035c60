"""End-to-end data preparation speed on CPU: 100 MB of multilingual jsonl -> a training dataset, and -> binidx.

Writes a synthetic jsonl (a mix of plain `text`, chat `messages` and Alpaca records; see sample_text.py) to a
temporary folder, then times `build_dataset` (read + render + tokenize + masks) for `--loss_mask pad` and `qa`,
and `make_data` (one copy). The budget is 60 s for 100 MB on 2 cores.

    python bench/tokenize_bench.py [--mb 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sample_text import documents
from tokenizer_bench import cpu_name

from rwkv_peft.data import build_dataset, make_data
from rwkv_peft.model.tokenizer import Tokenizer


def record(doc: str, rng: random.Random) -> dict:
    """One document as a text, chat or Alpaca record (1/3 each)."""
    parts = doc.split("\n\n")
    kind = rng.randrange(3)
    if kind == 0 or len(parts) < 2:
        return {"text": doc}
    if kind == 1:
        roles = ["user", "assistant"] * len(parts)
        return {"messages": [{"role": r, "content": p} for r, p in zip(roles, parts)]}
    return {"instruction": parts[0], "input": parts[1] if len(parts) > 2 else "", "output": "\n\n".join(parts[2:])}


def write_jsonl(path: str, n_bytes: int) -> int:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record(doc, rng), ensure_ascii=False) + "\n" for doc in documents(n_bytes, seed=0))
    return os.path.getsize(path)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=100)
    args = parser.parse_args()
    tok = Tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.jsonl")
        size = write_jsonl(path, int(args.mb * 1e6))
        print(f"machine: {os.cpu_count()}-core CPU ({cpu_name()}), Python {platform.python_version()}")
        with open(path, encoding="utf-8") as f:
            print(f"input: {size / 1e6:.1f} MB jsonl, {sum(1 for _ in f)} records\n")
        print("| job | seconds | MB/s | tokens |")
        print("|---|---|---|---|")
        for loss_mask in ("pad", "qa"):
            ds, secs = timed(lambda mask=loss_mask: build_dataset(path, "jsonl", tok, ctx_len=4096, loss_mask=mask,
                                                                  dataload="pack"))
            print(f"| build_dataset jsonl, loss_mask {loss_mask}, pack | {secs:.1f} | {size / 1e6 / secs:.1f} | "
                  f"{ds.data_size} |")
            del ds
        result, secs = timed(lambda: make_data(path, os.path.join(tmp, "out"), repeat=1, ctx_len=4096, seed=0))
        print(f"| make_data repeat 1 (incl. round-trip check) | {secs:.1f} | {size / 1e6 / secs:.1f} | "
              f"{result.data_size} |")
        print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
