"""Everything a run is made of, built from the config: the base model with its adapter, the data, the step
counts, the optimizer and schedule. Checks against the checkpoint and the data happen here, before any step.

The seams to the layers below are few: `model.load` (read and build the base), `adapters.spec_from_flags` /
`apply_adapter` / `trainable_parameters` / `base_info` (what trains), `quant.quantize_model` (a quantized frozen
base), `data.build_dataset` / `BatchLoader` (what it trains on), `wrap.wrap` (the --strategy engine the ranks share
steps through).
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import adapters
from ..data import BatchLoader, TokenDataset, build_dataset
from ..errors import UserError
from ..model import read_checkpoint
from ..model.load import check_against, model_from_state_dict
from ..model.tokenizer import Tokenizer
from ..ops import model_backend, registry
from ..quant import quantize_model
from .checkpoint import ResumePoint
from .config import TrainConfig
from .dist import DistInfo
from .optim import GroupRates, build_optimizer, preallocate, state_rates
from .precision import Precision
from .schedule import Schedule
from .wrap import Engine, check_supported, resolve_strategy, wrap


@dataclass
class Session:
    proj_dir: Path
    precision: Precision
    model: nn.Module
    spec: adapters.AdapterSpec
    base_info: dict
    identity: dict
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: "torch.amp.GradScaler | None"
    schedule: Schedule
    loader: BatchLoader
    val_data: TokenDataset | None
    steps_per_epoch: int
    start_step: int
    end_step: int
    chunk_ctx: int
    cuda_graph: bool
    resolved: dict
    engine: Engine
    notes: list[str] = field(default_factory=list)
    _tokenizer: Tokenizer | None = None

    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer()
        return self._tokenizer

    def describe(self, step: int, resumed_from: Path | None) -> str:
        """A few lines saying what this run does (printed at the start and kept in train_log.txt)."""
        r = self.resolved
        lines = [f"rwkv-peft train: RWKV-{r['version']} L{r['n_layer']} C{r['n_embd']} V{r['vocab_size']} "
                 f"({r['load_model']}) | {r['method']} | {r['trainable_params']:,} trainable parameters "
                 f"({r['trainable_pct']:.2f}%)",
                 f"data: {r['data_file']}: {r['documents']:,} documents, {r['data_tokens']:,} tokens | ctx_len "
                 f"{r['ctx_len']}{' in chunks of ' + str(self.chunk_ctx) if self.chunk_ctx else ''} | micro_bsz "
                 f"{r['micro_bsz']} x accumulate {r['accumulate']} x {r['world_size']} device(s)"
                 + (f" ({r['strategy']})" if r["world_size"] > 1 else ""),
                 f"schedule: {self.schedule.kind}, {r['steps_per_epoch']} steps/epoch x {r['epoch_count']} epochs = "
                 f"{r['total_steps']} steps; this run: step {step} -> {self.end_step}"
                 + (f" (resumed from {resumed_from})" if resumed_from else ""),
                 f"precision {self.precision.name} on {r['device']}"
                 + "".join(f", {what}" for what in ("compile", "cuda_graph") if r[what])
                 + f", WKV {r['wkv']}, seed {r['seed']}, outputs in {self.proj_dir}/"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _adapter_flags(cfg: TrainConfig) -> dict:
    """The adapter section in the form adapters.spec_from_flags reads (absent train_parts: the default)."""
    flags = dict(vars(cfg.adapter))
    if flags["train_parts"] is None:
        del flags["train_parts"]
    return flags


def _load_base(cfg: TrainConfig, device: torch.device, precision: Precision) -> tuple[nn.Module, dict]:
    """The base model, and the checkpoint's tensors it was built from (what a loaded adapter is checked against)."""
    m = cfg.model
    base, state = adapters.split_state(read_checkpoint(m.load_model))
    if state:
        raise UserError(f"{m.load_model} carries merged time_state tensors; train from the plain base model and "
                        "mount the state with --state instead")
    # A quantized base is built on the CPU and quantized layer by layer onto the GPU (build_session), so the
    # full-precision weights never occupy it: the GPU's peak memory is the quantized model's.
    build_on = torch.device("cpu") if cfg.adapter.quant != "none" else device
    model = model_from_state_dict(base, m.load_model, build_on, precision.frozen_dtype)
    mc = model.config
    check_against(mc, m.load_model, n_layer=m.n_layer, n_embd=m.n_embd, vocab_size=m.vocab_size,
                  head_size=m.head_size_a, dim_ffn=m.dim_ffn)
    dim_att = mc.dim_att if mc.version == 6 else mc.n_embd
    if m.dim_att and m.dim_att != dim_att:
        raise UserError(f"--dim_att {m.dim_att} disagrees with {m.load_model}, which has dim_att={dim_att}; "
                        "drop the flag (sizes are read from the checkpoint)")
    if m.my_testing and m.my_testing != f"x0{mc.version}0":
        raise UserError(f"--my_testing {m.my_testing} but {m.load_model} is an RWKV-{mc.version} "
                        f"(x0{mc.version}0) model; drop the flag (the version is read from the checkpoint)")
    known = registry.backends(f"wkv{mc.version}")
    # RWKV-PEFT's scripts say --op cuda (its default) or triton: its own kernels, whose job "auto" does here
    # unless this install registers a backend of that name (triton: ours, for RWKV-7).
    op = "auto" if m.op in ("cuda", "triton") and m.op not in known else m.op
    if op not in ("auto", *known):
        raise UserError(f"--op {m.op}: this install has the WKV backends auto, {', '.join(known)}; "
                        "drop --op to pick the best available")
    model.backend, model.grad_cp = op, m.grad_cp
    return model, base


