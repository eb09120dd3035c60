"""`rwkv-peft generate`: sample text from a model, optionally with an adapter and/or a tuned state mounted."""

import sys

from .model_args import add_model_args


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="sample text (recurrent mode), optionally with --adapter / --state")
    add_model_args(p)
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--chat", action="store_true", help='wrap the prompt as "User: ...\\n\\nAssistant:" and stop '
                   'at a blank line')
    p.add_argument("--max_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.3)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--presence_penalty", type=float, default=0.0)
    p.add_argument("--frequency_penalty", type=float, default=0.0)
    p.add_argument("--penalty_decay", type=float, default=0.996)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..api import load_model
    from ..model.generate import Sampling, generate
    from ..model.tokenizer import Tokenizer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    model = load_model(args.model, adapter=args.adapter, state=args.state, device=args.device, dtype=dtype,
                       lora_alpha=args.lora_alpha, pissa_init=args.lora_init, quant=args.quant,
                       check_fingerprint=not args.ignore_base_fingerprint)
    prompt, stop = args.prompt, list(args.stop)
    if args.chat:
        prompt, stop = f"User: {prompt}\n\nAssistant:", stop + ["\n\n"]
    sampling = Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                        presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty,
                        penalty_decay=args.penalty_decay, max_new_tokens=args.max_tokens, stop=stop, seed=args.seed)
    for piece in generate(model, Tokenizer(), prompt, sampling):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
