"""Tiny models, data and a CLI runner shared by the training and CLI tests.

The models use a 256-token vocabulary with binidx data of small token ids (fast: no 65536-wide head), except
where a test needs the real World tokenizer (jsonl data, prompts), which uses the full vocabulary at C=64.
"""

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rwkv_peft.cli.main import main
from rwkv_peft.data import write_binidx
from rwkv_peft.model import RWKV6Config, RWKV7Config, write_checkpoint
from rwkv_peft.model.init import random_state_dict

VOCAB = 256
V7 = RWKV7Config(n_layer=2, n_embd=64, vocab_size=VOCAB)
V6 = RWKV6Config(n_layer=2, n_embd=64, vocab_size=VOCAB)
WORLD_V7 = RWKV7Config(n_layer=2, n_embd=64, vocab_size=65536)


def make_base(path: Path, cfg=V7, seed: int = 0) -> Path:
    write_checkpoint(random_state_dict(cfg, seed=seed, dtype=torch.float32), path)
    return path


def make_binidx(prefix: Path, n_docs: int = 200, seed: int = 0, n_phrases: int = 6,
                lengths: tuple[int, int] = (24, 64)) -> str:
    """Easy-to-learn documents: each is one of a few fixed random "phrases" of ids 1..255 (`lengths` long), then
    EOD; a model memorises them quickly, so every method's loss falls clearly within a few dozen steps."""
    rng = np.random.default_rng(seed)
    phrases = [rng.integers(1, VOCAB, rng.integers(lengths[0], lengths[1] + 1)) for _ in range(n_phrases)]
    docs = [np.append(phrases[i], 0).astype(np.uint16) for i in rng.integers(0, n_phrases, n_docs)]
    write_binidx(str(prefix), docs)
    return str(prefix)


def write_chat_jsonl(path: Path, n: int = 48) -> str:
    records = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                             {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
               for a in range(1, 9) for b in range(1, 9)][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@dataclass
class CliRun:
    rc: int
    out: str
    err: str


def run_cli(*args: str) -> CliRun:
    """`rwkv-peft ARGS` in this process (the real parser and entry point), capturing its output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return CliRun(rc, out.getvalue(), err.getvalue())


def train_args(base: Path, data: str, proj: Path, *extra: str, steps: int = 20) -> list[str]:
    """A small binidx training run in the seeds' flag spellings; `extra` flags override."""
    return ["train", "--load_model", base, "--data_file", data, "--data_type", "binidx", "--proj_dir", proj,
            "--ctx_len", "64", "--micro_bsz", "4", "--epoch_steps", str(steps), "--epoch_count", "1",
            "--lr_init", "1e-2", "--lr_final", "1e-3", "--warmup_steps", "2", "--precision", "fp32",
            "--accelerator", "cpu", "--random_seed", "1", "--progress", "none", *extra]


def losses(proj: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (proj / "metrics.jsonl").read_text().splitlines()]


def records(proj: Path) -> list[dict]:
    return [json.loads(line) for line in (proj / "metrics.jsonl").read_text().splitlines()]


def head_tail(values: list[float], n: int = 4) -> tuple[float, float]:
    """Mean of the first n and of the last n values."""
    return sum(values[:n]) / n, sum(values[-n:]) / n
