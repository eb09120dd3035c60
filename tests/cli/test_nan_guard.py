"""A NaN/inf loss stops the run with a message naming the step and what to try; the last checkpoint survives."""

import torch

from rwkv_peft.model import read_checkpoint, write_checkpoint
from rwkv_peft.train.checkpoint import read_checkpoint_folder

from ..train.helpers import run_cli, train_args


def test_nan_from_the_first_step(base, data, tmp_path):
    sd = read_checkpoint(base)
    sd["blocks.1.ffn.value.weight"] = sd["blocks.1.ffn.value.weight"].clone()
    sd["blocks.1.ffn.value.weight"][0, 0] = float("nan")
    broken = tmp_path / "nan.pth"
    write_checkpoint(sd, broken)
    run = run_cli(*train_args(broken, data, tmp_path / "proj", "--peft", "lora"))
    assert run.rc == 2
    assert "step 1: the loss is nan" in run.err and "--lr_init" in run.err and "no checkpoint" in run.err
    assert not (tmp_path / "proj" / "checkpoint-last").exists()


def test_divergence_keeps_the_last_good_checkpoint(base, data, tmp_path):
    """An absurd learning rate blows the weights up within a few steps; checkpoints were taken every step."""
    proj = tmp_path / "proj"
    run = run_cli(*train_args(base, data, proj, "--peft", "none", "--lr_init", "1e30", "--lr_final", "1e30",
                              "--warmup_steps", "0", "--checkpoint_every", "1", "--gradient_clip_val", "0"))
    assert run.rc == 2, run.err
    error = run.err.strip().splitlines()[-1]
    failed_at = int(error.split("error: step ")[1].split(":")[0])
    assert failed_at >= 2 and "--gradient_clip_val 1.0" in error and "--resume auto" in error
    point = read_checkpoint_folder(proj / "checkpoint-last")
    assert point.step == failed_at - 1
    assert all(torch.isfinite(v).all() for v in point.trainable.values())
    assert (proj / "loss_curve.png").exists()


OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.55 GiB of which 1.2 GiB is free."


def test_out_of_memory_names_the_step_and_what_to_change(base, data, tmp_path, monkeypatch):
    """A GPU out-of-memory error mid-run (simulated: these tests run on the CPU) is one message with the step,
    the settings that lower memory, and the checkpoint to resume from; no traceback."""
    from rwkv_peft.train.loop import Trainer

    launch = Trainer._launch

    def failing_launch(self, batches, index):
        if index == 2:
            raise torch.cuda.OutOfMemoryError(OOM)
        return launch(self, batches, index)

    monkeypatch.setattr(Trainer, "_launch", failing_launch)
    proj = tmp_path / "proj"
    run = run_cli(*train_args(base, data, proj, "--peft", "lora", "--checkpoint_every", "1", "--micro_bsz", "2"))
    assert run.rc == 2 and "Traceback" not in run.err
    error = run.err.strip().splitlines()[-1]
    assert "error: step 3: out of GPU memory" in error and "checkpoint-last (step 2)" in error
    assert all(tip in error for tip in ("--grad_cp 1", "--micro_bsz 1 --accumulate_grad_batches 2", "--quant nf4"))
    assert read_checkpoint_folder(proj / "checkpoint-last").step == 2


def test_out_of_memory_while_loading_suggests_a_smaller_base(base, data, tmp_path, monkeypatch):
    from rwkv_peft.train import loop

    def no_room(self, cfg):
        raise torch.cuda.OutOfMemoryError(OOM)

    monkeypatch.setattr(loop.Trainer, "__init__", no_room)
    run = run_cli(*train_args(base, data, tmp_path / "proj", "--peft", "lora"))
    assert run.rc == 2 and "Traceback" not in run.err
    error = run.err.strip().splitlines()[-1]
    assert "loading the model: out of GPU memory" in error and "--quant nf4" in error and "--grad_cp" not in error
