"""Sampling and streamed generation through the real CLI, with the World tokenizer."""

import subprocess
import sys

import torch

from rwkv_peft.model import model_from_state_dict
from rwkv_peft.model.generate import Sampling, generate, sample_logits
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.model.tokenizer import Tokenizer
from tests.conftest import tiny_config


def test_sampling_rules():
    logits = torch.tensor([0.0, 5.0, 4.9, -3.0])
    assert sample_logits(logits, temperature=0, top_p=0.3, top_k=0) == 1
    g = torch.Generator().manual_seed(0)
    # top_p this small keeps only the most likely token, whatever the temperature.
    assert {sample_logits(logits, 2.0, 0.01, 0, g) for _ in range(20)} == {1}
    assert {sample_logits(logits, 1.0, 1.0, 2, g) for _ in range(50)} <= {1, 2}


class _FakeTokenizer:
    """Maps ids to fixed strings so a test can force a stop string across token boundaries."""

    pieces = {5: "ab", 6: "\n", 7: "\nUs", 8: "er:"}

    def encode(self, text):
        return [5]

    def decode_bytes(self, ids):
        return "".join(self.pieces.get(i, "?") for i in ids).encode()


class _Scripted(torch.nn.Module):
    """A 'model' that emits a fixed token sequence, one per call."""

    def __init__(self, script):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.script = list(script)

    def forward_with_state(self, tokens, state):
        logits = torch.full((1, tokens.shape[1], 10), -1e9)
        logits[0, -1, self.script.pop(0)] = 0
        return logits, state


def test_stop_string_spanning_tokens_is_cut_and_token_0_stops():
    sampling = Sampling(temperature=0, stop=["\n\nUser:"], max_new_tokens=10)
    out = "".join(generate(_Scripted([5, 6, 7, 8, 5, 5]), _FakeTokenizer(), "x", sampling))
    assert out == "ab"
    out = "".join(generate(_Scripted([5, 5, 0, 5]), _FakeTokenizer(), "x", Sampling(temperature=0)))
    assert out == "abab"


def test_greedy_generation_is_deterministic_and_decodes():
    model = model_from_state_dict(random_state_dict(tiny_config(7, n_layer=1, n_embd=64, vocab_size=65536)),
                                  dtype=torch.float32)
    sampling = Sampling(temperature=0, max_new_tokens=12)
    a = "".join(generate(model, Tokenizer(), "Hello", sampling))
    b = "".join(generate(model, Tokenizer(), "Hello", sampling))
    assert a == b and isinstance(a, str)


def test_cli_generate_streams_text(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(random_state_dict(tiny_config(7, n_layer=1, n_embd=64, vocab_size=65536)), path)
    result = subprocess.run([sys.executable, "-m", "rwkv_peft", "generate", "--model", str(path), "--prompt",
                             "The capital of France is", "--max_tokens", "8", "--seed", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
