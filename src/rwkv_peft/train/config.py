"""The training configuration: one typed dataclass tree, built from flags, a recipe YAML and `key=value` overrides.

    rwkv-peft train --config recipes/rwkv7-0.4b/lora.yaml model.load_model=base.pth data.data_file=my.jsonl

Sections: model, data, adapter, optim, schedule, run, log. Every leaf has a unique name, which is also its flag
(`--lr_init`, the seeds' spelling) and may be used without its section in overrides (`lr_init=1e-4` is
`optim.lr_init=1e-4`). Precedence, lowest first: defaults, the recipe, explicit flags, overrides. Unknown keys and
values of the wrong type are errors that name the key, the source and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

# auto / on / off settings; true/false and 1/0 spellings are accepted and stored as "1"/"0".
SWITCH = ("auto", "1", "0")
# --strategy values (the seeds' scripts say deepspeed_stage_1); train/wrap.py says what each one does.
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3",
              "deepspeed_stage_2_offload", "deepspeed_stage_3_offload")
# A share in [0, 1] where true/false and a bare flag also mean 1/0 (--grad_cp 1, --grad_cp 0.5).
Share = typing.NewType("Share", float)
# A JSON object given as a string on the command line (the seeds' --lora_config '{...}') or a mapping in YAML.
JsonText = str | dict


def opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config leaf with its flag help (and allowed values, checked on load)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    load_model: str = opt("", "base model .pth/.safetensors (official RWKV-7 or RWKV-6 file)")
    my_testing: str = opt("", "optional: x070 or x060, checked against the file's version")
    n_layer: int = opt(0, "optional: checked against the checkpoint (sizes are read from it)")
    n_embd: int = opt(0, "optional: checked against the checkpoint")
    vocab_size: int = opt(0, "optional: checked against the checkpoint")
    head_size_a: int = opt(0, "optional: head size, checked against the checkpoint")
    dim_att: int = opt(0, "optional: checked against the checkpoint")
    dim_ffn: int = opt(0, "optional: checked against the checkpoint")
    op: str = opt("auto", "WKV kernel backend: auto (on a GPU: triton for RWKV-7 in bf16 without packing, "
                  "else fla; torch on the CPU), torch, fla, triton (RWKV-7, this project's kernels: less memory), "
                  "wind (RWKV-7, many sequences per step, no CUDA graphs; see README); RWKV-PEFT's cuda means auto")
    grad_cp: Share = opt(0.0, "recompute blocks' activations in backward (less memory, ~30% slower): 1 all "
                         "blocks, 0 none, a share between (0.5: every other block)")
    compile: str = opt("auto", "torch.compile each block: auto (on a GPU), 1, 0; the first steps compile",
                       SWITCH)
    cuda_graph: str = opt("auto", "replay each micro-batch's forward+backward as one CUDA graph: auto (on a GPU "
                          "when the run allows it), 1, 0", SWITCH)
    pre_ffn: int = opt(0, "legacy RWKV-4 flag; only 0 is accepted")
    head_qk: int = opt(0, "legacy RWKV-4 flag; only 0 is accepted")


@dataclass
class DataSection:
    data_file: str = opt("", "training data: jsonl file, binidx prefix, or text file/folder")
    data_type: str = opt("jsonl", "jsonl, binidx, utf-8 (txt), utf-16le")
    ctx_len: int = opt(1024, "tokens per sample (longer documents are cut; infctx: the full sample length)")
    micro_bsz: int = opt(1, "samples per micro-batch per device")
    loss_mask: str = opt("pad", "pad (=none): every document token; qa: only assistant answers")
    dataload: str = opt("pad", "pad: one document per row; pack: documents packed per row; get: random windows")
    magic_prime: int = opt(0, "dataload get: RWKV-LM's exact sampling order (optional)")
    data_shuffle: bool = opt(True, "shuffle samples (each data epoch in a seeded order); 0: the data's own order")
    skip_bad_records: bool = opt(False, "skip malformed jsonl lines with a warning instead of stopping")
    chunk_ctx: int = opt(512, "train_type infctx: chunk length; the state is carried between chunks")
    val_file: str = opt("", "validation data (same data_type unless val_data_type is set)")
    val_data_type: str = opt("", "data_type of val_file (default: data_type)")


@dataclass
class AdapterSection:
    peft: str = opt("none", "none, lora, pissa, miss, disha, bone, bat, state")
    peft_config: JsonText = opt("", "JSON options, e.g. '{\"r\":64}' (HF peft or RWKV-PEFT key names)")
    lora_config: JsonText = opt("", "RWKV-PEFT LoRA options, e.g. '{\"lora_r\":32,\"lora_alpha\":64}'")
    pissa_config: JsonText = opt("", "RWKV-PEFT PiSSA options, e.g. '{\"pissa_r\":32,\"svd_niter\":4}'")
    disha_config: JsonText = opt("", "RWKV-PEFT DiSHA options, e.g. '{\"mode\":\"bone\",\"r\":64}'")
    train_type: str = opt("none", "none, state (State tuning), infctx (long samples in chunks)")
    train_parts: list | None = opt(None, "base parts that also train: emb head ln time "
                                                   "(default: time ln with a weight adapter)")
    quant: str = opt("none", "quantize the frozen base: none, int8, nf4")
    ignore_base_fingerprint: bool = opt(False, "continue from a lora_load / pissa_load / load file whose "
                                        "adapter_config.json names another base with the same dims")


@dataclass
class OptimSection:
    lr_init: float = opt(6e-4, "learning rate after warmup")
    lr_final: float = opt(1e-5, "learning rate at the end of the schedule")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.99, "AdamW beta2")
    adam_eps: float = opt(1e-8, "AdamW epsilon")
    weight_decay: float = opt(0.0, "AdamW weight decay, on weight matrices only")
    layerwise_lr: bool = opt(True, "RWKV-7 att.w0 at 2x the learning rate when it trains (as RWKV-LM)")
    state_lr_init: float | None = opt(None, "State tuning's own rate (default: lr_init when only the "
                                                      "state trains, else 1.0)")
    state_lr_final: float | None = opt(None, "State tuning's final rate (default: lr_final when only "
                                                       "the state trains, else 0.01)")
    accumulate_grad_batches: int = opt(1, "micro-batches per optimizer step")
    gradient_clip_val: float = opt(1.0, "clip the global gradient norm (0: off)")


@dataclass
class ScheduleSection:
    lr_schedule: str = opt("cos_decay", "cos_decay (cosine lr_init -> lr_final), wsd (warmup-stable-decay), "
                                        "constant", ("cos_decay", "cos", "wsd", "constant"))
    warmup_steps: int = opt(0, "linear warmup, in optimizer steps")
    decay_fraction: float = opt(0.2, "wsd: the last fraction of the steps that decays to lr_final")
    epoch_steps: int = opt(1000, "micro-batches (of all devices together) per epoch")
    epoch_count: int = opt(1, "epochs in the run (the schedule spans them)")
    epoch_begin: int = opt(0, "epochs already done (names and schedule continue from there)")
    epoch_save: int = opt(1, "write rwkv-{epoch}.pth every N epochs (and at the end); 0: only at the end")
    max_steps: int = opt(0, "stop after this global optimizer step (0: run all epochs); the schedule is unchanged")


@dataclass
class RunSection:
    proj_dir: str = opt("out", "output folder")
    accelerator: str = opt("auto", "gpu, cpu or auto", ("auto", "gpu", "cuda", "cpu"))
    devices: int = opt(1, "GPUs (or CPU processes) per machine; more than 1 starts them through torchrun")
    num_nodes: int = opt(1, "machines; more than 1: start every machine's workers with torchrun (see the docs)")
    precision: str = opt("bf16", "bf16, fp16 (loss scaling), fp32, tf32", ("bf16", "fp16", "fp32", "tf32"))
    strategy: str = opt("auto", "with several devices: auto (= ddp), ddp, fsdp (shards the frozen base), "
                        "deepspeed_stage_N[_offload] (needs the deepspeed extra); no effect on one", STRATEGIES)
    random_seed: int = opt(-1, "seed (-1: pick one and record it in train_log.txt)")
    resume: str = opt("", "auto (proj_dir/checkpoint-last if present) or a checkpoint folder")
    checkpoint_every: int = opt(0, "also update checkpoint-last every N optimizer steps (0: each epoch)")


@dataclass
class LogSection:
    progress: str = opt("auto", "auto (bar on a terminal, else lines), bar, lines, none",
                        ("auto", "bar", "lines", "none"))
    log_every: int = opt(10, "steps between progress lines (lines mode and train_log.txt)")
    val_every: int = opt(0, "validate every N steps (0: at each epoch end)")
    val_batches: int = opt(0, "validation micro-batches (0: the whole val_file)")
    sample_prompts: list = opt([], "prompts sampled at each validation (repeat the flag)")
    sample_tokens: int = opt(48, "tokens per sample")
    wandb: str = opt("", "Weights & Biases project (needs pip install 'rwkv-peft[log]')")
    tensorboard: bool = opt(False, "write TensorBoard logs to proj_dir/tensorboard")
    plot: bool = opt(True, "write loss_curve.png at the end")


SECTIONS = {"model": ModelSection, "data": DataSection, "adapter": AdapterSection, "optim": OptimSection,
            "schedule": ScheduleSection, "run": RunSection, "log": LogSection}


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    adapter: AdapterSection = field(default_factory=AdapterSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    run: RunSection = field(default_factory=RunSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def set(self, key: str, value: Any, where: str) -> None:
        """Set `section.name` or a bare `name`, converted to its declared type; `where` names the source in
        error messages (a flag, a recipe's file and key, an override)."""
        section, name = resolve_key(key, where)
        setattr(getattr(self, section), name, coerce(value, LEAVES[name], where))


def leaves() -> dict[str, tuple[str, dataclasses.Field, Any]]:
    """{leaf name: (section, field, type)} over the whole tree."""
    out = {}
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name not in out, f"duplicate config leaf {f.name}"
            out[f.name] = (section, f, hints[f.name])
    return out


LEAVES = leaves()


def resolve_key(key: str, where: str) -> tuple[str, str]:
    """`optim.lr_init` or `lr_init` -> ("optim", "lr_init"); unknown keys are errors with a suggestion."""
    section, _, name = key.rpartition(".")
    if name in LEAVES and section in ("", LEAVES[name][0]):
        return LEAVES[name][0], name
    close = difflib.get_close_matches(name, LEAVES, n=1)
    hint = f"; did you mean {LEAVES[close[0]][0]}.{close[0]}?" if close else ""
    raise UserError(f"{where}: unknown setting {key!r}{hint} (`rwkv-peft train --help` lists them all)")


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def coerce(value: Any, leaf: tuple[str, dataclasses.Field, Any], where: str) -> Any:
    """`value` (from YAML, a flag or an override string) as the leaf's type, or a UserError naming `where`."""
    _, f, tp = leaf
    if type(None) in typing.get_args(tp):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    try:
        out = _convert(value, tp)
    except (TypeError, ValueError):
        raise UserError(f"{where}: expected {_type_name(tp)}, got {value!r}") from None
    choices = f.metadata.get("choices")
    if choices == SWITCH and isinstance(out, str) and out.lower() in _TRUE | _FALSE:
        out = "1" if out.lower() in _TRUE else "0"
    if choices and out not in choices:
        raise UserError(f"{where}: {out!r} is not one of {', '.join(choices)}")
    return out


def _convert(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError
    if tp is Share:
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in _TRUE | _FALSE):
            return float(_convert(value, bool))
        share = float(value)
        if not 0 <= share <= 1:
            raise ValueError
        return share
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        return float(value)  # also YAML's "1e-4", which PyYAML reads as a string
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError
        if isinstance(value, bool):  # YAML's `compile: true`
            return "1" if value else "0"
        return str(value)
    if tp == JsonText:
        if isinstance(value, (dict, str)):
            return value
        raise ValueError
    if tp is list or typing.get_origin(tp) is list:
        if isinstance(value, str):
            value = [value] if value.startswith("[") else [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [str(v) for v in value]
    raise TypeError(tp)


def _type_name(tp: Any) -> str:
    if tp == JsonText:
        return "a JSON object or mapping"
    names = {bool: "true/false (or 1/0)", Share: "a share from 0 to 1 (or true/false)", int: "an integer",
             float: "a number", str: "a string", list: "a list"}
    return names.get(tp, names.get(typing.get_origin(tp), str(tp)))


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe YAML as {section.name: value}; sections must be mappings of known leaves."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe is a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    flat = {}
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"{path}: section {key!r} must be a mapping of settings")
            flat |= {f"{key}.{name}": v for name, v in value.items()}
        elif isinstance(value, dict):
            raise UserError(f"{path}: unknown section {key!r}; sections are {', '.join(SECTIONS)}")
        else:
            flat[str(key)] = value
    return flat


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {text!r} is not key=value (e.g. optim.lr_init=1e-4)")
    return key.strip(), value


def build_config(flags: Mapping[str, Any] | None = None, recipe: str | None = None,
                 overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults < recipe YAML < explicit flags {leaf name: value} < `key=value` overrides; then validated."""
    cfg = TrainConfig()
    if recipe:
        for key, value in read_recipe(recipe).items():
            cfg.set(key, value, f"{recipe}: {key}")
    for name, value in (flags or {}).items():
        cfg.set(name, value, f"--{name}")
    for text in overrides:
        key, value = parse_override(text)
        cfg.set(key, value, f"override {text}")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that need no files; anything about the checkpoint or data is checked at setup."""
    m, d, o, s, r = cfg.model, cfg.data, cfg.optim, cfg.schedule, cfg.run
    for legacy in ("pre_ffn", "head_qk"):
        if getattr(m, legacy) != 0:
            raise UserError(f"--{legacy} {getattr(m, legacy)}: a RWKV-4 option with no meaning for RWKV-6/7; "
                            "only 0 is accepted")
    if m.my_testing and m.my_testing not in ("x070", "x060"):
        raise UserError(f"--my_testing {m.my_testing!r}: rwkv-peft trains RWKV-7 (x070) and RWKV-6 (x060); "
                        "the version is read from the checkpoint, so the flag can be dropped")
    if not m.load_model:
        raise UserError("no base model: pass --load_model PATH (or model.load_model=PATH)")
    if not d.data_file:
        raise UserError("no training data: pass --data_file PATH (or data.data_file=PATH)")
    positive = {"ctx_len": d.ctx_len, "micro_bsz": d.micro_bsz, "chunk_ctx": d.chunk_ctx,
                "accumulate_grad_batches": o.accumulate_grad_batches, "epoch_steps": s.epoch_steps,
                "epoch_count": s.epoch_count, "devices": r.devices, "num_nodes": r.num_nodes,
                "log_every": cfg.log.log_every}
    for name, value in positive.items():
        if value < 1:
            raise UserError(f"--{name} must be at least 1, got {value}")
    if not 0 <= s.epoch_begin < s.epoch_count:
        raise UserError(f"--epoch_begin {s.epoch_begin} must be below --epoch_count {s.epoch_count} "
                        "(epoch_count is the run's total, including epochs already done)")
    if s.warmup_steps < 0 or s.max_steps < 0 or s.epoch_save < 0 or r.checkpoint_every < 0:
        raise UserError("--warmup_steps, --max_steps, --epoch_save and --checkpoint_every cannot be negative")
    if not 0 < s.decay_fraction <= 1:
        raise UserError(f"--decay_fraction must be in (0, 1], got {s.decay_fraction}")
    if o.lr_init < 0 or o.lr_final < 0 or o.gradient_clip_val < 0 or o.weight_decay < 0:
        raise UserError("learning rates, --gradient_clip_val and --weight_decay cannot be negative")
    if cfg.adapter.train_type == "infctx" and d.dataload == "pack":
        raise UserError("--train_type infctx carries one state per row across chunks; use --dataload pad or get, "
                        "not pack")

