"""A state file is checked against the base like an adapter: with our adapter_config.json beside it, `merge
--state_checkpoint`, `generate --state` and `eval --state` refuse a state trained on another base (other version of
the same sizes, or other weights) and follow its recorded --quant, exactly as `merge --peft_checkpoint` does on the
same file. RWKV-PEFT's state files (no config) are accepted as before."""

import json
import shutil

import pytest
import torch

from rwkv_peft.cli.main import main
from rwkv_peft.model import write_checkpoint
from rwkv_peft.model.init import random_state_dict

from .cases import CONFIGS


@pytest.fixture(scope="module")
def other_v7(tmp_path_factory):
    """A v7 base of the matrix's sizes with other weights."""
    path = tmp_path_factory.mktemp("other") / "other-v7.pth"
    write_checkpoint(random_state_dict(CONFIGS[7], seed=99, dtype=torch.float32), path)
    return path


def _run(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def _refused(capsys, args, message: str) -> None:
    code, err = _run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def _commands(base, state, tmp_path) -> list[list]:
    text = tmp_path / "val.txt"
    text.write_text("a b c d e f g\n" * 20)
    return [["merge", "--base_model", base, "--state_checkpoint", state, "--output", tmp_path / "o.pth"],
            ["generate", "--model", base, "--state", state, "--prompt", "a", "--max_tokens", "1"],
            ["eval", "--model", base, "--state", state, "--data_file", text, "--data_type", "utf-8",
             "--ctx_len", "8", "--max_batches", "1"]]


def test_state_of_another_version_is_refused(trained, base_files, tmp_path, capsys):
    v6_state = trained("state", 6).adapter_path
    for args in _commands(base_files[7], v6_state, tmp_path):
        _refused(capsys, args, "trained on a different base (RWKV-6 L2 C128")
    assert not (tmp_path / "o.pth").exists()


def test_state_of_other_weights_is_refused_unless_ignored(trained, other_v7, tmp_path, capsys):
    state = trained("state", 7).adapter_path
    for args in _commands(other_v7, state, tmp_path):
        _refused(capsys, args, "fingerprint")
        code, err = _run(capsys, *args, "--ignore_base_fingerprint")
        assert code == 0, err


def test_rwkv_peft_state_file_without_config_is_accepted(trained, other_v7, tmp_path, capsys):
    t = trained("state", 7)
    bare = tmp_path / "rwkv-peft" / "rwkv-0.pth"
    bare.parent.mkdir()
    shutil.copy(t.adapter_path, bare)
    code, err = _run(capsys, "merge", "--base_model", other_v7, "--state_checkpoint", bare, "--output",
                     tmp_path / "m.pth")
    assert code == 0, err
    merged, base = torch.load(tmp_path / "m.pth", weights_only=True), torch.load(other_v7, weights_only=True)
    assert all(torch.equal(merged[k], v) for k, v in base.items())
    assert torch.equal(merged["blocks.1.att.time_state"], t.model.blocks[1].att.time_state.detach())


def test_state_merge_follows_the_recorded_quant_like_the_adapter_path(trained, tmp_path, capsys):
    t = trained("state", 7)
    proj = tmp_path / "int8-run"
    shutil.copytree(t.proj_dir, proj)
    config = json.loads((proj / "adapter_config.json").read_text())
    (proj / "adapter_config.json").write_text(json.dumps(config | {"quant": "int8"}))
    outputs = {}
    for flag in ("--state_checkpoint", "--peft_checkpoint"):
        outputs[flag] = tmp_path / f"m{flag}.pth"
        code = main(["merge", "--base_model", str(t.base_path), flag, str(proj / "rwkv-0.pth"),
                     "--output", str(outputs[flag])])
        assert code == 0 and json.loads(capsys.readouterr().out)["quant"] == "int8"
    a, b = (torch.load(p, weights_only=True) for p in outputs.values())
    base = torch.load(t.base_path, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.att.key.weight"], base["blocks.0.att.key.weight"])  # rounded as in training
