"""Continuing a run (lora_load / pissa_load) and PiSSA's init are checked as merge checks them: the base's
fingerprint, the recorded alpha, and the init the factors were trained from (pissa_init_fingerprint in
adapter_config.json), through the real CLI. Refusals come before any training step: one line, exit status 2."""

import json
import shutil

import pytest
import torch

from rwkv_peft.model import write_checkpoint

from ..train.helpers import make_base, run_cli, train_args

LORA = '{{"lora_load":"{load}","lora_r":4,"lora_alpha":{alpha},"lora_dropout":0.0}}'
PISSA = '{{"pissa_load":"{load}","pissa_init":"{init}","pissa_r":4,"svd_niter":2}}'


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """A base, another base of the same dims, and a LoRA run (alpha 16) and a PiSSA run of 2 steps on the base."""
    root = tmp_path_factory.mktemp("continue")
    base, other = make_base(root / "base.pth"), make_base(root / "other.pth", seed=1)
    for name, flags in (("lora", ["--peft", "lora", "--lora_config", LORA.format(load="", alpha=16)]),
                        ("pissa", ["--peft", "pissa", "--pissa_config", PISSA.format(load="", init="")])):
        run = run_cli(*train_args(base, data, root / name, *flags, "--plot", "0", steps=2))
        assert run.rc == 0, run.err
    return root, base, other


def _refused(run, message: str) -> None:
    assert run.rc == 2 and run.err.count("\n") == 1 and message in run.err, run.err


def _other_init(root, tmp_path):
    """init_pissa.pth of "another run": the same modules and shapes, other factors."""
    init = torch.load(root / "pissa" / "init_pissa.pth", weights_only=True)
    path = tmp_path / "elsewhere" / "init_pissa.pth"
    path.parent.mkdir()
    write_checkpoint({k: v.flip(0) for k, v in init.items()}, path)
    return path


def test_pissa_load_without_init_uses_the_init_beside_it(runs, data, tmp_path):
    root, base, _ = runs
    load = root / "pissa" / "rwkv-0.pth"
    run = run_cli(*train_args(base, data, tmp_path / "cont", "--peft", "pissa", "--pissa_config",
                              PISSA.format(load=load, init=""), "--lr_init", "1e-12", "--lr_final", "1e-12",
                              "--plot", "0", steps=1))
    assert run.rc == 0, run.err
    assert f"note: pissa_load: continuing from the init it was trained from, {root / 'pissa' / 'init_pissa.pth'}" \
        in (tmp_path / "cont" / "train_log.txt").read_text()
    before = torch.load(root / "pissa" / "init_pissa.pth", weights_only=True)
    after = torch.load(tmp_path / "cont" / "init_pissa.pth", weights_only=True)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    recorded = [json.loads((d / "adapter_config.json").read_text())["pissa_init_fingerprint"]
                for d in (root / "pissa", tmp_path / "cont")]
    assert recorded[0] == recorded[1] and recorded[0].startswith("sha256:")


def test_pissa_load_without_any_init_is_refused(runs, data, tmp_path):
    root, base, _ = runs
    alone = tmp_path / "alone" / "rwkv-0.pth"
    alone.parent.mkdir()
    shutil.copy(root / "pissa" / "rwkv-0.pth", alone)
    run = run_cli(*train_args(base, data, tmp_path / "cont", "--peft", "pissa", "--pissa_config",
                              PISSA.format(load=alone, init=""), steps=1))
    _refused(run, "pissa_load needs the init it was trained from: pass pissa_init (init_pissa.pth of that run)")


def test_another_runs_init_is_refused_where_an_init_is_read(runs, data, tmp_path):
    root, base, _ = runs
    adapter, other = root / "pissa" / "rwkv-0.pth", _other_init(root, tmp_path)
    merge = ["merge", "--base_model", base, "--peft_checkpoint", adapter, "--output", tmp_path / "m.pth"]
    _refused(run_cli(*merge, "--lora_init", other), "is not the init")
    _refused(run_cli("generate", "--model", base, "--adapter", adapter, "--lora_init", other, "--max_tokens", "1"),
             "is not the init")
    _refused(run_cli(*train_args(base, data, tmp_path / "cont", "--peft", "pissa", "--pissa_config",
                                 PISSA.format(load=adapter, init=other), steps=1)), "is not the init")
    assert not (tmp_path / "m.pth").exists()
    assert run_cli(*merge, "--lora_init", root / "pissa" / "init_pissa.pth").rc == 0


def test_configs_without_an_init_fingerprint_keep_working(runs, tmp_path):
    root, base, _ = runs
    old = tmp_path / "old"
    shutil.copytree(root / "pissa", old)
    config = json.loads((old / "adapter_config.json").read_text())
    del config["pissa_init_fingerprint"]
    (old / "adapter_config.json").write_text(json.dumps(config))
    run = run_cli("merge", "--base_model", base, "--peft_checkpoint", old / "rwkv-0.pth", "--output",
                  tmp_path / "m.pth")
    assert run.rc == 0, run.err


def test_lora_load_checks_the_base_fingerprint(runs, data, tmp_path):
    root, _, other = runs
    flags = ["--peft", "lora", "--lora_config", LORA.format(load=root / "lora" / "rwkv-0.pth", alpha=16)]
    _refused(run_cli(*train_args(other, data, tmp_path / "a", *flags, steps=1)), "fingerprint")
    run = run_cli(*train_args(other, data, tmp_path / "b", *flags, "--ignore_base_fingerprint", "1", "--plot", "0",
                              steps=1))
    assert run.rc == 0, run.err


def test_lora_load_with_another_alpha_is_refused(runs, data, tmp_path):
    root, base, _ = runs
    load = root / "lora" / "rwkv-0.pth"
    run = run_cli(*train_args(base, data, tmp_path / "a", "--peft", "lora", "--lora_config",
                              LORA.format(load=load, alpha=32), steps=1))
    _refused(run, "contradicts adapter_config.json (alpha 16)")
    run = run_cli(*train_args(base, data, tmp_path / "b", "--peft", "lora", "--lora_config",
                              LORA.format(load=load, alpha=16), "--plot", "0", steps=1))
    assert run.rc == 0, run.err
