"""The training loop: setup, step, evaluate, save. `train(cfg)` runs a whole job and returns its summary.

Units. An epoch is `epoch_steps` micro-batches of all devices together (epoch_steps x micro_bsz samples, the
seeds' "mini-epoch"); it has epoch_steps / (devices x accumulate_grad_batches) optimizer steps. `step` below
always counts optimizer steps since the run's beginning (epoch_begin epochs count as done), and the schedule,
--warmup_steps, --max_steps and --checkpoint_every use that unit. The data loader streams through the data
independently of epochs (reshuffled at every pass), so consecutive epochs see new samples, not the same first
epoch_steps x micro_bsz ones.

One optimizer step: fetch accumulate_grad_batches micro-batches, count their trained tokens N (over all ranks:
the global batch), run forward and backward on each with loss sum(CE)/N (so the step's gradient is the token-mean
over all of them, as one process seeing the whole global batch would compute), unscale (fp16), clip, check for
NaN/inf, step; the step's loss and gradient norm are read back to the host once, at the check. With graphed
updates the check runs on the device (graph.py) and the trainer launches the next step before reading this one
back, so the GPU does not wait for the host between steps; it does not run ahead of a save, a validation or the
last step. The epoch's end saves `rwkv-{epoch}.pth` (every epoch_save epochs and the last) and `checkpoint-last/`.
On a GPU each micro-batch's forward and backward, and then the clipping and optimizer step, are usually replayed
CUDA graphs (graph.py; --cuda_graph), rows padded to a few bucket lengths so that few graphs (and compiled shapes)
are needed.

Several ranks (torchrun, `--devices N`): each reads its own share of every global batch, the --strategy engine
(`wrap.py`) averages gradients, the reported loss, token counts and speed are those of the whole global batch
(peak memory: the largest rank's), and rank 0 alone writes files.
"""

import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import adapters
from ..data.batch import Batch, bucket_length
from ..errors import UserError
from ..model.embed import embed
from .checkpoint import DIR_NAME as CHECKPOINT_DIR
from .checkpoint import ResumePoint, find_checkpoint, read_checkpoint_folder, save_checkpoint
from .config import TrainConfig
from .dist import init_distributed, resolve_device, shutdown_distributed
from .eval import evaluate, sample
from .graph import GraphedStep, GraphedUpdate
from .infctx import infctx_backward
from .metrics import METRICS, PLOT, TRAIN_LOG, RunLogger, plot_curves, read_metrics
from .oom import out_of_memory
from .optim import apply_schedule
from .proj_dir import check_proj_dir
from .rng import rng_state, set_rng_state
from .session import Session, build_session
from .stop import StopRequest


class TrainingDiverged(UserError):
    """The loss or the gradient became NaN/inf; raised before the bad update is applied."""


@dataclass
class _Launched:
    """An optimizer step whose work is queued on the device but not yet read back."""
    number: int  # 1-based: the step count once it is done
    lr: float
    n_tokens: int
    normalizer: int
    started: float
    ce: torch.Tensor  # the sum of its micro-batches' CE, 0-d, on the device
    # graphed update: [CE sum, gradient norm, refused] as they will be on the host once `ready` has passed
    stats: torch.Tensor | None = None
    ready: torch.cuda.Event | None = None


