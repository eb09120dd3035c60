"""Merging a run trained on a quantized base: by default it follows adapter_config.json and the merged model equals
the quantized adapted model; `quant="none"` adds the delta to the original weights instead; overrides are noted;
RWKV-PEFT files (no config) take `--quant`; the CLI; and the error without bitsandbytes."""

import json
import shutil
import sys

import pytest
import torch

from rwkv_peft import load_model, merge
from rwkv_peft.cli.main import main
from rwkv_peft.errors import UserError
from rwkv_peft.model import read_checkpoint
from rwkv_peft.quant import roundtrip
from tests.conftest import rel_err

from ..adapters.cases import CASES, CONFIGS

pytestmark = pytest.mark.usefixtures("needs_bnb")

MATRIX = [pytest.param(case, version, id=f"{case}-v{version}") for case in CASES for version in CONFIGS]
# The merged weight is the same dequantized base (identical codes: the same weights were quantized in training
# and in the merge) plus the delta, summed once in fp32; the adapted model computes those terms in another order.
# What is left is fp32 rounding through two blocks: measured <= 7e-7 (exactly 0 for bat and state, where both
# sides build the same weight). 1e-5 leaves room for other BLAS builds and still catches one flipped code.
MERGE_RTOL = 1e-5
# Merging without rounding leaves out the base's quantization error: measured 0.06-0.19 relative on the logits
# (nf4, every case), the same order as the quantized base's own error. Far above MERGE_RTOL by construction.
UNROUNDED_MIN = 0.02


def merged_logits(path, tokens) -> torch.Tensor:
    with torch.no_grad():
        return load_model(path)(tokens)


@pytest.mark.parametrize("case, version", MATRIX)
def test_merge_follows_the_recorded_quant(quant_run, tmp_path, case, version):
    run = quant_run(case, version)
    assert json.loads((run.adapter_path.parent / "adapter_config.json").read_text())["quant"] == "nf4"
    summary = merge(run.base_path, run.adapter_path, tmp_path / "q.pth")
    assert summary["quant"] == "nf4" and "note" not in summary
    assert rel_err(merged_logits(tmp_path / "q.pth", run.tokens), run.adapted_logits) <= MERGE_RTOL


@pytest.mark.parametrize("case", ["lora", "pissa", "bat", "state"])
def test_merge_without_quant_adds_the_delta_to_the_original_weights(quant_run, tmp_path, case):
    run = quant_run(case, 7)
    summary = merge(run.base_path, run.adapter_path, tmp_path / "n.pth", quant="none")
    assert summary["quant"] == "none" and "trained on a nf4 base" in summary["note"]
    assert rel_err(merged_logits(tmp_path / "n.pth", run.tokens), run.adapted_logits) >= UNROUNDED_MIN
    base, merged = read_checkpoint(run.base_path), read_checkpoint(tmp_path / "n.pth")
    if case == "state":
        assert all(torch.equal(merged[k], v) for k, v in base.items())
    elif case == "lora":
        A, B = (run.model.blocks[0].att.key.get_parameter(n).detach() for n in ("lora_A", "lora_B"))
        expected = base["blocks.0.att.key.weight"] + run.spec.layer.scaling * B @ A
        torch.testing.assert_close(merged["blocks.0.att.key.weight"], expected, rtol=0, atol=1e-6)


def test_merge_rounds_the_linears_without_adapter_too(quant_run, tmp_path):
    """A state run's base was quantized everywhere, so its merge rounds every att/ffn linear, but nothing else."""
    run = quant_run("state", 6)
    merge(run.base_path, run.adapter_path, tmp_path / "q.pth")
    base, merged = read_checkpoint(run.base_path), read_checkpoint(tmp_path / "q.pth")
    key = "blocks.1.ffn.receptance.weight"
    torch.testing.assert_close(merged[key], roundtrip(base[key], "nf4"), rtol=0, atol=0)
    assert torch.equal(merged["head.weight"], base["head.weight"])
    assert torch.equal(merged["blocks.1.att.time_decay"], base["blocks.1.att.time_decay"])


def test_rwkv_peft_file_takes_quant_from_the_flag(quant_run, tmp_path):
    run = quant_run("lora", 7)
    theirs = tmp_path / "theirs" / "rwkv-0.pth"
    theirs.parent.mkdir()
    shutil.copy(run.adapter_path, theirs)
    alpha = run.spec.layer.alpha
    assert merge(run.base_path, theirs, tmp_path / "n.pth", lora_alpha=alpha)["quant"] == "none"
    summary = merge(run.base_path, theirs, tmp_path / "q.pth", lora_alpha=alpha, quant="nf4")
    assert summary["quant"] == "nf4" and "note" not in summary
    assert rel_err(merged_logits(tmp_path / "q.pth", run.tokens), run.adapted_logits) <= MERGE_RTOL


def test_cli_default_override_and_note(quant_run, tmp_path, capsys):
    run = quant_run("bone", 7)
    common = ["merge", "--base_model", str(run.base_path), "--peft_checkpoint", str(run.adapter_path)]
    assert main([*common, "--output", str(tmp_path / "a.pth")]) == 0
    assert json.loads(capsys.readouterr().out)["quant"] == "nf4"
    assert main([*common, "--output", str(tmp_path / "b.pth"), "--quant", "int8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["quant"] == "int8" and "merged with quant int8" in summary["note"]
    assert main([*common, "--output", str(tmp_path / "c.pth"), "--quant", "fp8"]) == 2
    assert "fp8 is not supported" in capsys.readouterr().err


def test_merge_without_bitsandbytes_names_the_extra(quant_run, tmp_path, monkeypatch):
    run = quant_run("lora", 7)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(UserError, match=r"pip install 'rwkv-peft\[quant\]'"):
        merge(run.base_path, run.adapter_path, tmp_path / "q.pth")
    assert not (tmp_path / "q.pth").exists()
    merge(run.base_path, run.adapter_path, tmp_path / "n.pth", quant="none")


@pytest.mark.parametrize("case", ["lora", "pissa", "bone"])
def test_a_mounted_adapter_runs_on_the_base_it_was_trained_on(quant_run, tmp_path, case):
    """load_model (generate, eval) follows adapter_config.json's quant as merge does: mounted == merged."""
    run = quant_run(case, 7)
    merge(run.base_path, run.adapter_path, tmp_path / "q.pth")
    with torch.no_grad():
        mounted = load_model(run.base_path, adapter=run.adapter_path)(run.tokens)
        unrounded = load_model(run.base_path, adapter=run.adapter_path, quant="none")(run.tokens)
    assert rel_err(mounted, merged_logits(tmp_path / "q.pth", run.tokens)) <= MERGE_RTOL
    assert rel_err(unrounded, run.adapted_logits) >= UNROUNDED_MIN