def _speedups(cfg: TrainConfig, device: torch.device, precision: Precision, chunk_ctx: int, dist: DistInfo,
              strategy: str = "single") -> tuple[bool, bool]:
    """(compile the blocks, replay the steps as CUDA graphs), from --compile / --cuda_graph.

    auto turns each on where it is known to work and pay off: on a GPU, compile unless the base is sharded over
    ranks (FSDP's and ZeRO-3's per-block gathering around compiled blocks is untested); graphs when every micro-batch
    can keep a fixed shape and run without host syncs, i.e. not with fp16 (the loss scaler), infctx chunks, packed
    rows, or several processes (DDP's hooks). Asking for one (1) where it cannot work is an error that says why.
    (H100, 1.5B LoRA, ctx 1024, graphed: compiling takes RWKV-7 from 17.0 to 30.4 Kt/s and RWKV-6 from 18.4 to
    27.3 Kt/s, and lowers memory; bench/results.)
    """
    m, cuda = cfg.model, device.type == "cuda"
    sharded = strategy == "fsdp" or strategy.startswith("deepspeed_stage_3")
    compile_ = m.compile == "1" or (m.compile == "auto" and cuda and not sharded)
    blockers = [why for why, blocked in (
        ("it needs a CUDA device", not cuda),
        ("--precision fp16 rescales the loss between steps", precision.name == "fp16"),
        ("infctx training runs each sample in chunks", bool(chunk_ctx)),
        ("--dataload pack changes the document boundaries every step", cfg.data.dataload == "pack"),
        ("several processes synchronize gradients through DDP hooks", dist.world_size > 1),
        ("--op wind launches its kernels outside the stream a graph records", m.op == "wind")) if blocked]
    if m.cuda_graph == "1" and blockers:
        raise UserError(f"--cuda_graph 1 is not possible here: {'; '.join(blockers)}; use --cuda_graph auto")
    return compile_, m.cuda_graph != "0" and not blockers


def _data(cfg: TrainConfig, seed: int, tokenizer: Tokenizer | None, data_file: str, data_type: str,
          vocab_size: int) -> TokenDataset:
    d = cfg.data
    ds = build_dataset(data_file, data_type, tokenizer, d.ctx_len, d.loss_mask, d.dataload, seed,
                       d.skip_bad_records, d.magic_prime or None)
    if vocab_size < 65536 and len(ds.stream.tokens) and int(ds.stream.tokens.max()) >= vocab_size:
        raise UserError(f"{data_file} holds token ids up to {int(ds.stream.tokens.max())}, but the model's "
                        f"vocabulary has {vocab_size}; it was tokenized for another model")
    return ds


def slow_start_note(compiled: bool, wkv: str, cuda_graph: bool) -> str | None:
    """What makes the first steps slow, for the run's description (None: nothing)."""
    # fla autotunes its kernels at each new shape on first use: ~300 s at 1.5B (H200, session 22).
    slow = [what for what, on in (("compile the blocks (a minute or two on a fresh machine)", compiled),
                                  ("autotune fla's WKV kernels (up to ~5 minutes per new shape on a fresh machine)",
                                   wkv == "fla"),
                                  ("capture CUDA graphs", cuda_graph)) if on]
    return "the first steps are slow: they " + " and ".join(slow) if slow else None


