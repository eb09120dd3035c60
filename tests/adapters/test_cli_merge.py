"""The real CLI: `rwkv-peft merge` in our flags and RWKV-PEFT's, `rwkv-peft info` on adapter files, and errors
as one line with exit status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import rwkv_peft
from rwkv_peft import load_model
from rwkv_peft.cli.main import main
from rwkv_peft.model import write_checkpoint

from .cases import max_rel_err

MERGE_RTOL = 1e-5


def test_merge_our_flags(trained, tmp_path, capsys):
    t = trained("lora", 7)
    out = tmp_path / "merged.pth"
    assert main(["merge", "--base_model", str(t.base_path), "--peft_checkpoint", str(t.adapter_path),
                 "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "lora"
    with torch.no_grad():
        assert max_rel_err(load_model(out)(t.tokens), t.adapted_logits) <= MERGE_RTOL


def test_merge_rwkv_peft_flags(trained, tmp_path):
    t = trained("pissa", 6)
    out = tmp_path / "merged.pth"
    assert main(["merge", "--type", "pissa", "--base_model", str(t.base_path), "--lora_checkpoint",
                 str(t.adapter_path), "--lora_init", str(t.proj_dir / "init_pissa.pth"), "--output", str(out),
                 "--quant", "none", "--device", "cpu", "--dtype", "bf16"]) == 0
    merged = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.bfloat16 for v in merged.values())


def test_merge_state_checkpoint_flag(trained, tmp_path):
    t = trained("state", 7)
    out = tmp_path / "merged.pth"
    assert main(["merge", "--type", "state", "--base_model", str(t.base_path), "--state_checkpoint",
                 str(t.adapter_path), "--output", str(out)]) == 0
    assert "blocks.1.att.time_state" in torch.load(out, weights_only=True)


def test_bad_input_is_one_line_exit_2(trained, tmp_path, capsys):
    t = trained("lora", 7)
    cases = [["--peft_checkpoint", str(tmp_path / "missing.pth")],
             ["--peft_checkpoint", str(t.adapter_path), "--quant", "fp8"],
             ["--peft_checkpoint", str(t.adapter_path), "--type", "disha"]]
    for extra in cases:
        code = main(["merge", "--base_model", str(t.base_path), "--output", str(tmp_path / "o.pth"), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("rwkv-peft merge: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o.pth").exists()


def test_python_m_entry_point(trained, tmp_path):
    t = trained("bone", 7)
    env = dict(os.environ, PYTHONPATH=str(Path(rwkv_peft.__file__).parents[1]))
    run = subprocess.run([sys.executable, "-m", "rwkv_peft", "merge", "--base_model", str(t.base_path),
                          "--peft_checkpoint", str(t.adapter_path), "--output", str(tmp_path / "m.pth")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert load_model(tmp_path / "m.pth") is not None


def test_info_describes_adapters(trained, capsys, tmp_path):
    t = trained("state+lora", 6)
    assert main(["info", str(t.adapter_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["kind"], info["method"], info["r"], info["alpha"], info["state"]) == ("adapter", "lora", 8, 32, True)
    assert info["base"]["n_embd"] == 128 and "att.gate" in info["targets"]
    assert main(["info", str(t.proj_dir / "rwkv-0-state.pth")]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "state"
    write_checkpoint({"blocks.0.att.key.disha": torch.zeros(32, 128)}, tmp_path / "rwkv-0.pth")
    assert main(["info", str(tmp_path / "rwkv-0.pth")]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "bone"


def test_merge_refuses_a_whole_model_as_the_adapter(trained, base_files, tmp_path, capsys):
    t = trained("lora", 7)
    code = main(["merge", "--base_model", str(t.base_path), "--peft_checkpoint", str(base_files[6]),
                 "--output", str(tmp_path / "o.pth")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "holds no adapter or state tensors (it looks like a whole model)" in err and ".lora_A" in err
    assert not (tmp_path / "o.pth").exists()


def test_merge_summary_counts_adapted_linears(trained, tmp_path, capsys):
    t = trained("lora", 7)
    assert main(["merge", "--base_model", str(t.base_path), "--peft_checkpoint", str(t.adapter_path),
                 "--output", str(tmp_path / "m.pth")]) == 0
    summary = json.loads(capsys.readouterr().out)
    # 2 layers x the default targets: a count of linear modules, not of blocks.
    assert "layers" not in summary and summary["adapted_linears"] == len(rwkv_peft.adapters.adapter_layers(t.model))
