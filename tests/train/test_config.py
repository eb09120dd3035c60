"""Config: precedence, type conversion, the seeds' flags, recipes, and the errors a user can hit."""

from pathlib import Path

import pytest

from rwkv_peft.errors import UserError
from rwkv_peft.train.config import build_config, read_recipe

from .helpers import run_cli, train_args

REQUIRED = {"load_model": "base.pth", "data_file": "data.jsonl"}
RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*/*.yaml"))


def test_precedence_defaults_recipe_flags_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr_init: 1e-4\n  lr_final: 1.0e-5\ndata:\n  micro_bsz: 8\n  ctx_len: 256\n")
    cfg = build_config(REQUIRED | {"micro_bsz": "2"}, str(recipe), ["data.ctx_len=128", "lr_final=2e-6"])
    assert cfg.optim.lr_init == 1e-4  # YAML's "1e-4" is a string to PyYAML; read as the number it means
    assert cfg.data.micro_bsz == 2 and cfg.data.ctx_len == 128 and cfg.optim.lr_final == 2e-6
    assert cfg.optim.beta2 == 0.99  # untouched default


def test_seed_flag_spellings():
    cfg = build_config(REQUIRED | {"grad_cp": "1", "train_parts": ["time", "ln"], "pre_ffn": "0", "head_qk": "0",
                                   "lora_config": '{"lora_r":32}', "my_testing": "x070", "lr_schedule": "cos"})
    assert cfg.model.grad_cp == 1.0 and cfg.adapter.train_parts == ["time", "ln"]
    assert cfg.adapter.lora_config == '{"lora_r":32}'


@pytest.mark.parametrize("flags, overrides, message", [
    ({}, ["optim.lr_initial=1e-4"], "unknown setting 'optim.lr_initial'; did you mean optim.lr_init?"),
    ({}, ["data.lr_init=1e-4"], "unknown setting 'data.lr_init'"),
    ({}, ["micro_bsz=abc"], "override micro_bsz=abc: expected an integer, got 'abc'"),
    ({"ctx_len": "1.5"}, [], "--ctx_len: expected an integer"),
    ({"grad_cp": "maybe"}, [], "--grad_cp: expected a share from 0 to 1 (or true/false)"),
    ({"grad_cp": "1.5"}, [], "--grad_cp: expected a share from 0 to 1"),
    ({"precision": "fp8"}, [], "'fp8' is not one of bf16, fp16, fp32, tf32"),
    ({"pre_ffn": "1"}, [], "--pre_ffn 1: a RWKV-4 option"),
    ({"head_qk": "1"}, [], "--head_qk 1"),
    ({"my_testing": "x052"}, [], "RWKV-7 (x070) and RWKV-6 (x060)"),
    ({"epoch_begin": "3", "epoch_count": "3"}, [], "--epoch_begin 3 must be below --epoch_count 3"),
    ({"train_type": "infctx", "dataload": "pack"}, [], "use --dataload pad or get"),
    ({}, ["lr_init"], "is not key=value"),
])
def test_config_errors(flags, overrides, message):
    with pytest.raises(UserError) as e:
        build_config(REQUIRED | flags, None, overrides)
    assert message in str(e.value)


def test_recipe_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr_init: fast\n")
    with pytest.raises(UserError, match=r"bad.yaml: optim.lr_init: expected a number, got 'fast'"):
        build_config(REQUIRED, str(bad))
    bad.write_text("optimizer:\n  lr_init: 1\n")
    with pytest.raises(UserError, match="unknown section 'optimizer'; sections are model, data, adapter"):
        build_config(REQUIRED, str(bad))
    bad.write_text("optim: 3\n")
    with pytest.raises(UserError, match="section 'optim' must be a mapping"):
        build_config(REQUIRED, str(bad))
    with pytest.raises(UserError, match="no such file"):
        build_config(REQUIRED, str(tmp_path / "missing.yaml"))
    with pytest.raises(UserError, match="no base model"):
        build_config({"data_file": "d"})


def test_sizes_and_version_are_checked_against_the_checkpoint(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, "--n_embd", "768"))
    assert run.rc == 2 and "--n_embd 768 disagrees with" in run.err and "n_embd=64" in run.err
    run = run_cli(*train_args(base, data, tmp_path, "--my_testing", "x060"))
    assert run.rc == 2 and "is an RWKV-7 (x070) model" in run.err
    run = run_cli(*train_args(base, data, tmp_path, "--n_layer", "2", "--n_embd", "64", "--vocab_size", "256",
                              "--my_testing", "x070", "--max_steps", "1", "--plot", "0"))
    assert run.rc == 0, run.err


def test_unsupported_requests_are_errors(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, "--num_nodes", "2"))
    assert run.rc == 2 and "torchrun --nnodes 2" in run.err, run.err
    assert "WKV backends" in run_cli(*train_args(base, data, tmp_path, "--op", "cuda_magic")).err


def test_a_backend_that_cannot_run_here_fails_before_training(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, "--op", "wind", "--max_steps", "1"))
    assert run.rc == 2 and "backend 'wind' for wkv7: it needs a CUDA device" in run.err, run.err
    assert "schedule:" not in run.err + run.out


def test_rwkv_peft_operator_names_run(base, data, tmp_path):
    """RWKV-PEFT's scripts pass --op cuda (its default) or triton: they run as auto (here on the CPU: torch)."""
    run = run_cli(*train_args(base, data, tmp_path, "--op", "cuda", "--max_steps", "1"))
    assert run.rc == 0, run.err
    for flag in (["--wandb", "my-project"], ["--tensorboard"]):
        run = run_cli(*train_args(base, data, tmp_path / flag[0][2:], *flag, "--max_steps", "1"))
        assert run.rc == 2 and "pip install 'rwkv-peft[log]'" in run.err, run.err


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipes_load_and_open_with_their_command(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith(f"# rwkv-peft train --config recipes/{recipe.parent.name}/{recipe.name} load_model=")
    assert set(read_recipe(recipe))  # known sections only; values converted below
    cfg = build_config({}, str(recipe), ["load_model=x.pth", "data_file=y"])
    assert cfg.model.n_layer > 0 and cfg.optim.lr_init > 0
    assert cfg.adapter.peft in ("lora", "pissa", "miss") or cfg.adapter.train_type == "state"


def test_every_recipe_size_and_method_exists():
    names = {f"{p.parent.name}/{p.stem}" for p in RECIPES}
    assert names == {f"rwkv7-{s}/{m}" for s in ("0.1b", "0.4b", "1.5b", "2.9b", "7b")
                     for m in ("lora", "pissa", "miss", "state")}