def build_session(cfg: TrainConfig, device: torch.device, dist: DistInfo, seed: int,
                  resume: ResumePoint | None) -> Session:
    """Set up a run; with `resume`, the adapter is rebuilt exactly as that checkpoint's (PiSSA factors) and holds
    its trained values (before wrapping: the engines copy or shard what they find)."""
    notes = []
    precision = Precision(cfg.run.precision, device)
    precision.configure_backends()
    strategy = resolve_strategy(cfg.run.strategy, dist.world_size)
    spec = adapters.spec_from_flags(_adapter_flags(cfg))
    infctx = cfg.adapter.train_type == "infctx"
    chunk_ctx = cfg.data.chunk_ctx if infctx else 0
    check_supported(strategy, infctx=infctx, state=spec.state, quant=spec.quant, precision=precision.name)
    # FSDP: built on the CPU, each unit moves to the GPU as it is sharded (the base need not fit one GPU).
    model, base_sd = _load_base(cfg, torch.device("cpu") if strategy == "fsdp" else device, precision)
    mc = model.config
    # The WKV backend the run will use; a named one that cannot run here fails now, not at the first step.
    wkv = model_backend(mc.version, model.backend, device, precision.compute_dtype, mc.head_size,
                        packed=cfg.data.dataload == "pack")
    model.compile, cuda_graph = _speedups(cfg, device, precision, chunk_ctx, dist, strategy)
    if resume is None:  # a resumed run restores its own factors and values from the checkpoint
        spec, load_note = adapters.prepare_load(spec, base_sd, cfg.model.load_model,
                                                not cfg.adapter.ignore_base_fingerprint)
        notes += [load_note] if load_note else []
    del base_sd  # not needed past this point: the model holds what it uses
    adapters.apply_adapter(model, spec, pissa_init=resume.pissa_init if resume else None)
    # After the adapter: PiSSA's SVD needs the full-precision weights.
    quantize_model(model, spec.quant, device=device if spec.quant != "none" else None)
    # A frozen embedding table stays on the host (model/embed.py) when one GPU trains with a quantized base (which
    # exists to save GPU memory) or replays CUDA graphs (the trainer gathers each step's rows on the host one step
    # ahead, so the device waits for nothing): a step needs only B x T of its rows.
    host_emb = (device.type == "cuda" and strategy == "single" and not model.emb.weight.requires_grad
                and (spec.quant != "none" or cuda_graph))
    if host_emb:
        table, model.emb = model.emb.cpu(), None  # out of model.to's way
    if strategy != "fsdp":
        model.to(device)
    if host_emb:
        model.emb = table
        notes.append(f"the frozen embedding table stays in host memory "
                     f"({table.weight.numel() * table.weight.element_size() / 2**30:.2f} GiB of GPU memory saved)")
    named = adapters.trainable_parameters(model)
    if not named:
        raise UserError("nothing to train: the adapter settings leave every parameter frozen")
    for p in named.values():
        p.data = p.data.float()  # the optimizer's master copy; the frozen base stays in its compact dtype
    model.train()
    info = adapters.base_info(cfg.model.load_model)
    identity = {"adapter": repr((spec.method, spec.layer, spec.state, spec.targets, spec.train_parts, spec.quant)),
                "base": info["fingerprint"]}
    if resume is not None and resume.manifest.get("identity") != identity:
        raise UserError(f"{resume.path} was written by a run with other adapter settings or another base model "
                        f"({resume.manifest.get('identity')} vs {identity}); use the same settings, or a new "
                        "--proj_dir for a new run")
    if resume is not None:
        adapters.load_adapter_weights(model, resume.trainable)
    if device.type == "cuda" and strategy in ("single", "ddp"):
        # LoRA's A inside the base product (adapters/fold.py): on the model's final device, before DDP copies it.
        adapters.fold_lora(model)

    text_data = cfg.data.data_type != "binidx" or cfg.data.loss_mask == "qa"
    tokenizer = Tokenizer() if text_data or cfg.log.sample_prompts else None
    vocab = model.config.vocab_size
    train_data = _data(cfg, seed, tokenizer, cfg.data.data_file, cfg.data.data_type, vocab)
    val_data = None
    if cfg.data.val_file:
        val_data = _data(cfg, seed, tokenizer, cfg.data.val_file, cfg.data.val_data_type or cfg.data.data_type, vocab)
    loader = BatchLoader(train_data, cfg.data.micro_bsz, dist.rank, dist.world_size, seed=seed,
                         shuffle=cfg.data.data_shuffle)

    s, o = cfg.schedule, cfg.optim
    micro_per_step = dist.world_size * o.accumulate_grad_batches
    steps_per_epoch = s.epoch_steps // micro_per_step
    if steps_per_epoch == 0:
        raise UserError(f"--epoch_steps {s.epoch_steps} is smaller than devices x accumulate_grad_batches = "
                        f"{micro_per_step}; an epoch must hold at least one optimizer step")
    if s.epoch_steps % micro_per_step:
        notes.append(f"epoch_steps {s.epoch_steps} is not a multiple of {micro_per_step}; an epoch is "
                     f"{steps_per_epoch * micro_per_step} micro-batches")
    total = s.epoch_count * steps_per_epoch
    start = resume.step if resume else s.epoch_begin * steps_per_epoch
    end = min(total, s.max_steps) if s.max_steps else total

    only_state = all(adapters.is_state_param(n) for n in named)
    st_init, st_final = state_rates(o.lr_init, o.lr_final, o.state_lr_init, o.state_lr_final, only_state)
    if spec.state and only_state and o.lr_init < 0.01:
        notes.append(f"State tuning at lr_init {o.lr_init:g}: the seeds advise --lr_init 1 --lr_final 0.01 "
                     "--warmup_steps 10 (a state needs a far higher rate than weights)")
    rates = GroupRates(o.lr_init, o.lr_final, st_init, st_final)
    n_trainable = sum(p.numel() for p in named.values())
    n_total = sum(p.numel() for p in model.parameters())  # before wrapping: ZeRO-3 empties what it shards
    engine = wrap(model, strategy, precision, dist, device, infctx=infctx, micro_bsz=cfg.data.micro_bsz,
                  accumulate=o.accumulate_grad_batches, clip=o.gradient_clip_val)
    named = adapters.trainable_parameters(model)
    optimizer = build_optimizer(named, rates, (o.beta1, o.beta2), o.adam_eps, o.weight_decay, o.layerwise_lr,
                                fused=True if device.type == "cuda" else None, capturable=cuda_graph)
    engine.attach(optimizer)
    if strategy == "single" and device.type == "cuda":
        preallocate(optimizer)
    if strategy == "fsdp" and spec.method == "none":
        notes.append("--strategy fsdp shards only the frozen base; with full fine-tuning everything trains and "
                     "stays replicated, so use deepspeed_stage_3 to shard it")
    if strategy != "single" and cfg.log.sample_prompts and not engine.can_sample:
        notes.append(f"--sample_prompt is skipped under --strategy {strategy} (the base is sharded over ranks)")
    if note := slow_start_note(model.compile, wkv, cuda_graph):
        notes.append(note)
    if dist.world_size == 1 and cfg.run.strategy not in ("auto", "ddp"):
        notes.append(f"--strategy {cfg.run.strategy} has no effect on one device")
    schedule = Schedule(s.lr_schedule, total, s.warmup_steps, s.decay_fraction)

    resolved = {"load_model": cfg.model.load_model, "version": mc.version, "n_layer": mc.n_layer,
                "n_embd": mc.n_embd, "vocab_size": vocab, "head_size": mc.head_size,
                "method": spec.method + (f" + parts {','.join(spec.train_parts)}" if spec.train_parts else ""),
                "trainable_params": n_trainable, "trainable_pct": 100 * n_trainable / n_total,
                "data_file": cfg.data.data_file, "documents": train_data.num_docs, "data_tokens": train_data.data_size,
                "ctx_len": cfg.data.ctx_len, "micro_bsz": cfg.data.micro_bsz, "accumulate": o.accumulate_grad_batches,
                "world_size": dist.world_size, "strategy": strategy, "steps_per_epoch": steps_per_epoch,
                "epoch_count": s.epoch_count, "total_steps": total, "device": str(device), "seed": seed,
                "compile": model.compile, "cuda_graph": cuda_graph,
                "wkv": wkv,
                "state_lr": [st_init, st_final] if spec.state else None}
    return Session(Path(cfg.run.proj_dir), precision, model, spec, info, identity, list(named.values()), optimizer,
                   None if engine.owns_step else precision.grad_scaler(), schedule, loader, val_data,
                   steps_per_epoch, start, end, chunk_ctx, cuda_graph, resolved, engine, notes, tokenizer)
