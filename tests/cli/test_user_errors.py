"""Mistakes a user makes on the command line end in one message (rc 2), or a one-line note, never a traceback."""

import pytest

from rwkv_peft.cli.escapes import unescape
from rwkv_peft.cli.main import main

from ..train.helpers import run_cli, train_args, write_chat_jsonl


def one_line_error(run, command: str, text: str) -> None:
    assert run.rc == 2, run.err
    assert run.err.startswith(f"rwkv-peft {command}: error") and text in run.err and "Traceback" not in run.err


@pytest.mark.parametrize("flags, text", [
    (["--peft", "lora", "--lora_config", '{"lora_r":8,"lora_alpha":"big"}'], 'lora_alpha is "big"'),
    (["--peft", "lora", "--peft_config", '{"lora_r":8,"lora_dropout":"x"}'], 'lora_dropout is "x"'),
    (["--peft", "lora", "--lora_config", '{"lora_r":true}'], "lora_r is true; expected a positive integer"),
    (["--peft", "lora", "--lora_config", '{"lora_r":8,"lora_load":5}'], "lora_load is 5"),
    (["--peft", "miss", "--lora_config", '{"lora_r":16}'], "--lora_config applies to --peft lora"),
    (["--peft", "lora", "--lora_config", '{"lora_r":16}', "--peft_config", '{"r":4}'], "disagree on r"),
])
def test_adapter_config_mistakes(flags, text, base, data, tmp_path):
    one_line_error(run_cli(*train_args(base, data, tmp_path, *flags)), "train", text)


def test_pasted_make_data_line_and_chunk_ctx_are_noted(base, data, tmp_path):
    run = run_cli(*train_args(base, data, tmp_path, "--my_exit_tokens", "12160", "--magic_prime", "179",
                              "--ctx_len", "64", "--chunk_ctx", "16", "--plot", "0", steps=1))
    assert run.rc == 0, run.err
    assert "note: --my_exit_tokens 12160 is not needed" in run.err
    assert "note: --chunk_ctx 16 only applies to --train_type infctx" in run.err


def test_unknown_flag_shows_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--model", "m.pth", "--bogus"])
    err = capsys.readouterr().err
    assert "usage: rwkv-peft generate" in err and "unrecognized arguments: --bogus" in err


def test_make_data_positional_form_and_bad_out(tmp_path):
    data = write_chat_jsonl(tmp_path / "chat.jsonl")
    run = run_cli("make-data", data, "2", "64", "--out", tmp_path / "md" / "chat", "--seed", "1")
    assert run.rc == 0, run.err
    assert "x 2 = 96 items" in run.out and "--ctx_len 64" in run.out
    one_line_error(run_cli("make-data", data, "2", "--repeat", "3"), "make-data", "disagree")
    (tmp_path / "afile").write_text("")
    one_line_error(run_cli("make-data", data, "--out", tmp_path / "afile" / "x"), "make-data",
                   "is a file, not a folder")


def test_merge_output_that_cannot_be_a_file(base, tmp_path):
    one_line_error(run_cli("merge", "--base_model", base, "--output", tmp_path), "merge", "is a folder")
    (tmp_path / "afile").write_text("")
    one_line_error(run_cli("merge", "--base_model", base, "--output", tmp_path / "afile" / "m.pth"), "merge",
                   "is a file, not a folder")


def test_prompt_escapes():
    assert unescape(r"User: Hi\n\nAssistant:") == "User: Hi\n\nAssistant:"
    assert unescape(r"a\tb\\n\q") == "a\tb\\n\\q"
