"""Loading: sizes read from the file for every official geometry, bit-exact round trips, one-line errors."""

import json
import subprocess
import sys

import pytest
import torch

from rwkv_peft.cli.main import main
from rwkv_peft.errors import UserError
from rwkv_peft.model import build_model, model_from_state_dict, read_checkpoint, write_checkpoint
from rwkv_peft.model.init import random_state_dict
from rwkv_peft.model.load import check_against
from rwkv_peft.model.rwkv6 import RWKV6Config
from rwkv_peft.model.rwkv7 import RWKV7Config
from tests.conftest import tiny_config

# The sizes the seeds list (n_layer, n_embd) and the low-rank dims official files carry (rwkv-reference.md §1.1).
OFFICIAL_V7 = {
    "0.1B": (RWKV7Config(12, 768), (64, 64, 32, 128), 191_084_544),
    "0.4B": (RWKV7Config(24, 1024), (64, 64, 32, 128), 450_834_432),
    "1.5B": (RWKV7Config(24, 2048), (96, 96, 64, 256), 1_527_668_736),
    "2.9B": (RWKV7Config(32, 2560), (96, 96, 64, 320), 2_948_065_280),
    "7.2B": (RWKV7Config(32, 4096), (128, 128, 96, 480), 7_199_932_416),
}


def _shape_only_file(cfg, path):
    """An official-shape file whose tensors are broadcast views of one element: torch.save keeps the view,
    so a '1.5B' file is a few kB. Good for anything that reads shapes, not values."""
    shapes = {k: v.shape for k, v in build_model(cfg).state_dict().items()}
    torch.save({k: torch.zeros(1, dtype=torch.bfloat16).expand(s) for k, s in shapes.items()}, path)


@pytest.mark.parametrize("size", list(OFFICIAL_V7))
def test_info_reports_official_v7_sizes(tmp_path, capsys, size):
    cfg, dims, params = OFFICIAL_V7[size]
    path = tmp_path / f"rand-{size}.pth"
    _shape_only_file(cfg, path)
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["version"], info["n_layer"], info["n_embd"], info["head_size"]) == (7, cfg.n_layer, cfg.n_embd, 64)
    assert tuple(info["low_rank"].values()) == dims
    assert info["params"] == params and info["vocab_size"] == 65536


def test_info_reports_v6_1p6b(tmp_path, capsys):
    path = tmp_path / "rwkv6-1.6b.pth"
    _shape_only_file(RWKV6Config(24, 2048), path)
    assert main(["info", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["version"], info["n_layer"], info["n_embd"], info["dim_ffn"]) == (6, 24, 2048, 7168)
    assert info["params"] == 1_599_873_024 and info["tensors"] == 678


def test_13b_style_dims_are_read_from_shapes_not_the_formula(tmp_path):
    cfg = RWKV7Config(2, 256, vocab_size=300, dim_w=96, dim_a=64, dim_v=64, dim_g=128)
    model = model_from_state_dict(random_state_dict(cfg, dtype=torch.float32))
    assert model.config == cfg


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip_is_bit_exact(tmp_path, suffix):
    sd = random_state_dict(tiny_config(7), dtype=torch.bfloat16)
    path = tmp_path / f"m{suffix}"
    write_checkpoint(sd, path)
    back = read_checkpoint(path)
    # .pth keeps the input's key order (we keep it when writing merged files); safetensors sorts keys.
    assert list(back) == list(sd) if suffix == ".pth" else sorted(back) == sorted(sd)
    assert all(torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype for k in sd)
    reloaded = model_from_state_dict(back, dtype=None).state_dict()
    assert all(torch.equal(reloaded[k], sd[k]) for k in sd)


def test_block0_value_residual_params_are_optional():
    sd = random_state_dict(tiny_config(7), dtype=torch.float32)
    for k in ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"):
        del sd[k]
    model_from_state_dict(sd)


def test_size_flags_must_agree_with_the_file():
    cfg = tiny_config(7)
    check_against(cfg, "m.pth", n_layer=2, n_embd=0)
    with pytest.raises(UserError, match="--n_embd 2048 disagrees with m.pth, which has n_embd=128"):
        check_against(cfg, "m.pth", n_embd=2048)


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rwkv_peft", *args], capture_output=True, text=True)


def _bad_files(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a model\n")
    good = tmp_path / "good.pth"
    torch.save(random_state_dict(tiny_config(7), dtype=torch.bfloat16), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    missing = tmp_path / "missing.pth"
    sd = torch.load(good)
    del sd["blocks.1.att.k_k"]
    torch.save(sd, missing)
    return {"text": text, "truncated": truncated, "missing": missing, "absent": tmp_path / "nope.pth"}


def test_bad_files_give_one_line_and_nonzero_exit(tmp_path):
    expected = {"text": "not a PyTorch checkpoint", "truncated": "truncated", "missing": "blocks.1.att.k_k",
                "absent": "no such file"}
    for name, path in _bad_files(tmp_path).items():
        result = _cli("info", str(path))
        assert result.returncode == 2, name
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert expected[name] in result.stderr, result.stderr


@pytest.mark.parametrize("version", [7, 6])
def test_hidden_takes_gathered_embeddings_in_place_of_ids(version):
    """What the trainer passes when the embedding table stays on the host (--quant on a GPU)."""
    from rwkv_peft.model.embed import embed

    cfg = tiny_config(version)
    model = model_from_state_dict(random_state_dict(cfg, seed=1))
    tokens = torch.randint(0, cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(2))
    gathered = embed(model.emb, tokens)
    assert gathered.shape == (2, 9, cfg.n_embd) and embed(model.emb, gathered) is gathered
    assert torch.equal(model.hidden(gathered)[0], model.hidden(tokens)[0])
