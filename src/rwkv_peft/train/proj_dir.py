"""What a `--proj_dir` already holds, checked before a run writes anything there.

A new run into a folder that holds an earlier run's outputs would replace its checkpoint, truncate its metrics and
overwrite its adapter_config.json, leaving older rwkv-N.pth files beside a config that no longer describes them
(a later merge would silently use the wrong alpha). So a folder with a previous run is refused unless the run
continues that run's checkpoint (`--resume`). An empty folder, or one with unrelated files only, is fine.

Every rank (and the `--devices N` launcher) decides from the folder as it is before training starts: nothing is
written before the workers' rendezvous, so they all see the same folder and agree.
"""

import json
import re
from pathlib import Path

from ..adapters.spec import CONFIG_NAME
from ..errors import UserError
from ..model.checkpoint import nearest_existing
from .checkpoint import DIR_NAME, MANIFEST
from .metrics import METRICS

# What save_adapter writes: rwkv-{epoch}.pth, rwkv-{epoch}-state.pth; and PiSSA's initial factors.
_ADAPTER_FILE = re.compile(r"rwkv-\d+(-state)?\.pth")
_OTHER_OUTPUTS = (CONFIG_NAME, "init_pissa.pth")


def previous_outputs(proj_dir: Path) -> list[str]:
    """The names of the files in `proj_dir` that a training run wrote (checkpoint folder first)."""
    if not proj_dir.is_dir():
        return []
    names = [DIR_NAME] if (proj_dir / DIR_NAME).exists() else []
    names += sorted(p.name for p in proj_dir.iterdir() if _ADAPTER_FILE.fullmatch(p.name))
    names += [name for name in _OTHER_OUTPUTS if (proj_dir / name).exists()]
    # A run that stopped before its first step leaves an empty metrics.jsonl: nothing there to lose.
    metrics = proj_dir / METRICS
    if metrics.is_file() and metrics.stat().st_size:
        names.append(METRICS)
    return names


def _check_is_folder(proj_dir: Path) -> None:
    """proj_dir and each of its existing parents must be folders (mkdir would fail later with a traceback)."""
    path = nearest_existing(proj_dir)
    if path is not None and not path.is_dir():
        what = f"--proj_dir {proj_dir}" if path == proj_dir else f"{path} (in --proj_dir {proj_dir})"
        raise UserError(f"{what} is a file, not a folder; choose a folder for --proj_dir")


def _checkpoint_step(folder: Path) -> int | None:
    """The step of the checkpoint in `folder`, None when there is no readable one (a kill during the first save)."""
    try:
        return int(json.loads((folder / MANIFEST).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_proj_dir(proj_dir: str, resumes_from: Path | None) -> None:
    """Refuse to start in `proj_dir` when it is a file, or holds a previous run that this run does not continue
    (`resumes_from`: the checkpoint folder --resume names, None for a fresh start)."""
    folder = Path(proj_dir)
    _check_is_folder(folder)
    own = folder / DIR_NAME
    if resumes_from is not None and resumes_from.resolve() == own.resolve():
        return  # continuing the run that is there
    found = previous_outputs(folder)
    if not found:
        return
    step = _checkpoint_step(own)
    if step is not None:
        raise UserError(f"{proj_dir} holds a previous run (checkpoint at step {step}); continue it with --resume "
                        "auto, or choose a new --proj_dir (or delete that folder)")
    raise UserError(f"{proj_dir} holds the outputs of a previous run ({', '.join(found)}) and no checkpoint to "
                    "continue it from; choose a new --proj_dir (or delete those files)")
