"""`rwkv-peft train`: fine-tune with the seeds' flags, a recipe, or both.

    rwkv-peft train --load_model base.pth --data_file data.jsonl --peft lora --lora_config '{"lora_r":32}' ...
    rwkv-peft train --config recipes/rwkv7-0.4b/lora.yaml load_model=base.pth data_file=data.jsonl

Every config leaf is a flag of the same name (generated from the config tree, so the two never disagree);
`key=value` overrides (dotted `optim.lr_init=1e-4` or bare `lr_init=1e-4`) come after the flags.
"""

import argparse
import os
import sys

from .escapes import unescape

EXAMPLE = """examples:
  rwkv-peft train --load_model RWKV-x070-World-0.4B.pth --data_file data.jsonl --data_type jsonl \\
      --proj_dir out/lora --ctx_len 1024 --micro_bsz 4 --epoch_steps 1000 --epoch_count 4 \\
      --lr_init 2e-5 --lr_final 2e-5 --precision bf16 --grad_cp 1 --peft lora \\
      --lora_config '{"lora_r":32,"lora_alpha":64,"lora_dropout":0.01}'
  rwkv-peft train --config recipes/rwkv7-0.4b/state.yaml load_model=base.pth data_file=emoji.jsonl
  rwkv-peft train ... --resume auto          (continue proj_dir/checkpoint-last after a stop)
  rwkv-peft train ... --devices 2            (two GPUs: starts two workers through torchrun, DDP)
  torchrun --nproc_per_node 8 -m rwkv_peft train ...   (the same, started by torchrun yourself)
"""


METAVARS = {int: "N", float: "X"}


def add_parser(sub) -> None:
    from ..train.config import LEAVES, SECTIONS, SWITCH, Share

    p = sub.add_parser("train", help="fine-tune a model (LoRA, PiSSA, MiSS/DiSHA, State tuning, full)",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="recipe YAML (sections model/data/adapter/optim/schedule/run/log)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings overriding the recipe and flags")
    p.add_argument("--fla", action="store_true", default=argparse.SUPPRESS, help="legacy spelling of --op fla")
    # make-data prints RWKV-LM's "--my_exit_tokens N --magic_prime P --ctx_len L" line for pasting here.
    p.add_argument("--my_exit_tokens", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="RWKV-LM's stop-after-N-tokens; accepted and not needed (the run lasts epoch_steps x "
                   "epoch_count)")
    for section in SECTIONS:
        group = p.add_argument_group(section)
        for name, (where, f, tp) in LEAVES.items():
            if where != section:
                continue
            kwargs = {"dest": name, "default": argparse.SUPPRESS, "help": f.metadata["help"].replace("%", "%%"),
                      "metavar": METAVARS.get(tp, "TEXT")}
            if tp in (bool, Share) or f.metadata.get("choices") == SWITCH:  # a bare --grad_cp / --compile means 1
                kwargs.update(nargs="?", const="1", metavar={bool: "0|1", Share: "0..1"}.get(tp, "auto|0|1"))
            elif name == "train_parts":
                kwargs.update(nargs="*", metavar="PART")
            elif name == "sample_prompts":
                kwargs.update(action="append", dest=name, metavar="PROMPT",
                              help=kwargs["help"] + r"; \n, \t and \\ are a newline, a tab and a backslash")
                group.add_argument("--sample_prompt", **kwargs)
                continue
            if f.metadata.get("choices") and "nargs" not in kwargs:
                kwargs["metavar"] = "|".join(f.metadata["choices"])
            group.add_argument(f"--{name}", **kwargs)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..train import build_config, train
    from ..train.config import LEAVES
    from ..train.launch import launch, needs_launch

    flags = {name: value for name, value in vars(args).items() if name in LEAVES}
    if getattr(args, "fla", False):
        flags.setdefault("op", "fla")
    if "sample_prompts" in flags:
        flags["sample_prompts"] = [unescape(p) for p in flags["sample_prompts"]]
    cfg = build_config(flags, args.config, args.overrides)
    if needs_launch(cfg):
        return launch(cfg, args.argv)
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per worker
        for note in _flag_notes(args, flags, cfg):
            print(f"rwkv-peft train: note: {note}", file=sys.stderr)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Before CUDA starts: expandable segments leave fewer holes between the frozen base, the folded LoRA
        # buffers and the steps' activations (H100, 1.5B LoRA ctx 1024: -0.16 GiB at grad_cp 0, -0.26 at 0.5, same
        # speed; bench/results/2026-11-24-h100-session9.md). Multi-process runs keep NCCL's usual allocator setup.
        # A PYTORCH_CUDA_ALLOC_CONF of the user's wins.
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    train(cfg)
    return 0


def _flag_notes(args, flags: dict, cfg) -> list[str]:
    """Flags given on the command line that this run does not use (said, so nobody tunes them in vain)."""
    notes = []
    if hasattr(args, "my_exit_tokens"):
        notes.append(f"--my_exit_tokens {args.my_exit_tokens} is not needed here (the run lasts --epoch_steps x "
                     "--epoch_count micro-batches); ignored")
    if "chunk_ctx" in flags and cfg.adapter.train_type != "infctx":
        notes.append(f"--chunk_ctx {cfg.data.chunk_ctx} only applies to --train_type infctx; ignored")
    return notes
