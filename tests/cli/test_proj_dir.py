"""What `rwkv-peft train` does with a --proj_dir that is not empty: a previous run there is never overwritten, a
finished run resumed says it is complete, and a file where the folder should be is a clear error."""

from pathlib import Path

import pytest

from ..train.helpers import records, run_cli, train_args

LORA = ["--peft", "lora", "--lora_config", '{"lora_r":4,"lora_alpha":8}', "--epoch_steps", "4", "--plot", "0"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(run) -> str:
    assert run.rc == 2, (run.out, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.err, run.err
    return lines[0]


@pytest.fixture(scope="module")
def finished(base, data, tmp_path_factory) -> Path:
    """A proj_dir holding a complete 4-step LoRA run."""
    proj = tmp_path_factory.mktemp("finished") / "p1"
    run = run_cli(*train_args(base, data, proj, *LORA))
    assert run.rc == 0, run.err
    return proj


def test_a_new_run_over_a_previous_one_is_refused_and_changes_nothing(finished, base, data):
    before = snapshot(finished)
    other_alpha = [*LORA[:2], "--lora_config", '{"lora_r":4,"lora_alpha":64}', *LORA[4:]]
    line = one_line_error(run_cli(*train_args(base, data, finished, *other_alpha)))
    assert line.endswith(f"{finished} holds a previous run (checkpoint at step 4); continue it with --resume auto, "
                         "or choose a new --proj_dir (or delete that folder)")
    assert snapshot(finished) == before


def test_outputs_without_a_checkpoint_are_kept_even_with_resume_auto(finished, base, data, tmp_path):
    """--resume auto with no checkpoint to continue starts fresh, but not over a previous run's files."""
    proj = tmp_path / "p2"
    proj.mkdir()
    for name in ("rwkv-0.pth", "adapter_config.json", "metrics.jsonl"):
        (proj / name).write_bytes((finished / name).read_bytes())
    before = snapshot(proj)
    line = one_line_error(run_cli(*train_args(base, data, proj, *LORA, "--resume", "auto")))
    assert "holds the outputs of a previous run (rwkv-0.pth, adapter_config.json, metrics.jsonl)" in line
    assert "choose a new --proj_dir" in line and "--resume auto" not in line
    assert snapshot(proj) == before


def test_resume_from_another_folder_into_a_previous_run_is_refused(finished, base, data, tmp_path):
    proj = tmp_path / "p3"
    assert run_cli(*train_args(base, data, proj, *LORA, "--max_steps", "2")).rc == 0
    before = snapshot(proj)
    line = one_line_error(run_cli(*train_args(base, data, proj, *LORA, "--epoch_count", "2",
                                              "--resume", finished / "checkpoint-last")))
    assert f"{proj} holds a previous run (checkpoint at step 2)" in line
    assert snapshot(proj) == before


def test_an_empty_folder_or_unrelated_files_are_fine(base, data, tmp_path):
    empty, notes = tmp_path / "empty", tmp_path / "notes"
    empty.mkdir()
    notes.mkdir()
    (notes / "README.txt").write_text("my notes")
    (notes / "RWKV-x070-World-0.1B.pth").write_bytes(b"not ours")  # a base model kept beside the outputs
    for proj in (empty, notes):
        run = run_cli(*train_args(base, data, proj, *LORA, "--max_steps", "2"))
        assert run.rc == 0, run.err
        assert [r["step"] for r in records(proj)] == [1, 2]
    assert (notes / "README.txt").read_text() == "my notes"


def test_resuming_a_finished_run_says_so_and_writes_nothing(finished, base, data):
    before = snapshot(finished)
    run = run_cli(*train_args(base, data, finished, *LORA, "--resume", "auto"))
    assert run.rc == 0, run.err
    lines = run.err.strip().splitlines()
    assert lines == [f"{finished}: the run is already complete at step 4 (of 4); its final weights are "
                     f"{finished / 'rwkv-0.pth'}. Nothing was trained or written; raise --epoch_count or --max_steps "
                     "to train further"], run.err
    assert snapshot(finished) == before


def test_a_file_as_proj_dir_is_a_clear_error(base, data, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    line = one_line_error(run_cli(*train_args(base, data, afile, *LORA)))
    assert line.endswith(f"--proj_dir {afile} is a file, not a folder; choose a folder for --proj_dir")
    line = one_line_error(run_cli(*train_args(base, data, afile / "sub", *LORA)))
    assert f"{afile} (in --proj_dir {afile / 'sub'}) is a file, not a folder" in line
    assert afile.read_text() == ""


def test_devices_2_refuses_a_previous_run_once_before_any_worker_starts(finished, base, data):
    before = snapshot(finished)
    line = one_line_error(run_cli(*train_args(base, data, finished, *LORA, "--devices", "2")))
    assert f"{finished} holds a previous run (checkpoint at step 4)" in line
    assert snapshot(finished) == before
