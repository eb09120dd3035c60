"""`rwkv-peft make-data` through the real CLI: binidx out, the magic_prime line, one-line errors."""

import json
import subprocess
import sys

import numpy as np

from rwkv_peft.data import build_dataset


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rwkv_peft", "make-data", *args], capture_output=True, text=True,
                          cwd=cwd)


def test_make_data_writes_binidx_and_prints_the_training_flags(tmp_path):
    src = tmp_path / "chat.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"User: question {i}?\n\nAssistant: answer number {i}."})
                             for i in range(200)) + "\n")
    result = _cli(str(src), "--repeat", "3", "--ctx_len", "32", "--out", str(tmp_path / "d"), "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "--magic_prime" in result.stdout
    tokens = np.fromfile(tmp_path / "d.bin", dtype=np.uint16)
    assert (tokens == 0).sum() == 600  # one end-of-document per record and copy
    ds = build_dataset(str(tmp_path / "d"), data_type="binidx", ctx_len=32, dataload="pad")
    assert ds.num_docs == 600 and ds.data_size == tokens.size


def test_make_data_bad_line_is_one_line_error(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"text": broken\n')
    result = _cli(str(src))
    assert result.returncode == 2
    assert "bad.jsonl" in result.stderr and "line 2" in result.stderr and "Traceback" not in result.stderr
