"""`rwkv-peft merge`: adapter and/or state + base -> an ordinary `.pth`.

    rwkv-peft merge --base_model base.pth --peft_checkpoint out/rwkv-4.pth --output merged.pth

RWKV-PEFT's merge-script flags work too (`--type lora|pissa|disha|state --lora_checkpoint --lora_init
--lora_alpha --state_checkpoint --quant --device`). With our adapter_config.json beside the checkpoint, method,
rank, alpha and quant come from it; `--lora_alpha` is only needed for RWKV-PEFT's LoRA files, `--quant` for
RWKV-PEFT runs trained on a quantized base, or to override the recorded one (`--quant none`: see
`rwkv_peft.adapters.merge`).
"""

import json

DTYPES = {"base": None, "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge an adapter and/or a tuned state into the base model (.pth)")
    p.add_argument("--base_model", "--load_model", dest="base_model", required=True, help="base .pth")
    p.add_argument("--peft_checkpoint", "--lora_checkpoint", dest="peft_checkpoint",
                   help="adapter file (rwkv-N.pth) of any method")
    p.add_argument("--state_checkpoint", help="state file to merge (adds blocks.i.att.time_state)")
    p.add_argument("--output", required=True, help="merged .pth to write (a new file)")
    p.add_argument("--type", choices=["lora", "pissa", "disha", "miss", "bone", "bat", "state"],
                   help="expected method (RWKV-PEFT's merge.py flag); checked against the file")
    p.add_argument("--lora_init", help="init_pissa.pth of a PiSSA run (found beside our checkpoints)")
    p.add_argument("--lora_alpha", type=float, help="alpha of a RWKV-PEFT LoRA file (ours record it)")
    p.add_argument("--quant", help="round the base as a --quant run did before adding the delta: int8, nf4, "
                   "fp4 (4bit), or none for the original weights; default: what adapter_config.json records "
                   "(none for RWKV-PEFT files)")
    p.add_argument("--device", default="cpu", help="where to compute the merge (cpu, cuda)")
    p.add_argument("--dtype", choices=list(DTYPES), default="base", help="output dtype (default: the base's)")
    p.add_argument("--ignore_base_fingerprint", action="store_true",
                   help="merge even though the adapter's config names another base with the same dims")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..api import merge
    from ..model.checkpoint import check_output_path

    check_output_path(args.output, "--output", "merged.pth")
    summary = merge(args.base_model, args.peft_checkpoint, args.output, state=args.state_checkpoint, method=args.type,
                    lora_alpha=args.lora_alpha, pissa_init=args.lora_init, quant=args.quant,
                    dtype=getattr(torch, DTYPES[args.dtype]) if DTYPES[args.dtype] else None,
                    device=args.device, check_fingerprint=not args.ignore_base_fingerprint)
    print(json.dumps(summary))
    return 0
