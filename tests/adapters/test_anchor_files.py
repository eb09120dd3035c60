"""Files in RWKV-PEFT's format, built here from its documented key names (anchor-rwkv-peft.md §3, §5), with no
adapter_config.json, merge to the weights its formulas give. The formulas are written out block by block,
independently of the implementation."""

import pytest
import torch

from rwkv_peft import adapters, load_model, merge
from rwkv_peft.model import RWKV7Config, read_checkpoint, write_checkpoint
from rwkv_peft.model.init import random_state_dict

from .cases import max_rel_err

# fp32 merge vs the same formula in float64.
FORMULA_RTOL = 1e-6
MERGE_RTOL = 1e-5
CFG = RWKV7Config(n_layer=2, n_embd=128, vocab_size=500)
LINEARS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
TRAINED_LN = ("blocks.0.ln1.weight", "blocks.1.att.ln_x.bias", "ln_out.weight")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("anchor-base") / "base.pth"
    write_checkpoint(random_state_dict(CFG, seed=3, dtype=torch.float32), path)
    return path, read_checkpoint(path)


def anchor_file(base_sd: dict, make: dict, seed: int = 0) -> dict:
    """{<module>.<name>: tensor} for every linear of every block, plus trained LayerNorm tensors (train_parts
    "ln" is in RWKV-PEFT's default). make: {name: shape function (out, in) -> shape}."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i in range(CFG.n_layer):
        for t in LINEARS:
            out_f, in_f = base_sd[f"blocks.{i}.{t}.weight"].shape
            for name, shape in make.items():
                sd[f"blocks.{i}.{t}.{name}"] = torch.randn(*shape(out_f, in_f), generator=g) * 0.1
    return sd | {k: base_sd[k] + 0.5 for k in TRAINED_LN}


def check_merged(base_sd: dict, merged: dict, expected_weight):
    """Every adapted weight equals expected_weight(module, W64); trained LN copied; all else untouched."""
    assert list(merged) == list(base_sd)
    for i in range(CFG.n_layer):
        for t in LINEARS:
            key = f"blocks.{i}.{t}.weight"
            want = expected_weight(f"blocks.{i}.{t}", base_sd[key].double())
            assert max_rel_err(merged[key].double(), want) <= FORMULA_RTOL, key
    for k in base_sd:
        if not k.endswith(tuple(f"{t}.weight" for t in LINEARS)):
            assert torch.equal(merged[k], base_sd[k] + 0.5 if k in TRAINED_LN else base_sd[k]), k


def check_mount_matches_merge(base_path, adapter, merged, **options):
    """Mounting the file (no merge) computes what the merged file holds."""
    tokens = torch.arange(40).view(2, 20)
    with torch.no_grad():
        mounted = load_model(base_path, adapter=adapter, **options)(tokens)
        assert max_rel_err(load_model(merged)(tokens), mounted) <= MERGE_RTOL


def test_lora_merges_with_given_alpha(base, tmp_path):
    path, base_sd = base
    r, alpha = 8, 32
    sd = anchor_file(base_sd, {"lora_A": lambda o, i: (r, i), "lora_B": lambda o, i: (o, r)})
    write_checkpoint(sd, tmp_path / "rwkv-3.pth")
    merge(path, tmp_path / "rwkv-3.pth", tmp_path / "merged.pth", lora_alpha=alpha)
    check_merged(base_sd, read_checkpoint(tmp_path / "merged.pth"),
                 lambda m, W: W + alpha / r * sd[f"{m}.lora_B"].double() @ sd[f"{m}.lora_A"].double())
    check_mount_matches_merge(path, tmp_path / "rwkv-3.pth", tmp_path / "merged.pth", lora_alpha=alpha)


@pytest.mark.parametrize("prefix", ["model.", ""], ids=["model-prefix", "no-prefix"])
def test_pissa_merges_with_init_file(base, tmp_path, prefix):
    path, base_sd = base
    r = 8
    shapes = {"lora_A": lambda o, i: (r, i), "lora_B": lambda o, i: (o, r)}
    sd = anchor_file(base_sd, shapes, seed=1)
    init = {f"{prefix}{k.rsplit('.', 1)[0]}.init_{k.rsplit('.', 1)[1]}": v
            for k, v in anchor_file(base_sd, shapes, seed=2).items() if "lora" in k}
    write_checkpoint(sd, tmp_path / "rwkv-0.pth")
    write_checkpoint(init, tmp_path / "init_pissa.pth")
    merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth", method="pissa",
          pissa_init=tmp_path / "init_pissa.pth")

    def pissa(m, W):
        A0, B0 = (init[f"{prefix}{m}.init_lora_{x}"].double() for x in "AB")
        return W - B0 @ A0 + sd[f"{m}.lora_B"].double() @ sd[f"{m}.lora_A"].double()

    check_merged(base_sd, read_checkpoint(tmp_path / "merged.pth"), pissa)
    check_mount_matches_merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth",
                              pissa_init=tmp_path / "init_pissa.pth")


def test_bone_merges_by_its_formula_with_ragged_blocks(base, tmp_path):
    path, base_sd = base
    r = 48  # divides neither 128 nor 512: the last block is partial
    sd = anchor_file(base_sd, {"disha": lambda o, i: (r, o)})
    write_checkpoint(sd, tmp_path / "rwkv-0.pth")
    merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth", method="disha")

    def bone(m, W):
        D, W = sd[f"{m}.disha"].double(), W.clone()
        for start in range(0, W.shape[1], r):
            width = min(r, W.shape[1] - start)
            W[:, start:start + width] += D[:width].t()   # W'[o, b r + j] = W[o, b r + j] + D[j, o]
        return W

    check_merged(base_sd, read_checkpoint(tmp_path / "merged.pth"), bone)
    check_mount_matches_merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth")


def test_bat_merges_by_its_formula(base, tmp_path):
    path, base_sd = base
    r = 32
    sd = anchor_file(base_sd, {"disha": lambda o, i: (i // r, r, r)})
    write_checkpoint(sd, tmp_path / "rwkv-0.pth")
    merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth", method="disha")

    def bat(m, W):
        D, out = sd[f"{m}.disha"].double(), W.clone()
        for a in range(W.shape[0] // r):
            for b in range(W.shape[1] // r):
                block = W[a * r:(a + 1) * r, b * r:(b + 1) * r]
                out[a * r:(a + 1) * r, b * r:(b + 1) * r] = block + block @ D[b] + D[b]  # input block b
        return out

    check_merged(base_sd, read_checkpoint(tmp_path / "merged.pth"), bat)
    check_mount_matches_merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth")


def test_state_file_merges_like_merge_state(base, tmp_path):
    path, base_sd = base
    state = {f"blocks.{i}.att.time_state": torch.randn(CFG.n_head, CFG.head_size, CFG.head_size)
             for i in range(CFG.n_layer)}
    write_checkpoint(state, tmp_path / "state.pth")
    merge(path, None, tmp_path / "merged.pth", state=tmp_path / "state.pth", method="state")
    merged = read_checkpoint(tmp_path / "merged.pth")
    assert list(merged) == list(base_sd) + list(state)
    assert all(torch.equal(merged[k], v) for k, v in (base_sd | state).items())
    tokens = torch.arange(40).view(2, 20)
    with torch.no_grad():
        mounted = load_model(path, state=tmp_path / "state.pth")(tokens)
        assert torch.equal(load_model(tmp_path / "merged.pth")(tokens), mounted)


def test_bf16_base_gives_bf16_merge_cast_once(tmp_path):
    path = tmp_path / "base-bf16.pth"
    write_checkpoint(random_state_dict(CFG, seed=4, dtype=torch.bfloat16), path)
    base_sd = read_checkpoint(path)
    r, alpha = 4, 16
    sd = anchor_file(base_sd, {"lora_A": lambda o, i: (r, i), "lora_B": lambda o, i: (o, r)})
    write_checkpoint(sd, tmp_path / "rwkv-0.pth")
    merge(path, tmp_path / "rwkv-0.pth", tmp_path / "merged.pth", lora_alpha=alpha)
    merged = read_checkpoint(tmp_path / "merged.pth")
    assert all(v.dtype == torch.bfloat16 for v in merged.values())
    key = "blocks.1.ffn.value.weight"
    once = (base_sd[key].float() + alpha / r * sd["blocks.1.ffn.value.lora_B"] @ sd["blocks.1.ffn.value.lora_A"])
    assert torch.equal(merged[key], once.to(torch.bfloat16))


def test_our_pissa_init_file_uses_rwkv_peft_keys(base, tmp_path):
    path, _ = base
    model = load_model(path)
    adapters.apply_adapter(model, adapters.spec_from_flags({"peft": "pissa", "pissa_config": '{"pissa_r":4}'}))
    init = read_checkpoint(adapters.write_pissa_init(model, tmp_path))
    assert sorted(init) == sorted(f"model.blocks.{i}.{t}.init_lora_{x}" for i in range(CFG.n_layer)
                                  for t in LINEARS for x in "AB")
