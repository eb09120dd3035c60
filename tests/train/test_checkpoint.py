"""checkpoint-last is replaced atomically: a save killed at any point leaves the previous checkpoint usable."""

import pytest
import torch

import rwkv_peft.train.checkpoint as ckpt
from rwkv_peft.train.checkpoint import find_checkpoint, read_checkpoint_folder, save_checkpoint
from rwkv_peft.train.rng import rng_state


def _save(proj, step: int) -> None:
    trainable = {"blocks.0.att.key.lora_A": torch.full((2, 3), float(step))}
    state = {"optimizer": {"state": {}, "param_groups": []}, "scaler": None, "rng": rng_state(torch.device("cpu"))}
    save_checkpoint(proj, step, trainable, state, {"loader": {"step": step}})


class Killed(BaseException):
    """Stands in for SIGKILL arriving at a given instant."""


@pytest.mark.parametrize("where", ["write_checkpoint", "_atomic_torch_save", "_atomic_json"])
def test_a_killed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    _save(tmp_path, 5)

    def die(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(ckpt, where, die)
    with pytest.raises(Killed):
        _save(tmp_path, 9)
    monkeypatch.undo()
    point = read_checkpoint_folder(find_checkpoint("auto", tmp_path))
    assert point.step == 5 and point.manifest["loader"] == {"step": 5}
    assert torch.equal(point.trainable["blocks.0.att.key.lora_A"], torch.full((2, 3), 5.0))
    _save(tmp_path, 9)  # the next save succeeds and cleans up whatever the killed one left
    files = sorted(p.name for p in (tmp_path / "checkpoint-last").iterdir())
    assert files == ["checkpoint.json", "state-00000009.pt", "trainable-00000009.pth"]


def test_interrupted_file_write_leaves_no_partial_file(tmp_path, monkeypatch):
    _save(tmp_path, 1)
    real_save = torch.save

    def half_write(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise Killed

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(Killed):
        _save(tmp_path, 2)
    monkeypatch.undo()
    names = {p.name for p in (tmp_path / "checkpoint-last").iterdir()}
    assert not any(n.endswith(".tmp") for n in names) and "trainable-00000002.pth" not in names
    assert read_checkpoint_folder(tmp_path / "checkpoint-last").step == 1


def test_find_checkpoint(tmp_path):
    assert find_checkpoint("", tmp_path) is None and find_checkpoint("auto", tmp_path) is None
    _save(tmp_path, 3)
    folder = tmp_path / "checkpoint-last"
    assert find_checkpoint("auto", tmp_path) == folder
    assert find_checkpoint(str(folder / "checkpoint.json"), tmp_path / "elsewhere") == folder
