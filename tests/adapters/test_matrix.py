"""One matrix, every method x {RWKV-7, RWKV-6}: the same invariants for each.

identity at init; only adapter / state / train_parts tensors train; the loss falls; save -> mount and save ->
resume give the same logits; merged file, loaded fresh, equals the adapted model; merged file layout.
"""

from dataclasses import replace

import pytest
import torch

from rwkv_peft import adapters, load_model, merge
from rwkv_peft.model import read_checkpoint
from rwkv_peft.model.load import load_base

from .cases import CASES, CONFIGS, max_rel_err

# PiSSA's base is W - B0 A0, so at init it differs from W by fp32 rounding of that product.
PISSA_INIT_RTOL = 1e-5
# Merged weights are one fp32 sum, the adapted layer computes the same terms in another order.
MERGE_RTOL = 1e-5
MATRIX = [pytest.param(case, version, id=f"{case}-v{version}") for case in CASES for version in CONFIGS]

# Independent of the implementation: what each method adds, and what each train part means, by name.
ADAPTER_SUFFIXES = {"lora": ("lora_A", "lora_B"), "pissa": ("lora_A", "lora_B"), "bone": ("disha",),
                    "bat": ("disha",)}
TARGETS = {7: ["att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"],
           6: ["att.receptance", "att.key", "att.value", "att.output", "att.gate", "ffn.key", "ffn.receptance",
               "ffn.value"]}
V7_TIME = ["att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.w1", "att.w2",
           "att.a0", "att.a1", "att.a2", "att.v0", "att.v1", "att.v2", "att.g1", "att.g2", "att.k_k", "att.k_a",
           "att.r_k", "ffn.x_k"]
V6_TIME = ["att.time_maa_x", "att.time_maa_w", "att.time_maa_k", "att.time_maa_v", "att.time_maa_r",
           "att.time_maa_g", "att.time_maa_w1", "att.time_maa_w2", "att.time_decay", "att.time_decay_w1",
           "att.time_decay_w2", "att.time_faaaa", "ffn.time_maa_k", "ffn.time_maa_r"]


def expected_trainable(version: int, spec: adapters.AdapterSpec) -> set[str]:
    L = CONFIGS[version].n_layer
    names = set()
    if spec.layer is not None:
        names |= {f"blocks.{i}.{t}.{s}" for i in range(L) for t in TARGETS[version]
                  for s in ADAPTER_SUFFIXES[spec.method]}
    if spec.state:
        names |= {f"blocks.{i}.att.time_state" for i in range(L)}
    if "ln" in spec.train_parts:
        lns = ["blocks.0.ln0", "ln_out"] + [f"blocks.{i}.{n}" for i in range(L) for n in ("ln1", "ln2", "att.ln_x")]
        names |= {f"{m}.{p}" for m in lns for p in ("weight", "bias")}
    if "time" in spec.train_parts:
        time = V7_TIME if version == 7 else V6_TIME
        # v7 block 0 never uses its value-residual parameters, so they cannot train.
        names |= {f"blocks.{i}.{n}" for i in range(L) for n in time
                  if not (version == 7 and i == 0 and n in ("att.v0", "att.v1", "att.v2"))}
    return names


@pytest.mark.parametrize("case, version", MATRIX)
def test_identity_at_init(trained, case, version):
    t = trained(case, version)
    if t.spec.method == "pissa":
        assert max_rel_err(t.init_logits, t.base_logits) <= PISSA_INIT_RTOL
    else:
        assert torch.equal(t.init_logits, t.base_logits)


@pytest.mark.parametrize("case, version", MATRIX)
def test_only_adapter_and_parts_train(trained, case, version):
    t = trained(case, version)
    assert set(adapters.trainable_parameters(t.model)) == expected_trainable(version, t.spec)


@pytest.mark.parametrize("case, version", MATRIX)
def test_loss_decreases(trained, case, version):
    losses = trained(case, version).losses
    assert losses[-1] < losses[0] - 0.05, losses


@pytest.mark.parametrize("case, version", MATRIX)
def test_save_then_mount_and_resume(trained, case, version):
    t = trained(case, version)
    mounted = load_model(t.base_path, adapter=t.adapter_path)
    with torch.no_grad():
        assert torch.equal(mounted(t.tokens), t.adapted_logits)
    # Resume as a trainer does: the same spec (PiSSA reusing its init file), then the weights.
    init = t.proj_dir / "init_pissa.pth"
    spec = replace(t.spec, pissa_init=str(init) if init.exists() else None)
    resumed = load_base(t.base_path)
    adapters.apply_adapter(resumed, spec)
    adapters.load_adapter_weights(resumed, t.adapter_path)
    with torch.no_grad():
        assert torch.equal(resumed.eval()(t.tokens), t.adapted_logits)


@pytest.mark.parametrize("case, version", MATRIX)
def test_merged_equals_adapted(trained, case, version, tmp_path):
    t = trained(case, version)
    out = tmp_path / "merged.pth"
    merge(t.base_path, t.adapter_path, out)
    with torch.no_grad():
        assert max_rel_err(load_model(out)(t.tokens), t.adapted_logits) <= MERGE_RTOL


@pytest.mark.parametrize("case, version", MATRIX)
def test_merged_file_layout(trained, case, version, tmp_path):
    t = trained(case, version)
    out = tmp_path / "merged.pth"
    merge(t.base_path, t.adapter_path, out)
    base, merged = read_checkpoint(t.base_path), read_checkpoint(out)
    states = [f"blocks.{i}.att.time_state" for i in range(CONFIGS[version].n_layer)] if t.spec.state else []
    assert list(merged) == list(base) + states
    assert all(merged[k].dtype == base[k].dtype for k in base)
    adapter = read_checkpoint(t.adapter_path)
    assert set(adapter) == expected_trainable(version, t.spec)
    if t.spec.state and t.spec.layer is not None:
        assert list(read_checkpoint(t.proj_dir / "rwkv-0-state.pth")) == states
    assert (t.proj_dir / "init_pissa.pth").exists() == (t.spec.method == "pissa")
