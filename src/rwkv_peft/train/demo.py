"""`rwkv-peft demo`: the whole workflow on a CPU in a few minutes, with nothing to download.

1. build a tiny RWKV-7 (2 layers, 128 channels, the real 65536-token World vocabulary) with random weights;
2. train it briefly in full on the bundled chat sample (`assets/demo_chat.jsonl`, a few hundred short Q&A
   records) so that it knows the format: this stands in for a pretrained base model;
3. fine-tune that base with LoRA (plus its norms and mixing parameters, RWKV-PEFT's default train_parts) on the
   assistant answers only (`--loss_mask qa`), through the same trainer `rwkv-peft train` uses;
4. merge the adapter into the base, compare the answer loss of base and merged model on the sample, and
   generate answers from the merged file.

It runs on one CPU thread by default: a model this small gains little from intra-op threads, and on a shared or
busy machine threads that wait for each other make every step several times slower.

Every file lands under `out_dir` (a second demo there replaces the first one's files); the function prints what it
does and returns the paths and losses.
"""

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..model import RWKV7Config, write_checkpoint
from ..model.init import random_state_dict
from .config import build_config
from .eval import evaluate_file
from .loop import train
from .metrics import METRICS, PLOT, read_metrics
from .proj_dir import previous_outputs

DEMO_CONFIG = RWKV7Config(n_layer=2, n_embd=128, vocab_size=65536)
PROMPTS = ("What is 3 plus 4?", "What is the opposite of hot?", "What color is grass?")


@dataclass
class DemoResult:
    base: Path
    adapter: Path
    merged: Path
    plot: Path
    losses: dict[str, tuple[float, float]]
    answer_loss: dict[str, float]
    answers: dict[str, str]
    seconds: float


def sample_data() -> Path:
    """The bundled chat sample (jsonl with `messages` records)."""
    return Path(str(resources.files("rwkv_peft") / "assets" / "demo_chat.jsonl"))


def _stage(flags: dict, proj_dir: Path) -> tuple[Path, tuple[float, float]]:
    """Train one stage; returns its adapter file and the mean loss of its first and of its last steps (a tenth
    of the run, at most 10: single batches differ too much in difficulty to compare one with another)."""
    # The stage folder is the demo's own: a previous demo's run there is replaced, so the demo can run again
    # (the trainer refuses to start a new run over an old one).
    if previous_outputs(proj_dir):
        shutil.rmtree(proj_dir)
    train(build_config(flags | {"proj_dir": str(proj_dir)}))
    losses = [r["loss"] for r in read_metrics(proj_dir / METRICS)]
    n = max(1, min(10, len(losses) // 10))
    return proj_dir / "rwkv-0.pth", (sum(losses[:n]) / n, sum(losses[-n:]) / n)


def run_demo(out_dir: str | Path = "rwkv-peft-demo", steps: int = 100, threads: int = 1,
             echo: Callable[[str], None] = print) -> DemoResult:
    """Run the demo into `out_dir`: `steps` optimizer steps per training stage, on `threads` CPU threads."""
    from ..api import load_model, merge
    from ..model.generate import Sampling, generate
    from ..model.tokenizer import Tokenizer

    start = time.time()
    torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = sample_data()
    random_base = out / "tiny-rwkv7-random.pth"
    write_checkpoint(random_state_dict(DEMO_CONFIG, seed=0, dtype=torch.float32), random_base)
    echo(f"[demo] tiny RWKV-7 (L{DEMO_CONFIG.n_layer} C{DEMO_CONFIG.n_embd}, World vocabulary) with random weights: "
         f"{random_base}\n[demo] training data: {data}")
    common = {"data_file": str(data), "data_type": "jsonl", "ctx_len": 96, "micro_bsz": 8, "epoch_steps": steps,
              "epoch_count": 1, "precision": "fp32", "accelerator": "cpu", "random_seed": 0, "warmup_steps": 5,
              "progress": "lines", "log_every": max(1, steps // 6)}

    echo("\n[demo] stage 1/2: full training of the random model, a stand-in for a pretrained base")
    base, pre = _stage(common | {"load_model": str(random_base), "peft": "none", "lr_init": 4e-3, "lr_final": 1e-3},
                       out / "1-base")
    echo("\n[demo] stage 2/2: LoRA fine-tuning of that base on the assistant answers (--loss_mask qa)")
    adapter, lora = _stage(common | {"load_model": str(base), "peft": "lora", "loss_mask": "qa",
                                     "lora_config": '{"lora_r":16,"lora_alpha":32,"lora_dropout":0.0}',
                                     "lr_init": 3e-3, "lr_final": 6e-4}, out / "2-lora")

    merged = out / "merged.pth"
    merge(base, adapter, merged)
    echo(f"\n[demo] merged base + adapter -> {merged}")
    answer_loss = {name: evaluate_file(str(path), str(data), ctx_len=96, micro_bsz=8, loss_mask="qa",
                                       max_batches=10).loss for name, path in (("base", base), ("merged", merged))}
    model = load_model(merged)
    tokenizer = Tokenizer()
    answers = {}
    for question in PROMPTS:
        pieces = generate(model, tokenizer, f"User: {question}\n\nAssistant:",
                          Sampling(temperature=1.0, top_p=0.0, max_new_tokens=24, stop=["\n\n"], seed=0))
        answers[question] = "".join(pieces).strip()
        echo(f"[demo] User: {question}\n       Assistant: {answers[question]}")

    result = DemoResult(base, adapter, merged, out / "2-lora" / PLOT, {"full": pre, "lora": lora}, answer_loss,
                        answers, time.time() - start)
    echo(_report(result, out))
    summary = {"losses": result.losses, "answer_loss": answer_loss, "answers": answers, "seconds": result.seconds}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return result


def _report(r: DemoResult, out: Path) -> str:
    rows = [f"  {'stage (mean loss of the first / last steps)':<44}{'first':>8}{'last':>8}",
            f"  {'1 full training of the random model':<44}{r.losses['full'][0]:>8.3f}{r.losses['full'][1]:>8.3f}",
            f"  {'2 LoRA r=16 on the answers':<44}{r.losses['lora'][0]:>8.3f}{r.losses['lora'][1]:>8.3f}",
            f"  {'answer loss of base -> merged model':<44}{r.answer_loss['base']:>8.3f}"
            f"{r.answer_loss['merged']:>8.3f}"]
    return "\n".join([f"\n[demo] done in {r.seconds:.0f}s. Loss:", *rows, "[demo] files:",
                      f"  {r.base}  <- the small base (stage 1)",
                      f"  {r.adapter}  <- the LoRA adapter (+ adapter_config.json)",
                      f"  {r.merged}  <- base + adapter merged, an ordinary RWKV-7 .pth",
                      f"  {r.plot}  <- loss and learning-rate curves (also {out / '1-base' / PLOT})",
                      f"  {out}/*/metrics.jsonl, train_log.txt  <- per-step metrics and logs",
                      "[demo] next: rwkv-peft generate --model "
                      f"{r.base} --adapter {r.adapter} --chat --prompt 'What is 2 plus 2?'"])
