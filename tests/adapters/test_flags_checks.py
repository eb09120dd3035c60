"""Adapter JSON flags that would train something other than what was asked are refused with one message."""

import pytest

from rwkv_peft.adapters import MissConfig, spec_from_flags
from rwkv_peft.errors import UserError


@pytest.mark.parametrize("flags, message", [
    ({"peft": "lora", "lora_config": '{"lora_r":8,"lora_alpha":"big"}'},
     '--lora_config: lora_alpha is "big"; expected a positive number'),
    ({"peft": "lora", "peft_config": '{"lora_r":8,"lora_alpha":"big"}'}, '--peft_config: lora_alpha is "big"'),
    ({"peft": "lora", "lora_config": '{"lora_r":8,"lora_dropout":"x"}'},
     '--lora_config: lora_dropout is "x"; expected a number in [0, 1)'),
    ({"peft": "lora", "lora_config": '{"lora_r":true}'}, "--lora_config: lora_r is true; expected a positive integer"),
    ({"peft": "lora", "peft_config": '{"r":8.5}'}, "--peft_config: r is 8.5; expected a positive integer"),
    ({"peft": "lora", "lora_config": '{"lora_r":8,"lora_load":5}'}, "--lora_config: lora_load is 5; expected a file"),
    ({"peft": "pissa", "pissa_config": '{"pissa_r":8,"svd_niter":"4"}'}, '--pissa_config: svd_niter is "4"'),
    ({"peft": "pissa", "pissa_config": '{"pissa_init":7}'}, "--pissa_config: pissa_init is 7; expected a file path"),
    ({"peft": "disha", "disha_config": '{"mode":"bone","r":"64"}'}, '--disha_config: r is "64"'),
    ({"peft": "disha", "disha_config": '{"mode":["bone"]}'}, '--disha_config: mode is ["bone"]'),
    ({"peft": "miss", "peft_config": '{"r":16,"init_weights":1}'}, "--peft_config: init_weights is 1"),
])
def test_value_types_are_checked(flags, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        spec_from_flags(flags)


@pytest.mark.parametrize("flags, message", [
    ({"peft": "miss", "lora_config": '{"lora_r":16}'}, "--lora_config applies to --peft lora, but --peft is miss"),
    ({"peft": "pissa", "lora_config": '{"lora_r":16}'}, "--lora_config applies to --peft lora, but --peft is pissa"),
    ({"peft": "lora", "disha_config": '{"r":16}'}, "--disha_config applies to --peft disha"),
    ({"peft": "lora", "pissa_config": '{"pissa_r":16}'}, "--pissa_config applies to --peft pissa"),
    ({"lora_config": '{"lora_r":16}'}, "but --peft is none; add --peft lora"),
    ({"train_type": "state", "disha_config": '{"r":16}'}, "but --peft is none; add --peft disha"),
    ({"peft": "lora", "lora_config": '{"lora_r":16}', "peft_config": '{"r":4}'},
     "--lora_config and --peft_config disagree on r"),
])
def test_config_flag_of_another_method_or_conflicting_is_refused(flags, message):
    with pytest.raises(UserError, match=message):
        spec_from_flags(flags)


def test_agreeing_flags_and_disha_config_for_miss_are_used():
    spec = spec_from_flags({"peft": "lora", "lora_config": '{"lora_r":16}', "peft_config": '{"r":16,"lora_alpha":8}'})
    assert (spec.layer.r, spec.layer.alpha) == (16, 8)
    assert spec_from_flags({"peft": "miss", "disha_config": '{"r":16}'}).layer == MissConfig(r=16)
    # RWKV-PEFT's empty defaults for unused flags are not "given".
    assert spec_from_flags({"peft": "miss", "lora_config": "", "pissa_config": {}}).layer == MissConfig(r=64)
