"""What a user can get wrong gives one clear UserError that names the problem, never a silent wrong result."""

import json

import pytest
import torch

from rwkv_peft import UserError, adapters, load_model, merge
from rwkv_peft.model import RWKV7Config, write_checkpoint
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.model.load import load_base

from .cases import CONFIGS


@pytest.fixture
def lora_run(base_files, tmp_path):
    """An untrained LoRA run on the tiny v7 base: (base path, adapter path)."""
    spec = adapters.spec_from_flags({"peft": "lora", "peft_config": '{"r":4}'})
    model = load_base(base_files[7])
    adapters.apply_adapter(model, spec)
    return base_files[7], adapters.save_adapter(model, spec, tmp_path / "proj", 0, base_files[7])


def _other_base(tmp_path, n_embd: int, seed: int):
    path = tmp_path / f"other-{n_embd}-{seed}.pth"
    write_checkpoint(random_state_dict(RWKV7Config(n_layer=2, n_embd=n_embd, vocab_size=1000), seed=seed,
                                       dtype=torch.float32), path)
    return path


def test_adapter_for_other_dims(lora_run, tmp_path):
    _, adapter = lora_run
    other = _other_base(tmp_path, 64, 7)
    with pytest.raises(UserError, match="different base.*C128.*C64"):
        merge(other, adapter, tmp_path / "out.pth")
    with pytest.raises(UserError, match="different base"):
        load_model(other, adapter=adapter)


def test_adapter_for_other_base_same_dims(lora_run, tmp_path):
    _, adapter = lora_run
    other = _other_base(tmp_path, 128, 99)
    with pytest.raises(UserError, match="fingerprint"):
        merge(other, adapter, tmp_path / "out.pth")
    merge(other, adapter, tmp_path / "out.pth", check_fingerprint=False)


def test_config_less_file_for_other_dims(tmp_path, lora_run):
    _, adapter = lora_run
    (adapter.parent / "adapter_config.json").unlink()
    with pytest.raises(UserError, match="shape"):
        merge(_other_base(tmp_path, 64, 7), adapter, tmp_path / "out.pth", lora_alpha=32)


@pytest.mark.parametrize("edit, message", [({"r": 16}, "r=16 but the tensors have rank 4"),
                                           ({"method": "bone"}, "says method 'bone'"),
                                           ({"state": True}, "state=True"),
                                           ({"targets": ["att.key"]}, "targets")])
def test_config_contradicting_file(lora_run, tmp_path, edit, message):
    base, adapter = lora_run
    config_path = adapter.parent / "adapter_config.json"
    config_path.write_text(json.dumps(json.loads(config_path.read_text()) | edit))
    with pytest.raises(UserError, match=message):
        merge(base, adapter, tmp_path / "out.pth")


def test_lora_alpha_contradicting_config(lora_run, tmp_path):
    base, adapter = lora_run
    with pytest.raises(UserError, match="contradicts adapter_config.json"):
        merge(base, adapter, tmp_path / "out.pth", lora_alpha=16)


def test_config_less_lora_needs_alpha(lora_run, tmp_path):
    base, adapter = lora_run
    (adapter.parent / "adapter_config.json").unlink()
    with pytest.raises(UserError, match="--lora_alpha"):
        merge(base, adapter, tmp_path / "out.pth")
    with pytest.raises(UserError, match="init_pissa.pth"):
        merge(base, adapter, tmp_path / "out.pth", method="pissa")


@pytest.mark.parametrize("flags, message", [
    ({"peft": "disha", "disha_config": '{"mode":"mode","load":"","r":64}'}, "mode 'mode' is not valid"),
    ({"peft": "miss", "peft_config": '{"init_weights":"mini"}'}, "init_weights 'mini'"),
    ({"peft": "lora", "lora_config": '{"lora_rank":8}'}, "unknown key 'lora_rank'"),
    ({"peft": "lora", "peft_config": '{"r":8'}, "not valid JSON"),
    ({"peft": "lora", "peft_config": '{"r":0}'}, "positive integer"),
    ({"peft": "state", "peft_config": '{"r":8}'}, "no meaning with --peft state"),
    ({"peft": "adalora"}, "--peft 'adalora' is not known"),
    ({"peft": "lora", "train_parts": ["time", "norm"]}, "unknown train part 'norm'"),
    ({"peft": "lora", "quant": "int4"}, "unknown quant"),
    ({"train_type": "states"}, "--train_type 'states'"),
])
def test_invalid_flags(flags, message):
    with pytest.raises(UserError, match=message):
        adapters.spec_from_flags(flags)


def test_impossible_layer_shapes(base_files):
    model = load_base(base_files[7])
    with pytest.raises(UserError, match="bat needs r to divide"):
        adapters.apply_adapter(model, adapters.spec_from_flags({"peft": "bat", "disha_config": '{"r":48}'}))
    with pytest.raises(UserError, match="matches no layer"):
        adapters.apply_adapter(load_base(base_files[7]), adapters.spec_from_flags(
            {"peft": "lora", "peft_config": '{"target_modules":["att.query"]}'}))


def test_resume_from_another_method(lora_run, base_files):
    _, adapter = lora_run
    model = load_base(base_files[7])
    adapters.apply_adapter(model, adapters.spec_from_flags({"peft": "miss", "peft_config": '{"r":32}'}))
    with pytest.raises(UserError, match="lora_A is not a parameter"):
        adapters.load_adapter_weights(model, adapter)


def test_state_file_for_another_model(base_files, tmp_path):
    H, N = CONFIGS[7].n_head, CONFIGS[7].head_size
    write_checkpoint({f"blocks.{i}.att.time_state": torch.zeros(H, N, N) for i in range(3)}, tmp_path / "s.pth")
    with pytest.raises(UserError, match="exactly the 2 keys"):
        load_model(base_files[7], state=tmp_path / "s.pth")


def test_merge_refuses_unknown_quant_and_overwriting_inputs(lora_run):
    base, adapter = lora_run
    with pytest.raises(UserError, match="unknown quant scheme"):
        merge(base, adapter, adapter.parent / "out.pth", quant="int4")
    with pytest.raises(UserError, match="one of the inputs"):
        merge(base, adapter, base)
