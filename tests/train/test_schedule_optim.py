"""Learning-rate schedules (step units, warmup, ends) and AdamW parameter groups."""

import math

import pytest
import torch

from rwkv_peft import adapters
from rwkv_peft.model.load import load_base
from rwkv_peft.train.optim import GroupRates, apply_schedule, build_optimizer, state_rates
from rwkv_peft.train.schedule import Schedule


def test_warmup_then_cosine_to_lr_final():
    s = Schedule("cos_decay", total_steps=110, warmup_steps=10)
    assert [s.lr(i, 1.0, 0.1) for i in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert s.lr(10, 1.0, 0.1) == 1.0
    assert math.isclose(s.lr(60, 1.0, 0.1), 0.55)
    assert math.isclose(s.lr(110, 1.0, 0.1), 0.1) and math.isclose(s.lr(500, 1.0, 0.1), 0.1)
    lrs = [s.lr(i, 1.0, 0.1) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_wsd_is_warmup_stable_decay_to_lr_final():
    s = Schedule("wsd", total_steps=100, warmup_steps=5, decay_fraction=0.2)
    assert s.lr(2, 1.0, 0.0) == 0.6
    assert all(s.lr(i, 1.0, 0.0) == 1.0 for i in range(5, 80))
    assert math.isclose(s.lr(89, 1.0, 0.0), 0.5) and math.isclose(s.lr(99, 1.0, 0.0), 0.0)
    assert math.isclose(s.lr(99, 1.0, 0.25), 0.25)  # lr_final is honoured (RWKV-PEFT's wsd went to 0)


def test_constant_and_equal_rates_are_constant():
    assert {Schedule("constant", 50, 0).lr(i, 0.5, 0.01) for i in range(60)} == {0.5}
    assert {Schedule("cos", 50, 0).lr(i, 2e-5, 2e-5) for i in range(60)} == {2e-5}
    with pytest.raises(ValueError):
        Schedule("linear", 10)


def test_parameter_groups(base):
    model = load_base(base)
    spec = adapters.spec_from_flags({"peft": "lora", "train_type": "state", "train_parts": ["time", "ln", "head"]})
    adapters.apply_adapter(model, spec)
    named = adapters.trainable_parameters(model)
    st = state_rates(2e-5, 2e-5, None, None, only_state=False)
    assert st == (1.0, 0.01)
    opt = build_optimizer(named, GroupRates(2e-5, 1e-5, *st), (0.9, 0.99), 1e-8, weight_decay=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    names = {g: {n for n, p in named.items() if any(p is q for q in groups[g]["params"])} for g in groups}
    assert "blocks.0.att.key.lora_A" in names["decay"] and "head.weight" in names["decay"]
    assert "blocks.0.ln1.weight" in names["no_decay"] and "blocks.1.att.w1" in names["no_decay"]
    assert names["w0_2x"] == {"blocks.0.att.w0", "blocks.1.att.w0"}
    assert names["state"] == {"blocks.0.att.time_state", "blocks.1.att.time_state"}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["w0_2x"]["lr_init"] == 4e-5 and groups["state"]["lr_final"] == 0.01
    assert apply_schedule(opt, Schedule("cos", 10), 0) == 2e-5
    assert groups["state"]["lr"] == 1.0 and groups["w0_2x"]["lr"] == 4e-5
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)


def test_state_only_uses_the_runs_rates():
    assert state_rates(1.0, 0.01, None, None, only_state=True) == (1.0, 0.01)
    assert state_rates(1.0, 0.01, 0.5, None, only_state=True) == (0.5, 0.01)


def test_optimizer_step_changes_only_trainable(base):
    model = load_base(base)
    adapters.apply_adapter(model, adapters.spec_from_flags({"peft": "miss", "peft_config": '{"r":16}'}))
    named = adapters.trainable_parameters(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = build_optimizer(named, GroupRates(1e-2, 1e-2, 1, 1), (0.9, 0.99), 1e-8, 0.0)
    model(torch.randint(0, 256, (2, 16))).square().mean().backward()
    opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_optimizer_state_resumes_across_capturable_and_plain():
    """A checkpoint's optimizer state is portable: written by a run whose rates are tensors (the CUDA-graph
    optimizer), read by one with float rates, and back; steps continue identically."""
    from rwkv_peft.train.optim import load_portable_state, portable_state

    torch.manual_seed(0)
    start = {"x.lora_A": torch.randn(4, 6), "ln.weight": torch.randn(6)}

    def optimizer(tensor_rates: bool):
        named = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
        opt = build_optimizer(named, GroupRates(1e-2, 1e-2, 1, 1), (0.9, 0.99), 1e-8, 0.1)
        if tensor_rates:  # as capturable=True builds them, on the CPU (where capturable itself is refused)
            for g in opt.param_groups:
                g["lr"] = torch.tensor(g["lr"])
                g["foreach"] = False
        return opt, list(named.values())

    def steps(opt, params, n):
        for _ in range(n):
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()

    ref, ref_params = optimizer(False)
    steps(ref, ref_params, 3)
    for first, second in ((True, False), (False, True)):
        a, pa = optimizer(first)
        steps(a, pa, 2)
        state = portable_state(a)
        assert all(isinstance(g["lr"], float) and "foreach" not in g for g in state["param_groups"])
        b, pb = optimizer(second)
        with torch.no_grad():
            for p, q in zip(pb, pa):
                p.copy_(q)
        load_portable_state(b, state)
        assert all(isinstance(g["lr"], torch.Tensor) == second for g in b.param_groups)
        assert all(g["foreach"] is (False if second else None) for g in b.param_groups)
        steps(b, pb, 1)
        for p, q in zip(pb, ref_params):
            assert torch.equal(p, q)


def test_preallocated_state_steps_like_a_fresh_optimizer():
    from rwkv_peft.train.optim import preallocate

    start = {"x.lora_A": torch.randn(4, 6), "ln.weight": torch.randn(6)}
    results = []
    for early in (False, True):
        named = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
        opt = build_optimizer(named, GroupRates(1e-2, 1e-2, 1, 1), (0.9, 0.99), 1e-8, 0.1)
        if early:
            preallocate(opt)
        for i in range(3):
            for p in named.values():
                p.grad = torch.full_like(p, float(i + 1))
            opt.step()
        results.append([p.detach().clone() for p in named.values()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
