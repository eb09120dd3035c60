"""The tutorials' run scripts, flag for flag (paths, sizes and step counts shrunk; gpu -> cpu), are accepted."""

import pytest

from ..train.helpers import records, run_cli

# From the DiSHA, PiSSA (RWKV-6) and LoRA/State tutorials' appendices: (version, steps, flags).
SCRIPTS = {
    "run_disha.sh": (7, 12, """--vocab_size 256 --n_layer 2 --n_embd 64
        --data_type binidx --dataload pad --loss_mask pad
        --ctx_len 64 --micro_bsz 4 --epoch_steps 3 --epoch_count 4 --epoch_begin 0 --epoch_save 1
        --lr_init 2e-5 --lr_final 2e-5 --warmup_steps 0 --beta1 0.9 --beta2 0.99 --adam_eps 1e-8
        --accelerator cpu --devices 1 --precision bf16 --strategy deepspeed_stage_1 --grad_cp 1
        --my_testing x070 --peft disha --disha_config {"mode":"bone","load":"","r":64}"""),
    "run_pissa.sh": (6, 3, """--data_type binidx --vocab_size 256
        --ctx_len 64 --epoch_steps 3 --epoch_count 1 --epoch_begin 0 --epoch_save 1 --micro_bsz 8
        --n_layer 2 --n_embd 64 --pre_ffn 0 --head_qk 0 --lr_init 2e-5 --lr_final 2e-5 --warmup_steps 0
        --beta1 0.9 --beta2 0.99 --adam_eps 1e-8 --accelerator cpu --devices 1 --precision bf16
        --strategy deepspeed_stage_1 --grad_cp 1 --my_testing x060 --dataload pad --loss_mask pad
        --peft pissa --pissa_config {"pissa_load":"","pissa_init":"","pissa_r":32,"svd_niter":4}"""),
    "demo-state-tuning.sh": (7, 3, """--vocab_size 256 --n_layer 2 --n_embd 64
        --data_type binidx --dataload pad --loss_mask pad --ctx_len 64 --micro_bsz 4
        --epoch_steps 3 --epoch_count 1 --epoch_begin 0 --epoch_save 1 --pre_ffn 0 --head_qk 0
        --lr_init 1 --lr_final 0.01 --warmup_steps 10 --beta1 0.9 --beta2 0.99 --adam_eps 1e-8
        --accelerator cpu --devices 1 --precision bf16 --strategy deepspeed_stage_1 --grad_cp 1
        --my_testing x070 --train_type state --wandb="""),
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_tutorial_script_flags(script, base, base_v6, data, tmp_path):
    version, steps, flags = SCRIPTS[script]
    model = base if version == 7 else base_v6
    run = run_cli("train", "--load_model", model, "--proj_dir", tmp_path, "--data_file", data, "--progress", "none",
                  "--plot", "0", *flags.split())
    assert run.rc == 0, run.err
    assert len(records(tmp_path)) == steps and (tmp_path / "rwkv-0.pth").exists()
