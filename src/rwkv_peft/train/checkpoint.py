"""`proj_dir/checkpoint-last/`: everything a killed run needs to continue exactly where it stopped.

Contents (tag = the optimizer step, zero-padded):
- `trainable-{tag}.pth`: every trained tensor (adapter, state, train_parts; all weights for full fine-tuning);
- `state-{tag}.pt`: optimizer (AdamW moments), fp16 loss scaler, torch RNG states (dropout);
- `init_pissa-{tag}.pth`: PiSSA's initial factors (a resumed run must not redo the randomized SVD);
- `checkpoint.json`: the manifest: step, epoch, data loader position, run totals, which files belong to it, and
  what the run trained (adapter settings, base fingerprint) so a mismatched resume is refused.

Atomicity: each file is written to a temp name and renamed into place; the manifest is written last and is the
commit point. Until it is replaced, the old manifest and the old files it names are all still there; the files
of older tags are deleted only after the new manifest is in place. A kill at any moment therefore leaves either
the previous checkpoint or the new one, never a mix, and never a half-written file under a final name.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..adapters import read_pissa_init, write_pissa_init
from ..errors import UserError
from ..model import read_checkpoint, write_checkpoint

DIR_NAME = "checkpoint-last"
MANIFEST = "checkpoint.json"
FORMAT = "rwkv-peft-checkpoint"


@dataclass
class ResumePoint:
    """A checkpoint read back: the manifest, trained tensors, optimizer/scaler/RNG state, PiSSA factors."""

    path: Path
    manifest: dict[str, Any]
    trainable: dict[str, Tensor]
    state: dict[str, Any]
    pissa_init: dict[str, tuple[Tensor, Tensor]] | None

    @property
    def step(self) -> int:
        return int(self.manifest["step"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_json(data: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(proj_dir: str | os.PathLike, step: int, trainable: dict[str, Tensor], state: dict[str, Any],
                    manifest: dict[str, Any], pissa_model: nn.Module | None = None) -> Path:
    """Write checkpoint-last for optimizer step `step` (see the module docstring for the layout)."""
    folder = Path(proj_dir) / DIR_NAME
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{step:08d}"
    files = {"trainable": f"trainable-{tag}.pth", "state": f"state-{tag}.pt", "pissa_init": None}
    write_checkpoint(trainable, folder / files["trainable"])
    _atomic_torch_save(state, folder / files["state"])
    if pissa_model is not None:
        files["pissa_init"] = f"init_pissa-{tag}.pth"
        scratch = Path(tempfile.mkdtemp(dir=folder, prefix=".pissa."))
        try:
            os.replace(write_pissa_init(pissa_model, scratch), folder / files["pissa_init"])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    _atomic_json({"format": FORMAT, "format_version": 1, "step": step, "files": files, **manifest},
                 folder / MANIFEST)
    keep = {MANIFEST, *(name for name in files.values() if name)}
    for stale in folder.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
    return folder


def find_checkpoint(resume: str, proj_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder `--resume` names: "auto" -> proj_dir/checkpoint-last if it holds one (else None,
    a fresh start); a path -> that folder (or its checkpoint.json), which must exist; "" -> None."""
    if not resume:
        return None
    if resume == "auto":
        folder = Path(proj_dir) / DIR_NAME
        return folder if (folder / MANIFEST).is_file() else None
    folder = Path(resume)
    if folder.name == MANIFEST:
        folder = folder.parent
    if not (folder / MANIFEST).is_file():
        raise UserError(f"--resume {resume}: no {MANIFEST} there; pass a {DIR_NAME} folder written by "
                        "rwkv-peft train, or --resume auto")
    return folder


def read_checkpoint_folder(folder: Path) -> ResumePoint:
    """Load a checkpoint folder; a missing or damaged part is a UserError naming it."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{folder / MANIFEST}: unreadable ({e}); resume from another checkpoint") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{folder / MANIFEST}: not an rwkv-peft training checkpoint")
    files = manifest["files"]
    trainable = read_checkpoint(folder / files["trainable"])
    try:
        state = torch.load(folder / files["state"], map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as e:
        raise UserError(f"{folder / files['state']}: unreadable ({str(e).splitlines()[0]})") from None
    pissa = read_pissa_init(folder / files["pissa_init"]) if files.get("pissa_init") else None
    return ResumePoint(folder, manifest, trainable, state, pissa)
