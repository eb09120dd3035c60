"""`rwkv-peft demo`, shortened for CI: it trains, fine-tunes with LoRA, merges, generates, and says where."""

import json

from rwkv_peft.model.load import load_base

from ..train.helpers import records, run_cli


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    run = run_cli("demo", "--out", out, "--steps", "8")
    assert run.rc == 0, run.err
    summary = json.loads((out / "demo_summary.json").read_text())
    first, last = summary["losses"]["full"]
    assert last < first - 1.0  # from a random model the loss falls fast
    assert set(summary["answers"]) and all(isinstance(a, str) for a in summary["answers"].values())
    for path in ("2-lora/rwkv-0.pth", "2-lora/adapter_config.json", "2-lora/loss_curve.png",
                 "1-base/loss_curve.png", "merged.pth"):
        assert (out / path).exists(), path
    assert load_base(out / "merged.pth").config.vocab_size == 65536
    assert "[demo] done in" in run.out and str(out / "merged.pth") in run.out and "rwkv-peft generate" in run.out


def test_demo_runs_again_into_the_same_folder(tmp_path):
    """A second demo replaces the first one's training runs (its own stage folders) instead of refusing them."""
    out = tmp_path / "demo"
    for _ in range(2):
        run = run_cli("demo", "--out", out, "--steps", "2")
        assert run.rc == 0, run.err
    assert [r["step"] for r in records(out / "2-lora")] == [1, 2]
    assert (out / "2-lora" / "train_log.txt").read_text().count("=== NEW RUN") == 1
