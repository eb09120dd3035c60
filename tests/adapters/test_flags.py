"""Every adapter flag spelling of the seeds' scripts gives the spec it meant there."""

import argparse

import pytest

from rwkv_peft.adapters import AdapterSpec, LoraConfig, MissConfig, spec_from_flags

TIME_LN = ("time", "ln")


@pytest.mark.parametrize("flags, expected", [
    # Seed LoRA tutorial.
    ({"peft": "lora", "lora_config": '{"lora_load":"","lora_r":32,"lora_alpha":64,"lora_dropout":0.01}'},
     AdapterSpec(layer=LoraConfig(r=32, alpha=64, dropout=0.01), train_parts=TIME_LN)),
    # Newest RWKV-PEFT README, HF-style keys.
    ({"peft": "lora", "peft_config": '{"r":8,"lora_alpha":32,"lora_dropout":0.05}'},
     AdapterSpec(layer=LoraConfig(r=8, alpha=32, dropout=0.05), train_parts=TIME_LN)),
    # Seed PiSSA tutorial: rank 32, no alpha scaling, no dropout.
    ({"peft": "pissa", "pissa_config": '{"pissa_load":"","pissa_init":"","pissa_r":32,"svd_niter":4}'},
     AdapterSpec(layer=LoraConfig(r=32, alpha=32, dropout=0.0, pissa=True, svd_niter=4), train_parts=TIME_LN)),
    ({"peft": "lora", "peft_config": '{"r":16,"lora_alpha":16,"init_lora_weights":"pissa_niter_8"}'},
     AdapterSpec(layer=LoraConfig(r=16, alpha=16, dropout=0.0, pissa=True, svd_niter=8), train_parts=TIME_LN)),
    # Seed DiSHA tutorial.
    ({"peft": "disha", "disha_config": '{"mode":"bone","load":"","r":64}'},
     AdapterSpec(layer=MissConfig(r=64, mode="bone"), train_parts=TIME_LN)),
    ({"peft": "disha", "disha_config": '{"mode":"bat","load":"","r":32}'},
     AdapterSpec(layer=MissConfig(r=32, mode="bat"), train_parts=TIME_LN)),
    # Seed MiSS tutorial (newest RWKV-PEFT): bone by default, bat by init_weights.
    ({"peft": "miss", "peft_config": '{"r":64}'}, AdapterSpec(layer=MissConfig(r=64), train_parts=TIME_LN)),
    ({"peft": "miss", "peft_config": '{"r":16,"init_weights":"bat"}'},
     AdapterSpec(layer=MissConfig(r=16, mode="bat"), train_parts=TIME_LN)),
    ({"peft": "bone"}, AdapterSpec(layer=MissConfig(r=64), train_parts=TIME_LN)),
    # Seed state-tuning tutorial, and the newest spelling.
    ({"train_type": "state"}, AdapterSpec(state=True)),
    ({"peft": "state"}, AdapterSpec(state=True)),
    ({"peft": "lora", "train_type": "state"}, AdapterSpec(layer=LoraConfig(), state=True, train_parts=TIME_LN)),
    # No adapter: full fine-tuning, or parts only.
    ({}, AdapterSpec()),
    ({"peft": "none", "train_parts": ["emb", "head"]}, AdapterSpec(train_parts=("emb", "head"))),
])
def test_seed_flags(flags, expected):
    assert spec_from_flags(flags) == expected


def test_legacy_flag_and_peft_config_merge_and_resume_paths():
    # Both flags together, each giving other settings (the same setting twice must agree: test_flags_checks.py).
    spec = spec_from_flags({"peft": "pissa", "peft_config": '{"pissa_r":4}',
                            "pissa_config": '{"pissa_load":"out/rwkv-2.pth","pissa_init":"out/init_pissa.pth",'
                                            '"svd_niter":2}'})
    assert spec.layer == LoraConfig(r=4, alpha=4, dropout=0.0, pissa=True, svd_niter=2)
    assert (spec.load, spec.pissa_init) == ("out/rwkv-2.pth", "out/init_pissa.pth")


@pytest.mark.parametrize("value", [["time", "ln"], ['["time","ln"]'], ["time,ln"], "time ln".split()])
def test_train_parts_spellings(value):
    assert spec_from_flags({"peft": "lora", "train_parts": value}).train_parts == TIME_LN


def test_namespace_and_targets():
    args = argparse.Namespace(peft="lora", peft_config='{"r":8,"target_modules":["key","att.value"]}',
                              lora_config=None, train_type="none", train_parts=[], quant="none")
    spec = spec_from_flags(args)
    assert spec.targets == ("key", "att.value") and spec.train_parts == ()
