"""The README's path on chat jsonl with the real World tokenizer: train (with validation and samples), merge,
generate from the merged file and with the adapter mounted, evaluate."""

import json

import pytest

from ..train.helpers import WORLD_V7, make_base, records, run_cli, write_chat_jsonl


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    base = make_base(root / "base.pth", WORLD_V7)
    data = write_chat_jsonl(root / "chat.jsonl")
    proj = root / "proj"
    run = run_cli("train", "--load_model", base, "--data_file", data, "--data_type", "jsonl", "--proj_dir", proj,
                  "--ctx_len", "64", "--micro_bsz", "4", "--epoch_steps", "6", "--epoch_count", "1",
                  "--lr_init", "1e-2", "--lr_final", "1e-2", "--precision", "fp32", "--accelerator", "cpu",
                  # A fixed seed: with a drawn one a run can train an adapter whose greedy reply starts with the end
                  # token, and the generate test below sees an empty reply (CI, session 24).
                  "--random_seed", "1",
                  "--peft", "lora", "--lora_config", '{"lora_r":8,"lora_alpha":16,"lora_dropout":0.0}',
                  "--loss_mask", "qa", "--val_file", data, "--val_every", "3", "--val_batches", "2",
                  "--sample_prompt", "User: What is 2 plus 2?\n\nAssistant:", "--sample_tokens", "8",
                  "--progress", "none", "--plot", "0")
    assert run.rc == 0, run.err
    return root, base, data, proj


def test_validation_and_samples_are_logged(trained):
    _, _, _, proj = trained
    val = [r for r in records(proj) if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6]
    assert all(r["val_ppl"] > 1 for r in val)
    log = (proj / "train_log.txt").read_text()
    assert "validation @ step 3" in log and "sample @ step 6: 'User: What is 2 plus 2?" in log


def test_merge_then_generate_matches_mounted_adapter(trained):
    root, base, _, proj = trained
    merged = root / "merged.pth"
    run = run_cli("merge", "--base_model", base, "--peft_checkpoint", proj / "rwkv-0.pth", "--output", merged)
    assert run.rc == 0, run.err
    greedy = ["--prompt", "What is 3 plus 4?", "--chat", "--max_tokens", "12", "--temperature", "0"]
    from_merged = run_cli("generate", "--model", merged, *greedy)
    mounted = run_cli("generate", "--model", base, "--adapter", proj / "rwkv-0.pth", *greedy)
    assert from_merged.rc == 0 and mounted.rc == 0, from_merged.err + mounted.err
    assert from_merged.out == mounted.out and from_merged.out.strip()


def test_eval_reports_lower_loss_with_the_adapter(trained):
    _, base, data, proj = trained
    common = ["--data_file", data, "--ctx_len", "64", "--loss_mask", "qa", "--max_batches", "4"]
    plain = run_cli("eval", "--model", base, *common)
    adapted = run_cli("eval", "--model", base, "--adapter", proj / "rwkv-0.pth", *common)
    assert plain.rc == 0 and adapted.rc == 0, plain.err + adapted.err
    a, b = json.loads(plain.out), json.loads(adapted.out)
    assert set(a) == {"loss", "ppl", "tokens", "batches"} and a["tokens"] == b["tokens"] > 0
    assert b["loss"] < a["loss"]
