"""The flags that name a model and what to mount on it, shared by the commands that run one (generate, eval)."""


def add_model_args(p) -> None:
    p.add_argument("--model", "--load_model", "--base_model", dest="model", required=True, help="base .pth")
    p.add_argument("--adapter", "--peft_checkpoint", dest="adapter", help="adapter file (rwkv-N.pth) to mount")
    p.add_argument("--state", help="tuned state file to mount")
    p.add_argument("--lora_alpha", type=float, help="alpha of a RWKV-PEFT LoRA adapter (ours record it)")
    p.add_argument("--lora_init", help="init_pissa.pth of a RWKV-PEFT PiSSA adapter")
    p.add_argument("--quant", help="quantize the frozen base (nf4, int8, ...; none). Default: what the adapter was "
                   "trained on (its adapter_config.json), else none")
    p.add_argument("--ignore_base_fingerprint", action="store_true",
                   help="mount even though the adapter's or state's adapter_config.json names another base with the "
                   "same dims")
