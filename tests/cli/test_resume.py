"""An interrupted run resumed with --resume auto continues at the right step and matches an uninterrupted run."""

import json

from rwkv_peft.train.checkpoint import read_checkpoint_folder

from ..train.helpers import records, run_cli, train_args

# Resumed and uninterrupted runs do the same float operations in the same order on CPU, so the losses agree to
# rounding; the tolerance only absorbs a different summation order, should a kernel pick one.
RESUME_TOL = 1e-5
# LoRA with dropout (resume must restore the RNG), train_parts, two epochs, a stop in the middle of epoch 1.
FLAGS = ["--peft", "lora", "--lora_config", '{"lora_r":8,"lora_alpha":16,"lora_dropout":0.1}', "--epoch_steps", "8",
         "--epoch_count", "2", "--plot", "0"]


def test_resume_matches_uninterrupted_run(base, data, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_cli(*train_args(base, data, whole, *FLAGS)).rc == 0
    first = run_cli(*train_args(base, data, split, *FLAGS, "--max_steps", "11"))
    assert first.rc == 0, first.err
    assert read_checkpoint_folder(split / "checkpoint-last").step == 11
    second = run_cli(*train_args(base, data, split, *FLAGS, "--resume", "auto"))
    assert second.rc == 0, second.err

    a, b = records(whole), records(split)
    assert [r["step"] for r in b] == list(range(1, 17))  # steps 1-11, then 12-16, no repeats
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra["loss"] - rb["loss"]) <= RESUME_TOL * max(1.0, abs(ra["loss"])), (ra, rb)
        assert ra["lr"] == rb["lr"] and ra["tokens"] == rb["tokens"]
    assert (split / "rwkv-1.pth").read_bytes() != b""
    manifest = json.loads((split / "checkpoint-last" / "checkpoint.json").read_text())
    assert manifest["step"] == 16 and manifest["epoch"] == 2


def test_resume_auto_without_checkpoint_starts_fresh(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, "--peft", "lora", "--max_steps", "2", "--resume", "auto"))
    assert run.rc == 0, run.err
    assert [r["step"] for r in records(tmp_path)] == [1, 2]


def test_resume_refuses_other_adapter_settings(base, data, tmp_path):
    assert run_cli(*train_args(base, data, tmp_path, "--peft", "lora", "--max_steps", "2")).rc == 0
    run = run_cli(*train_args(base, data, tmp_path, "--peft", "miss", "--resume", "auto"))
    assert run.rc == 2 and "other adapter settings" in run.err


def test_resume_from_explicit_path_and_missing_path(base, data, tmp_path):
    assert run_cli(*train_args(base, data, tmp_path / "a", "--peft", "lora", "--max_steps", "3")).rc == 0
    run = run_cli(*train_args(base, data, tmp_path / "b", "--peft", "lora", "--max_steps", "5",
                              "--resume", tmp_path / "a" / "checkpoint-last"))
    assert run.rc == 0, run.err
    assert [r["step"] for r in records(tmp_path / "b")] == [4, 5]
    missing = run_cli(*train_args(base, data, tmp_path / "c", "--peft", "lora", "--resume", tmp_path / "nope"))
    assert missing.rc == 2 and "checkpoint.json" in missing.err


def test_ctrl_c_saves_the_step_it_stopped_at_and_resume_continues(base, data, tmp_path):
    """A first Ctrl-C finishes the step under way and writes checkpoint-last there (not only at the last periodic
    checkpoint); the process exits 130; --resume auto goes on from the next step."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import rwkv_peft

    proj = tmp_path / "p"
    long = [*FLAGS[:4], "--epoch_steps", "400", "--epoch_count", "1", "--plot", "0"]  # far from done at the signal
    args = [str(a) for a in train_args(base, data, proj, *long)][1:]
    env = dict(os.environ, PYTHONPATH=str(Path(rwkv_peft.__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "rwkv_peft", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = proj / "metrics.jsonl"
    deadline = time.time() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping after this step" in err
    done = [r["step"] for r in records(proj)]
    assert read_checkpoint_folder(proj / "checkpoint-last").step == done[-1] < 400
    resumed = run_cli(*train_args(base, data, proj, *long, "--resume", "auto", "--max_steps", str(done[-1] + 2)))
    assert resumed.rc == 0, resumed.err
    assert [r["step"] for r in records(proj)] == list(range(1, done[-1] + 3))
