"""Every method trains through the real CLI with falling loss, and leaves the files the README promises."""

import json

import pytest
import torch

from rwkv_peft.model import read_checkpoint

from ..train.helpers import head_tail, losses, run_cli, train_args

METHODS = {
    "lora": ["--peft", "lora", "--lora_config", '{"lora_load":"","lora_r":8,"lora_alpha":16,"lora_dropout":0.01}',
             "--grad_cp", "1"],
    "pissa": ["--peft", "pissa", "--pissa_config", '{"pissa_load":"","pissa_init":"","pissa_r":8,"svd_niter":4}',
              "--lr_init", "3e-3"],
    "miss": ["--peft", "miss", "--peft_config", '{"r":16}', "--lr_init", "3e-3"],
    "disha_bat": ["--peft", "disha", "--disha_config", '{"mode":"bat","load":"","r":16}', "--lr_init", "3e-3"],
    "state": ["--train_type", "state", "--lr_init", "1", "--lr_final", "0.01", "--warmup_steps", "10"],
    "full": ["--peft", "none", "--lr_init", "3e-3"],
}


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_with_falling_loss(method, base, data, tmp_path):
    proj = tmp_path / method
    run = run_cli(*train_args(base, data, proj, *METHODS[method], "--plot", "0"))
    assert run.rc == 0, run.err
    first, last = head_tail(losses(proj))
    # A state is far less capacity than weights: it falls less in 20 steps on a random base.
    assert last < (0.9 if method == "state" else 0.8) * first, (method, losses(proj))
    assert (proj / "rwkv-0.pth").exists() and (proj / "checkpoint-last" / "checkpoint.json").exists()
    config = json.loads((proj / "adapter_config.json").read_text())
    assert config["method"] == {"miss": "bone", "disha_bat": "bat", "full": "none"}.get(method, method)
    saved = read_checkpoint(proj / "rwkv-0.pth")
    if method == "state":
        assert sorted(saved) == ["blocks.0.att.time_state", "blocks.1.att.time_state"]
    if method == "pissa":
        assert (proj / "init_pissa.pth").exists()
    assert all(v.dtype == torch.float32 for v in saved.values())
    assert "train_log.txt" in {p.name for p in proj.iterdir()}


def test_rwkv6_lora_trains(base_v6, data, tmp_path):
    run = run_cli(*train_args(base_v6, data, tmp_path, *METHODS["lora"], "--plot", "0"))
    assert run.rc == 0, run.err
    first, last = head_tail(losses(tmp_path))
    assert last < 0.8 * first


def test_outputs_summary_and_plot(base, data, tmp_path):
    """The closing summary names the files, metrics.jsonl has one record per step, the PNG is written."""
    run = run_cli(*train_args(base, data, tmp_path, "--peft", "lora", "--epoch_steps", "5", "--epoch_count", "2",
                              "--progress", "lines", "--log_every", "5"))
    assert run.rc == 0, run.err
    assert "step 5/10" in run.err and "done: 10 steps" in run.err and "rwkv-peft merge" in run.err
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.glob("rwkv-*.pth")) == ["rwkv-0.pth", "rwkv-1.pth"]
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 11))
    assert [r["epoch"] for r in recs] == [0] * 5 + [1] * 5
    assert set(recs[0]) >= {"step", "epoch", "loss", "lr", "tokens", "kt_s", "peak_mem_mb", "time"}
    assert recs[-1]["tokens"] > recs[0]["tokens"] > 0
    log = (tmp_path / "train_log.txt").read_text()
    assert '"lr_init": 0.01' in log and "done: 10 steps" in log


def test_progress_bar(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, "--peft", "lora", "--max_steps", "3", "--progress", "bar",
                              "--plot", "0"))
    assert run.rc == 0, run.err
    assert "3/3 " in run.err and "loss=" in run.err and "kt_s=" in run.err
