"""Graphed updates refuse a non-finite step on the device, and the trainer launches the next step before reading one
back: it trains exactly the steps the synchronous loop trains, and still stops before a bad update.

On a GPU this is the path of every graphed run; here it runs on the CPU, where GraphedUpdate works without graphs
(fused AdamW reads the refusal flag on both), so the loop's order (schedule, saves, loader position, stop) is
tested where CI runs. The GPU side (graphs, the non-blocking copy of the statistics) is tests/train/test_speedups.py.
"""

import json
import math

import pytest
import torch

from rwkv_peft.train import TrainingDiverged, build_config
from rwkv_peft.train import session as session_module
from rwkv_peft.train.checkpoint import read_checkpoint_folder
from rwkv_peft.train.graph import GraphedUpdate
from rwkv_peft.train.loop import Trainer

SAME = 1e-6  # relative: the same fused AdamW arithmetic, the gradient norm summed in another order


def _trainer(base, data, proj, monkeypatch, run_ahead: bool, **flags) -> Trainer:
    build = session_module.build_optimizer
    monkeypatch.setattr(session_module, "build_optimizer", lambda *a, **k: build(*a, **(k | {"fused": True})))
    cfg = build_config({"load_model": str(base), "data_file": data, "data_type": "binidx", "ctx_len": 64,
                        "micro_bsz": 4, "precision": "fp32", "accelerator": "cpu", "proj_dir": str(proj),
                        "peft": "lora", "lora_config": '{"lora_dropout":0}', "progress": "none", "plot": False,
                        "epoch_steps": 6, "epoch_count": 2, "lr_init": 1e-2, "lr_final": 1e-3,
                        "warmup_steps": 2, "random_seed": 7} | flags)
    trainer = Trainer(cfg)
    if run_ahead:
        s = trainer.s
        trainer.update = GraphedUpdate(s.optimizer, s.trainable, cfg.optim.gradient_clip_val or math.inf)
    return trainer


def _records(proj):
    return [json.loads(line) for line in (proj / "metrics.jsonl").read_text().splitlines()]


def test_running_ahead_trains_the_same_steps(base, data, tmp_path, monkeypatch):
    runs = {}
    for ahead in (False, True):
        proj = tmp_path / str(ahead)
        launched = []
        trainer = _trainer(base, data, proj, monkeypatch, ahead, checkpoint_every=4)
        launch = trainer._launch

        def logged_launch(batches, index, launch=launch, launched=launched, trainer=trainer):
            launched.append((index, trainer.step))
            return launch(batches, index)

        trainer._launch = logged_launch
        trainer.fit()
        runs[ahead] = (_records(proj), launched, read_checkpoint_folder(proj / "checkpoint-last"))
    (plain, plain_launches, plain_point), (ahead, ahead_launches, ahead_point) = runs[False], runs[True]
    assert [r["step"] for r in ahead] == list(range(1, 13)) and [r["lr"] for r in ahead] == [r["lr"] for r in plain]
    for a, p in zip(ahead, plain, strict=True):
        assert a["loss"] == pytest.approx(p["loss"], rel=SAME) and a["grad_norm"] == pytest.approx(p["grad_norm"],
                                                                                                  rel=SAME)
    # Launched while the step before was still unread, except after a checkpoint (4, 8) or an epoch's end (6).
    assert plain_launches == [(i, i) for i in range(12)]
    assert {i for i, done in ahead_launches if done == i - 1} == {1, 2, 3, 5, 7, 9, 10, 11}
    assert ahead_point.step == plain_point.step == 12
    assert ahead_point.manifest["loader"] == plain_point.manifest["loader"]
    for name, value in plain_point.trainable.items():
        assert torch.allclose(ahead_point.trainable[name], value, rtol=SAME, atol=1e-8)


def test_a_refused_step_stops_the_run_with_every_later_update_refused(base, data, tmp_path, monkeypatch):
    """The absurd rate blows the weights up; the step that goes non-finite is refused on the device, and so is the
    step launched after it before the host read the first back: the trained tensors stay finite."""
    trainer = _trainer(base, data, tmp_path / "p", monkeypatch, True, lr_init=1e30, lr_final=1e30, warmup_steps=0,
                       gradient_clip_val=0)
    with pytest.raises(TrainingDiverged, match=r"step \d+: the (loss|gradient norm) is .*without applying"):
        trainer.fit()
    assert float(trainer.update.refused) == 1.0
    assert all(torch.isfinite(p).all() for p in trainer.s.trainable)


def test_refused_update_leaves_parameters_and_moments():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    update = GraphedUpdate(opt, [p], max_norm=1.0)
    for loss in (1.0, math.nan, 1.0):
        p.grad.fill_(0.5)
        update.grad_norm()
        before = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
        update.apply(torch.tensor(loss))
        if loss == 1.0 and not float(update.refused):
            assert not torch.equal(p.detach(), before[0])
        else:  # the NaN step and, sticky, the one after it
            assert torch.equal(p.detach(), before[0])
            assert all(torch.equal(opt.state[p][k], v) for k, v in before[1].items())
        assert torch.equal(p.grad, torch.zeros(3))
    assert float(update.refused) == 1.0


def test_a_stop_request_finishes_the_step_in_flight_and_saves_it(base, data, tmp_path, monkeypatch):
    """Ctrl-C (simulated) seen after step 3 was read back, while step 4 was already launched: step 4 is finished,
    logged and saved, and checkpoint-last holds what a run that stopped at step 4 holds."""
    from rwkv_peft.train import loop

    class StopAfterStep3(loop.StopRequest):
        @property
        def requested(self):
            return trainer.step >= 3

        @requested.setter
        def requested(self, value):
            pass

    monkeypatch.setattr(loop, "StopRequest", StopAfterStep3)
    trainer = _trainer(base, data, tmp_path / "ahead", monkeypatch, True)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    point = read_checkpoint_folder(tmp_path / "ahead" / "checkpoint-last")
    assert [r["step"] for r in _records(tmp_path / "ahead")] == [1, 2, 3, 4] and point.step == 4

    monkeypatch.setattr(loop, "StopRequest", StopAfterStep3.__mro__[1])
    plain = _trainer(base, data, tmp_path / "plain", monkeypatch, False, max_steps=4)
    plain.fit()
    reference = read_checkpoint_folder(tmp_path / "plain" / "checkpoint-last")
    assert point.manifest["loader"] == reference.manifest["loader"]
    for name, value in reference.trainable.items():
        assert torch.allclose(point.trainable[name], value, rtol=SAME, atol=1e-8)