@dataclass
class RunSummary:
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    peak_mem_mb: float
    files: list[str] = field(default_factory=list)
    val: dict | None = None

    def text(self) -> str:
        rate = self.tokens / max(self.seconds, 1e-9) / 1000
        lines = [f"done: {self.steps} steps, {self.tokens:,} trained tokens in {self.seconds:.0f}s ({rate:.2f} Kt/s), "
                 f"final loss {self.final_loss:.4f}, peak memory {self.peak_mem_mb:.0f} MB"]
        if self.val:
            lines.append(f"validation: loss {self.val['loss']:.4f}, perplexity {self.val['ppl']:.2f}")
        lines += ["files:"] + [f"  {f}" for f in self.files]
        return "\n".join(lines)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Trainer:
    """One run. Construction does the setup (model, adapter, data, optimizer, resume); `fit()` trains."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        folder = find_checkpoint(cfg.run.resume, cfg.run.proj_dir)
        check_proj_dir(cfg.run.proj_dir, folder)
        self.dist = init_distributed(cfg.run.accelerator)
        # Every rank has looked at proj_dir before rank 0 may write there, so all of them saw the same folder.
        self.dist.barrier()
        self.device = resolve_device(cfg.run.accelerator, cfg.run.devices, cfg.run.num_nodes, self.dist)
        self.seed = cfg.run.random_seed if cfg.run.random_seed >= 0 else random.SystemRandom().randrange(2**31)
        torch.manual_seed(self.seed)
        self.resume: ResumePoint | None = read_checkpoint_folder(folder) if folder else None
        self.s: Session = build_session(cfg, self.device, self.dist, self.seed, self.resume)
        s = self.s
        if self.dist.rank:
            torch.manual_seed(self.seed + self.dist.rank)  # the same init everywhere, then each rank its own dropout
        self.step = s.start_step
        self.tokens, self.elapsed, self.started = 0, 0.0, time.time()
        self.last_saved: int | None = None
        self.last_read = 0.0  # when the previous step was read back (its speed is measured from there)
        self.last_loss, self.last_val, self.adapter_file = math.nan, None, None
        # Compiled or graphed steps want few distinct shapes: rows are padded up to bucket lengths.
        self.bucketed = s.model.compile or s.cuda_graph
        self.graphed = GraphedStep(self._dense_forward_backward, s.trainable) if s.cuda_graph else None
        self.update = None
        if s.cuda_graph and s.scaler is None and not s.engine.owns_step:
            self.update = GraphedUpdate(s.optimizer, s.trainable, cfg.optim.gradient_clip_val or math.inf)
        # Where two steps' statistics land on the host, one row per step in flight.
        self.stats_host = torch.zeros(2, 3, pin_memory=self.device.type == "cuda")
        if self.resume is not None:
            self._restore(self.resume)
        # A checkpoint at (or past) this run's last step leaves nothing to do: fit() says so, and the logger stays
        # disabled so that no file of the finished run is touched.
        self.complete = self.resume is not None and self.step >= s.end_step
        self.log = RunLogger(s.proj_dir, self.dist.is_main and not self.complete, cfg.log.progress,
                             cfg.log.log_every, self.step, s.end_step, cfg.log.wandb, cfg.log.tensorboard)

    def _restore(self, point: ResumePoint) -> None:
        s, m = self.s, point.manifest  # the trained tensors were loaded by build_session
        try:
            s.engine.load_optimizer_state(s.optimizer, point.state["optimizer"])
        except (ValueError, KeyError) as e:
            raise UserError(f"{point.path}: its optimizer state does not fit this run ({e}); resume with the "
                            "settings it was made with, or start a new --proj_dir") from None
        if s.scaler is not None and point.state.get("scaler"):
            s.scaler.load_state_dict(point.state["scaler"])
        s.loader.load_state_dict(m["loader"])
        ranks = point.state.get("rng_ranks") or []
        set_rng_state(ranks[self.dist.rank] if len(ranks) == self.dist.world_size else point.state["rng"],
                      self.device)
        self.step, self.tokens, self.elapsed = point.step, m["tokens"], m["seconds"]
        self.last_saved = point.step

    # ---------------------------------------------------------------- the loop
    def fit(self) -> RunSummary:
        s, cfg = self.s, self.cfg
        if self.complete:
            return self._already_complete()
        self.log.start(s.describe(self.step, self.resume.path if self.resume else None),
                       cfg.to_dict() | {"resolved": s.resolved})
        batches = iter(s.loader)
        self.started = time.time() - self.elapsed
        try:
            with StopRequest(enabled=self.dist.world_size == 1) as stop:
                self._run(batches, stop)
            if self.last_saved != self.step:
                self.save(epoch_file=True)
            self.elapsed = time.time() - self.started
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                self.log.echo(f"interrupted at step {self.step}; {self._last_good()}; --resume auto continues "
                              "from there", log=True)
            self._plot()
            self.log.close()
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise out_of_memory(e, self.cfg, self.device, self.step + 1, self.s.cuda_graph,
                                    f"{self._last_good()}; --resume auto continues from there") from None
            raise
        self._plot()
        summary = self._finish()
        self.log.close()
        return summary

    def _run(self, batches, stop: StopRequest) -> None:
        """Steps until the end, saving on schedule; after a Ctrl-C (`stop`), saves and raises KeyboardInterrupt."""
        s = self.s
        ahead: _Launched | None = None
        while self.step < s.end_step:
            launched = ahead or self._launch(batches, self.step)
            ahead = None
            at_epoch_end, val_due, checkpoint_due = due = self._due_after(launched.number)
            if self.update is not None and not stop.requested and not any(due):
                ahead = self._launch(batches, launched.number)
            record = self._read_back(launched)
            if val_due:
                record |= self.validate()
            self.log.step(record)
            if at_epoch_end:
                due = self._epoch_file_due(self.step // s.steps_per_epoch - 1) or self.step == s.end_step
                self.save(epoch_file=due)
            elif checkpoint_due:
                self.save(epoch_file=False)
            if stop.requested and self.step < s.end_step and ahead is None:
                if self.last_saved != self.step:
                    self.save(epoch_file=False)
                raise KeyboardInterrupt

    def _due_after(self, step: int) -> tuple[bool, bool, bool]:
        """(epoch end, validation, checkpoint) due once `step` steps are done; the last step counts as all three
        (each of them needs that step's parameters, so the trainer does not launch the next one before)."""
        s, cfg = self.s, self.cfg
        last = step >= s.end_step
        at_epoch_end = step % s.steps_per_epoch == 0 or last
        val_due = s.val_data is not None and (
            last or ((step % cfg.log.val_every == 0) if cfg.log.val_every else at_epoch_end))
        every = cfg.run.checkpoint_every
        return at_epoch_end, val_due, bool(every and step % every == 0) or last

    def train_step(self, batches) -> dict:
        """One optimizer step, launched and read back; returns its metrics record. Raises TrainingDiverged before a
        bad update."""
        return self._read_back(self._launch(batches, self.step))

    def _launch(self, batches, index: int) -> _Launched:
        """Queue optimizer step `index` (0-based): its micro-batches' forward and backward, and with graphed
        updates the update itself (refused on the device if non-finite); nothing here waits for the device."""
        s, cfg = self.s, self.cfg
        t0 = time.time()
        lr = apply_schedule(s.optimizer, s.schedule, index)
        micro = [next(batches) for _ in range(cfg.optim.accumulate_grad_batches)]
        if self.bucketed:
            micro = [b.pad_to(bucket_length(b.input_ids.shape[1], cfg.data.ctx_len)) for b in micro]
        # Counted on the host, before the copy: counting on the device would wait for the step before this one.
        n_tokens = int(self.dist.all_reduce_sum([sum(b.num_tokens for b in micro)], self.device)[0])
        micro = [self._to_device(b) for b in micro]
        normalizer = max(1, n_tokens)
        # fp16: the scaler's current factor (scaling a unit also starts the scaler on its first step).
        scale = float(s.scaler.scale(torch.ones((), device=self.device))) if s.scaler is not None else 1.0
        ce = sum(self.forward_backward(b, normalizer, scale, last=i == len(micro) - 1) for i, b in enumerate(micro))
        launched = _Launched(index + 1, lr, n_tokens, normalizer, t0, torch.as_tensor(ce))
        if self.update is not None:
            self._graphed_update(launched)
        return launched

    def _to_device(self, batch):
        """The batch on the training device, copied without making the host wait for the device (pinned memory).
        A host-resident embedding table (--quant) with graphed steps: its rows are gathered here, on the host."""
        if self.device.type != "cuda":
            return batch
        emb = self.s.model.emb
        if self.graphed is not None and emb.weight.device.type == "cpu" and batch.cu_seqlens is None:
            batch = Batch(embed(emb, batch.input_ids), batch.labels)
        return batch.pin_memory().to(self.device, non_blocking=True)

    def _read_back(self, launched: _Launched) -> dict:
        """Wait for `launched` and check it (TrainingDiverged if it was refused, or, with eager updates, before
        applying it); returns its metrics record."""
        s = self.s
        if launched.stats is not None:
            if launched.ready is not None:
                launched.ready.synchronize()
            ce_sum, grad_norm, refused = launched.stats.tolist()
            loss = ce_sum / launched.normalizer
            if refused:
                self._diverged(loss, grad_norm)
        else:
            loss = self.dist.all_reduce_sum([float(launched.ce)], self.device)[0] / launched.normalizer
            grad_norm = self._eager_update(loss)
        now = time.time()
        seconds, self.last_read = now - max(launched.started, self.last_read), now
        self.step = launched.number
        self.tokens += launched.n_tokens
        self.last_loss = loss
        peak_mb = self.dist.all_reduce_max([peak_memory_mb(self.device)], self.device)[0]
        record = {"step": self.step, "epoch": (self.step - 1) // s.steps_per_epoch, "loss": loss, "lr": launched.lr,
                  "grad_norm": grad_norm, "tokens": self.tokens,
                  "kt_s": launched.n_tokens / max(seconds, 1e-9) / 1000,
                  "peak_mem_mb": round(peak_mb, 1), "time": round(now - self.started, 3)}
        if not math.isfinite(grad_norm):
            record["skipped"] = True  # fp16 overflow: the scaler lowered its factor and skipped this update
        return record

    def forward_backward(self, batch, normalizer: int, scale: float = 1.0, last: bool = True) -> torch.Tensor:
        """Backward of one micro-batch's share of the step loss (times `scale`); returns its sum of CE (a 0-d
        tensor, not read back here). `last`: the step's last micro-batch (where the engine synchronises gradients)."""
        s = self.s
        # The engines average gradients over ranks; each rank's share of the global mean is worth world_size.
        normalizer = normalizer / s.engine.grad_divisor
        if self.graphed is not None:
            # input_ids are token ids (the graph embeds them), or with a host-resident table (--quant) the rows
            # `_to_device` gathered on the host.
            try:
                return self.graphed(batch.input_ids, batch.labels, normalizer) * normalizer
            except RuntimeError as e:
                self._capture_failed("a micro-batch", e)
        if s.chunk_ctx:
            return torch.as_tensor(infctx_backward(s.model, batch.input_ids, batch.labels, s.chunk_ctx, normalizer,
                                                   s.precision, scale)[0])
        with s.engine.accumulating(last):
            loss, _ = s.engine.loss(batch.input_ids, batch.labels, batch.cu_seqlens, normalizer)
            if loss.requires_grad:
                s.engine.backward(loss * scale)
        return loss.detach() * normalizer

    def _dense_forward_backward(self, input_ids: torch.Tensor, labels: torch.Tensor,
                                normalizer: torch.Tensor) -> torch.Tensor:
        """forward_backward without host syncs (what a CUDA graph captures); returns the detached step loss.
        input_ids may be their embeddings already gathered (a host-resident table).

        The gradients are added into the static `.grad` tensors by one foreach add (a few multi-tensor kernels)
        rather than by backward's one add kernel per trained tensor: H100, 1.5B LoRA (440 tensors), 29.2 -> 29.8
        Kt/s at grad_cp 0 (same memory), 20.5 -> 21.75 at grad_cp 1 (+0.15 GiB: every gradient is alive at the end
        of backward); bench/NOTES.md. Graphs run in one process only, so no DDP hook misses them."""
        loss = self.s.engine.module.dense_loss(input_ids, labels, normalizer)
        params = self.s.trainable
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        used = [(p.grad, g) for p, g in zip(params, grads, strict=True) if g is not None]  # GraphedStep made .grad
        torch._foreach_add_([a for a, _ in used], [g for _, g in used])
        return loss.detach()

    def _eager_update(self, loss: float) -> float:
        """Synchronise, clip and step (or let the engine do it); returns the gradient norm."""
        s = self.s
        if s.engine.owns_step:  # DeepSpeed clips and steps itself, and skips a non-finite update
            if not math.isfinite(loss):
                self._diverged(loss, math.nan)
            grad_norm = s.engine.step()
            if not math.isfinite(grad_norm):
                self._diverged(loss, grad_norm)
            return grad_norm
        s.engine.sync_gradients()
        grad_norm = self._unscale_and_clip()
        if not math.isfinite(loss) or (s.scaler is None and not math.isfinite(grad_norm)):
            self._diverged(loss, grad_norm)
        if s.scaler is not None:
            s.scaler.step(s.optimizer)  # skips the update itself when fp16 gradients overflowed
            s.scaler.update()
        else:
            s.optimizer.step()
        s.optimizer.zero_grad()  # graphed runs never get here: GraphedUpdate zeroes their gradients in place
        return grad_norm

    def _graphed_update(self, launched: _Launched) -> None:
        """Queue the update as replayed graphs (one process, no loss scaler), and the copy of the step's CE sum,
        gradient norm and refusal flag to the host. A failed capture of the norm leaves the update to
        `_eager_update` at read-back (launched.stats stays None)."""
        update = self.update
        try:
            norm = update.grad_norm()
        except RuntimeError as e:
            self._capture_failed("the update", e)
            return
        try:
            update.apply(launched.ce)
        except RuntimeError as e:
            self._capture_failed("the update", e)
            update.apply_eagerly(launched.ce)
        stats = torch.stack([launched.ce.float(), norm, update.refused])
        if self.device.type != "cuda":
            launched.stats = stats
            return
        launched.stats = self.stats_host[launched.number % 2]
        launched.stats.copy_(stats, non_blocking=True)
        launched.ready = torch.cuda.Event()
        launched.ready.record()

    def _capture_failed(self, what: str, error: RuntimeError) -> None:
        """A capture failed (nothing ran in it): --cuda_graph 1 stops, auto goes on without graphs."""
        if self.cfg.model.cuda_graph == "1":
            raise error
        self.log.echo(f"CUDA graph capture of {what} failed ({str(error).splitlines()[0][:160]}); continuing "
                      "without --cuda_graph", log=True)
        self.graphed = self.update = None

    def _unscale_and_clip(self) -> float:
        s = self.s
        if s.scaler is not None:
            s.scaler.unscale_(s.optimizer)
        max_norm = self.cfg.optim.gradient_clip_val or math.inf
        return float(torch.nn.utils.clip_grad_norm_(s.trainable, max_norm))

    def _last_good(self) -> str:
        if self.last_saved is None:
            return "no checkpoint had been written yet"
        return f"checkpoint-last (step {self.last_saved}) and the rwkv-*.pth files written so far are intact"

    def _diverged(self, loss: float, grad_norm: float) -> None:
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
        o = self.cfg.optim
        tips = [f"a lower --lr_init (now {o.lr_init:g})"]
        if self.s.precision.name == "fp16":
            tips.append("--precision bf16 (fp16 overflows easily)")
        if not o.gradient_clip_val:
            tips.append("--gradient_clip_val 1.0")
        tips += ["more --warmup_steps", "checking the data of this step"]
        raise TrainingDiverged(f"step {self.step + 1}: {what}; stopped without applying the update. "
                               f"{self._last_good()}. Try {', '.join(tips)}; --resume auto continues from the "
                               "last checkpoint")

    # ---------------------------------------------------------------- evaluate and save
    def validate(self) -> dict:
        """Validation loss/perplexity (and samples) now; returns the fields added to the step's record."""
        s, cfg = self.s, self.cfg
        result = evaluate(s.model, s.val_data, cfg.data.micro_bsz, s.precision, self.device, cfg.log.val_batches,
                          s.chunk_ctx, self.dist, s.engine.module)
        self.last_val = result.as_dict()
        self.log.echo(f"validation @ step {self.step}: loss {result.loss:.4f}, perplexity {result.ppl:.2f} "
                      f"({result.tokens:,} tokens)", log=True)
        if cfg.log.sample_prompts and self.dist.is_main and s.engine.can_sample:
            texts = sample(s.model, s.tokenizer(), cfg.log.sample_prompts, cfg.log.sample_tokens, s.precision)
            for prompt, text in zip(cfg.log.sample_prompts, texts):
                self.log.echo(f"sample @ step {self.step}: {prompt!r} -> {text!r}", log=True)
        return {"val_loss": result.loss, "val_ppl": result.ppl}

    def _epoch_file_due(self, epoch: int) -> bool:
        every = self.cfg.schedule.epoch_save
        return (every > 0 and epoch % every == 0) or epoch == self.cfg.schedule.epoch_count - 1

    def save(self, epoch_file: bool) -> None:
        """checkpoint-last, and with epoch_file the adapter file of the current epoch. Rank 0 writes; the others
        contribute what only they hold (optimizer shards, RNG states) and wait until the files are in place."""
        s = self.s
        self.last_saved = self.step
        optimizer = s.engine.optimizer_state(s.optimizer)
        rng = self.dist.gather_to_main(rng_state(self.device))
        with s.engine.gathered():
            if self.dist.is_main:
                self._write(epoch_file, optimizer, rng)
        self.dist.barrier()

    def _write(self, epoch_file: bool, optimizer: dict, rng: list) -> None:
        s = self.s
        if epoch_file:
            epoch = max(0, self.step - 1) // s.steps_per_epoch
            self.adapter_file = adapters.save_adapter(s.model, s.spec, s.proj_dir, epoch, s.base_info)
            self.log.echo(f"saved {self.adapter_file}", log=True)
        state = {"optimizer": optimizer, "scaler": s.scaler.state_dict() if s.scaler else None, "rng": rng[0]}
        if len(rng) > 1:
            state["rng_ranks"] = rng
        manifest = {"epoch": self.step // s.steps_per_epoch, "loader": s.loader.state_dict(), "tokens": self.tokens,
                    "seconds": time.time() - self.started, "identity": s.identity, "seed": self.seed}
        save_checkpoint(s.proj_dir, self.step, adapters.trainable_parameters(s.model), state, manifest,
                        s.model if s.spec.method == "pissa" else None)

    def _plot(self) -> None:
        if not (self.cfg.log.plot and self.dist.is_main and (self.s.proj_dir / METRICS).exists()):
            return
        try:
            plot_curves(self.s.proj_dir / METRICS, self.s.proj_dir / PLOT, f"{self.s.proj_dir.name}: "
                        f"{self.s.resolved['method']}")
        except ImportError:
            self.log.echo("no loss_curve.png: matplotlib is not installed (pip install matplotlib)", log=True)

    def _already_complete(self) -> RunSummary:
        """The summary of a resumed run that had already done every step, after one line saying so."""
        s, point = self.s, self.resume
        run_dir = point.path.parent
        final = run_dir / f"rwkv-{max(0, self.step - 1) // s.steps_per_epoch}.pth"
        outputs = final if final.exists() else point.path
        end = f"of {s.end_step}" if self.step == s.end_step else f"this run ends at step {s.end_step}"
        if self.dist.is_main:
            print(f"{run_dir}: the run is already complete at step {self.step} ({end}); its final weights are "
                  f"{outputs}. Nothing was trained or written; raise --epoch_count or --max_steps to train further",
                  file=sys.stderr, flush=True)
        done = read_metrics(run_dir / METRICS) if (run_dir / METRICS).is_file() else []
        loss = done[-1]["loss"] if done else math.nan
        return RunSummary(self.step, self.tokens, self.elapsed, loss, 0.0, [str(outputs)], self.last_val)

    def _finish(self) -> RunSummary:
        s = self.s
        files = []
        if self.adapter_file is not None:
            files.append(f"{self.adapter_file}  <- the {s.spec.method} weights (+ adapter_config.json)")
            if s.spec.method == "pissa":
                files.append(f"{s.proj_dir / 'init_pissa.pth'}  <- needed to merge PiSSA")
        files.append(f"{s.proj_dir / CHECKPOINT_DIR}/  <- resume with --resume auto")
        files += [str(s.proj_dir / name) for name in (METRICS, TRAIN_LOG, PLOT) if (s.proj_dir / name).exists()]
        summary = RunSummary(self.step, self.tokens, self.elapsed, self.last_loss,
                             peak_memory_mb(self.device), files, self.last_val)
        text = summary.text()
        if self.adapter_file is not None:
            text += "\n" + next_steps(s.spec.method, self.cfg.model.load_model, self.adapter_file)
        self.log.echo(text, log=True)
        return summary


def next_steps(method: str, base: str, adapter: Path) -> str:
    """What to run next with the file a run wrote."""
    if method == "none":
        return f"next: rwkv-peft generate --model {adapter} --chat --prompt 'Hello'"
    mount = "--state" if method == "state" else "--adapter"
    merged = adapter.with_name(f"{adapter.stem}-merged.pth")
    return (f"next: rwkv-peft generate --model {base} {mount} {adapter} --chat --prompt 'Hello'\n"
            f"      rwkv-peft merge --base_model {base} --peft_checkpoint {adapter} --output {merged}")


def train(cfg: TrainConfig) -> RunSummary:
    """Run the training job `cfg` describes (in a torchrun worker: this rank's part of it)."""
    try:
        try:
            trainer = Trainer(cfg)
        except torch.cuda.OutOfMemoryError as e:
            device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
            raise out_of_memory(e, cfg, device, step=None, cuda_graph=False) from None
        return trainer.fit()
    finally:
        shutdown_distributed()
