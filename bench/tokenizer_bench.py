"""Which World-tokenizer package to wrap: speed on this machine's CPU, and ids identical to the official one.

The reference is the `rwkv` pip package's pure-Python TRIE_TOKENIZER (what RWKV-LM's make_data.py uses). Each
candidate must give exactly its ids on a multilingual + emoji + code + random-Unicode sample; then we time
encoding of ~20 MB of synthetic multilingual documents (MB = 1e6 UTF-8 bytes; best of 3 runs): one call per
document, and the package's multi-threaded batch call where it has one (else a thread pool).

    python bench/tokenizer_bench.py            # prints a markdown table
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sample_text import SENTENCES, documents, random_unicode


def _trie():
    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt"))


def candidates() -> dict[str, object]:
    """name -> (encode one, encode many or None)."""
    import pyrwkv_tokenizer
    import rwkv_tokenizer

    py = pyrwkv_tokenizer.RWKVTokenizer()
    rs = rwkv_tokenizer.RWKVTokenizer()
    trie = _trie()
    pool = ThreadPoolExecutor(os.cpu_count())

    def rs_threads(texts: list[str]) -> list[list[int]]:
        # rwkv-tokenizer has no batch call; threads only help if its encode releases the GIL.
        return list(pool.map(rs.encode, texts, chunksize=64))

    return {
        f"rwkv {md.version('rwkv')} TRIE_TOKENIZER": (trie.encode, None),
        f"pyrwkv-tokenizer {md.version('pyrwkv-tokenizer')}": (py.encode, py.encode_batch),
        f"rwkv-tokenizer {md.version('rwkv-tokenizer')}": (rs.encode, rs_threads),
    }


def agreement_sample() -> list[str]:
    edge = ["", " ", "\n", "\n\n", "\n\n\n", "\r\n\r\n", "\t", "\x00", "User: hi\n\nAssistant: hello",
            "Today is a beautiful day. 今天是美好的一天。"]
    return edge + SENTENCES + documents(200_000, seed=1) + [random_unicode(2000, seed=s) for s in range(20)]


def mb_per_s(fn, texts: list[str], n_bytes: int, repeats: int = 3) -> float:
    """Best of `repeats` runs: the machine is shared, the best run is the least disturbed one."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(texts)
        best = min(best, time.perf_counter() - start)
    return n_bytes / 1e6 / best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    sample = agreement_sample()
    docs = documents(20_000_000, seed=0)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    small = docs[: len(docs) // 20]  # the pure-Python reference is ~50x slower: time it on 1/20 of the text
    small_bytes = sum(len(d.encode("utf-8")) for d in small)
    cands = candidates()
    reference = [cands[next(iter(cands))][0](s) for s in sample]

    print(f"machine: {os.cpu_count()}-core CPU ({cpu_name()}), "
          f"Python {platform.python_version()}")
    print(f"agreement sample: {len(sample)} texts, {sum(len(s.encode()) for s in sample)} bytes; "
          f"speed text: {n_bytes / 1e6:.1f} MB in {len(docs)} documents\n")
    print("| package | ids == rwkv TRIE | encode, 1 call per doc (MB/s) | batch on all cores (MB/s) |")
    print("|---|---|---|---|")
    for name, (one, many) in cands.items():
        same = all(one(s) == ref for s, ref in zip(sample, reference))
        if many is not None:
            same = same and many(sample) == reference
        is_ref = name.startswith("rwkv ")
        texts, size = (small, small_bytes) if is_ref else (docs, n_bytes)
        single = mb_per_s(lambda ts, one=one: [one(t) for t in ts], texts, size)
        batch = f"{mb_per_s(many, texts, size):.1f}" if many else "-"
        print(f"| {name} | {'reference' if is_ref else ('yes' if same else 'NO')} | {single:.1f} | {batch} |")


if __name__ == "__main__":
    main()
