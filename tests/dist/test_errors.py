"""What a user can get wrong about multi-process training: one clear line each, before any worker starts."""

import pytest
import torch

from rwkv_peft.errors import UserError
from rwkv_peft.train.dist import DistInfo, resolve_device
from rwkv_peft.train.wrap import check_supported, resolve_strategy

from ..train.helpers import run_cli, train_args


def two(base, data, tmp_path, *flags: str):
    return run_cli(*train_args(base, data, tmp_path, "--devices", "2", *flags))


def test_unknown_strategy(base, data, tmp_path):
    run = two(base, data, tmp_path, "--strategy", "horovod")
    assert run.rc == 2 and "'horovod' is not one of auto, ddp, fsdp, deepspeed_stage_1" in run.err


def test_several_machines_need_torchrun_on_each(base, data, tmp_path):
    run = two(base, data, tmp_path, "--num_nodes", "2")
    assert run.rc == 2 and "--nnodes 2 --nproc_per_node 2 --node_rank K" in run.err and "--rdzv_endpoint" in run.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without GPUs")
def test_more_gpus_than_present(base, data, tmp_path):
    run = two(base, data, tmp_path, "--accelerator", "gpu")
    assert run.rc == 2 and "sees no CUDA GPU" in run.err


def test_deepspeed_missing_names_the_extra(base, data, tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec  # a machine without DeepSpeed, whether or not this one has it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else
                        real_find_spec(name, *a))
    run = two(base, data, tmp_path, "--strategy", "deepspeed_stage_1")
    assert run.rc == 2 and "pip install 'rwkv-peft[deepspeed]'" in run.err


def test_unsupported_combinations(base, data, tmp_path):
    run = two(base, data, tmp_path, "--strategy", "fsdp", "--peft", "lora", "--train_type", "infctx")
    assert run.rc == 2 and "use --strategy ddp" in run.err
    with pytest.raises(UserError, match="FSDP does not shard"):
        check_supported("fsdp", infctx=False, state=False, quant="nf4", precision="bf16")
    with pytest.raises(UserError, match="use --precision bf16"):
        check_supported("deepspeed_stage_2", infctx=False, state=False, quant="none", precision="fp16")
    with pytest.raises(UserError, match="use deepspeed_stage_2, ddp or fsdp"):
        check_supported("deepspeed_stage_3_offload", infctx=False, state=True, quant="none", precision="bf16")
    check_supported("ddp", infctx=True, state=True, quant="int8", precision="fp16")


def test_strategy_resolution():
    assert resolve_strategy("deepspeed_stage_1", 1) == "single"  # the seeds' scripts on one device
    assert resolve_strategy("auto", 4) == "ddp"
    assert resolve_strategy("fsdp", 2) == "fsdp"


def test_process_count_must_match_the_launcher():
    with pytest.raises(UserError, match="not started by torchrun"):
        resolve_device("cpu", 2, 1, DistInfo())
    with pytest.raises(UserError, match="the launcher started 4"):
        resolve_device("cpu", 2, 1, DistInfo(rank=1, world_size=4, local_rank=1))
    assert resolve_device("cpu", 1, 1, DistInfo(rank=1, world_size=4, local_rank=1)).type == "cpu"


def test_a_workers_error_is_printed_once(base, tmp_path):
    """Every worker reads the same bad data and stops; the user sees the message once, without the launcher's logs."""
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text":\n')
    args = train_args(base, str(bad), tmp_path / "out", "--data_type", "jsonl", "--devices", "2")
    run = subprocess.run([sys.executable, "-m", "rwkv_peft", *map(str, args)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "line 2: malformed JSON" in lines[0] and "(rank" not in lines[0], run.stderr


def test_differing_worker_errors_name_their_ranks(tmp_path, capsys):
    from rwkv_peft.train.launch import print_worker_errors

    for rank, message in enumerate(["disk full", "bad data", "disk full"]):
        (tmp_path / f"rank-{rank}.txt").write_text(message)
    print_worker_errors(tmp_path)
    assert capsys.readouterr().err.splitlines() == ["rwkv-peft train: error (ranks 0, 2): disk full",
                                                    "rwkv-peft train: error (rank 1): bad data"]
