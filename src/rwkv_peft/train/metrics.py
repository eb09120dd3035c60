"""What a run reports, on rank 0 only: a progress bar (or plain lines when not on a terminal), `metrics.jsonl`
(one JSON object per optimizer step), `train_log.txt` (the resolved config, progress lines, validation, the
summary), the loss/lr plot `loss_curve.png`, and optionally Weights & Biases and TensorBoard.

metrics.jsonl records: {step, epoch, loss, lr, grad_norm, tokens (cumulative trained tokens), kt_s (thousands of
trained tokens per second over the step), peak_mem_mb, time (seconds since the run started)}, plus val_loss and
val_ppl on steps that validated. Lines are appended and flushed one at a time; a resumed run first drops the
lines of steps it is about to redo (and a torn last line from a kill).
"""

import datetime
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..errors import UserError

METRICS = "metrics.jsonl"
TRAIN_LOG = "train_log.txt"
PLOT = "loss_curve.png"


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The well-formed records of a metrics.jsonl (a torn last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class RunLogger:
    """All reporting of one run. `enabled` is False on every rank but 0, making each call a no-op."""

    def __init__(self, proj_dir: Path, enabled: bool, progress: str, log_every: int, start_step: int, end_step: int,
                 wandb_project: str = "", tensorboard: bool = False, stream: TextIO | None = None) -> None:
        self.proj_dir, self.enabled, self.log_every = proj_dir, enabled, log_every
        self.start_step, self.end_step = start_step, end_step
        self.stream = stream or sys.stderr
        self.started = time.time()
        self.bar = self.wandb = self.tb = None
        if not enabled:
            return
        proj_dir.mkdir(parents=True, exist_ok=True)
        self._trim_metrics(start_step)
        self.metrics = open(proj_dir / METRICS, "a", encoding="utf-8")
        self.log_file = open(proj_dir / TRAIN_LOG, "a", encoding="utf-8")
        if progress == "auto":
            progress = "bar" if self.stream.isatty() else "lines"
        self.lines = progress == "lines"
        if progress == "bar":
            from tqdm import tqdm
            self.bar = tqdm(total=end_step, initial=start_step, unit="step", file=self.stream, dynamic_ncols=True)
        if wandb_project:
            self.wandb = _import("wandb").init(project=wandb_project, name=proj_dir.name, dir=str(proj_dir))
        if tensorboard:
            self.tb = _import("torch.utils.tensorboard").SummaryWriter(str(proj_dir / "tensorboard"))

    def _trim_metrics(self, start_step: int) -> None:
        path = self.proj_dir / METRICS
        if not path.exists():
            return
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= start_step] if start_step else []
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, path)

    def start(self, header: str, config: dict) -> None:
        """The run's header in train_log.txt (with the resolved config) and on screen."""
        if not self.enabled:
            return
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        self.log_file.write(f"\n=== NEW RUN {stamp}\n{header}\nconfig: {json.dumps(config, indent=2, default=str)}\n")
        self.log_file.flush()
        self.echo(header)
        if self.wandb is not None:
            self.wandb.config.update(config, allow_val_change=True)

    def echo(self, text: str, log: bool = False) -> None:
        """Print `text` (above the bar, if any); with log=True also append it to train_log.txt."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
        if log:
            self.log_file.write(text + "\n")
            self.log_file.flush()

    def step(self, record: dict[str, Any]) -> None:
        """One optimizer step's record (see the module docstring)."""
        if not self.enabled:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        step = record["step"]
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 kt_s=f"{record['kt_s']:.2f}", refresh=False)
        if step % self.log_every == 0 or step == self.end_step:
            done = step - self.start_step
            eta = (time.time() - self.started) / max(1, done) * (self.end_step - step)
            line = (f"step {step}/{self.end_step} | epoch {record['epoch']} | loss {record['loss']:.4f} | "
                    f"lr {record['lr']:.3e} | {record['kt_s']:.2f} Kt/s | eta {_duration(eta)}")
            self.echo(line, log=True) if self.lines else self._log_only(line)
        scalars = {k: v for k, v in record.items() if k not in ("step", "epoch") and isinstance(v, (int, float))}
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)

    def _log_only(self, text: str) -> None:
        self.log_file.write(text + "\n")
        self.log_file.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.metrics.close()
        self.log_file.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.tb is not None:
            self.tb.close()


def _import(module: str):
    """An optional logging backend, with the install hint when it is missing."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        package = "tensorboard" if "tensorboard" in module else module
        raise UserError(f"{package} is not installed; pip install 'rwkv-peft[log]' (or pip install {package})") \
            from None


def ema(values: list[float]) -> list[float]:
    """Exponential moving average with bias correction (the start is not pulled towards 0), smoothing over
    about a tenth of the run."""
    weight = min(0.98, max(0.0, 1 - 10 / max(len(values), 1)))
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def plot_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "") -> Path | None:
    """Loss (raw and smoothed, validation points) and learning rate against the step; None if no data."""
    records = [r for r in read_metrics(metrics_path) if math.isfinite(r.get("loss", math.nan))]
    if not records:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="train loss")
    ax.plot(steps, ema(losses), color="tab:blue", linewidth=2, label="train loss (smoothed)")
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if val:
        ax.plot(*zip(*val), "o-", color="tab:red", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in records], color="tab:orange", linewidth=1, label="learning rate")
    lr_ax.set_ylabel("learning rate")
    handles = ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper right")
    ax.set_title(title or Path(png_path).parent.name)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
