"""Accumulation, epoch bookkeeping and precision modes through the CLI."""

import json
import math

import pytest

from ..train.helpers import losses, records, run_cli, train_args

LORA = ["--peft", "lora", "--lora_config", '{"lora_r":8,"lora_alpha":16,"lora_dropout":0.0}', "--plot", "0"]


def test_accumulation_equals_a_larger_batch(base, data, tmp_path):
    """micro_bsz 2 x 2 accumulated == micro_bsz 4: the step loss is a token mean over all micro-batches."""
    assert run_cli(*train_args(base, data, tmp_path / "a", *LORA, "--epoch_steps", "6")).rc == 0
    run = run_cli(*train_args(base, data, tmp_path / "b", *LORA, "--micro_bsz", "2",
                              "--accumulate_grad_batches", "2", "--epoch_steps", "12"))
    assert run.rc == 0, run.err
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b, strict=True):
        assert math.isclose(ra["loss"], rb["loss"], rel_tol=1e-5) and ra["tokens"] == rb["tokens"]


def test_epochs_saves_and_epoch_begin(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, *LORA, "--epoch_steps", "3", "--epoch_count", "5",
                              "--epoch_begin", "1", "--epoch_save", "2"))
    assert run.rc == 0, run.err
    # Epochs 1-4 run (epoch 0 counts as done); files at epochs divisible by 2 and the last.
    assert sorted(p.name for p in tmp_path.glob("rwkv-*.pth")) == ["rwkv-2.pth", "rwkv-4.pth"]
    recs = records(tmp_path)
    assert [r["step"] for r in recs] == list(range(4, 16)) and recs[0]["epoch"] == 1
    # The schedule continues where epoch_begin puts it: below the peak from the first step.
    assert recs[0]["lr"] < 1e-2


def test_max_steps_at_an_epoch_end_still_writes_the_adapter(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, *LORA, "--epoch_steps", "3", "--epoch_count", "4",
                              "--epoch_save", "3", "--max_steps", "6"))
    assert run.rc == 0, run.err
    assert sorted(p.name for p in tmp_path.glob("rwkv-*.pth")) == ["rwkv-0.pth", "rwkv-1.pth"]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_trains(base, data, tmp_path, precision):
    run = run_cli(*train_args(base, data, tmp_path, *LORA, "--precision", precision, "--epoch_steps", "8"))
    assert run.rc == 0, run.err
    values = losses(tmp_path)
    assert all(math.isfinite(v) for v in values) and values[-1] < values[0]


@pytest.mark.parametrize("scheme", ["nf4", "int8"])
def test_quantized_base_trains_and_merges_as_trained(base, data, tmp_path, scheme):
    """--quant: LoRA trains on a quantized frozen base; adapter_config.json records it, so merge rounds alike."""
    pytest.importorskip("bitsandbytes")
    run = run_cli(*train_args(base, data, tmp_path, *LORA, "--quant", scheme, "--epoch_steps", "8"))
    assert run.rc == 0, run.err
    values = losses(tmp_path)
    assert values[-1] < values[0]
    assert json.loads((tmp_path / "adapter_config.json").read_text())["quant"] == scheme
    merged = run_cli("merge", "--base_model", base, "--peft_checkpoint", tmp_path / "rwkv-0.pth",
                     "--output", tmp_path / "merged.pth")
    assert merged.rc == 0, merged.err
