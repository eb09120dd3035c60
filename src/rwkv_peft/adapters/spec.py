"""`AdapterSpec`: everything that says what adapter a run trains, as one typed value, and its JSON form in
`adapter_config.json`.

Methods, by name (METHODS maps each weight adapter to its layer class):
- "lora", "pissa": `LoraLinear` (PiSSA is LoRA with an SVD start);
- "bone", "bat": `BoneLinear`, `BatLinear` (MiSS / DiSHA; `--peft miss` and `--peft disha` pick one);
- "state": State tuning alone (`state=True` with no layer adapter); it combines with any of the above;
- "none": no adapter (full fine-tuning, or train_parts only).
"""

from dataclasses import dataclass

from ..errors import UserError
from ..quant.schemes import canonical_scheme
from .base import AdapterLinear
from .lora import LoraConfig, LoraLinear
from .miss import BatLinear, BoneLinear, MissConfig

METHODS: dict[str, type[AdapterLinear]] = {"lora": LoraLinear, "pissa": LoraLinear, "bone": BoneLinear,
                                           "bat": BatLinear}
CONFIG_NAME = "adapter_config.json"
FORMAT = "rwkv-peft-adapter"


@dataclass(frozen=True)
class AdapterSpec:
    """What to train.

    layer: the weight adapter's config, or None; state: State tuning on; targets: block-relative linear names
    (None = RWKV-PEFT's set for the model version); train_parts: see parts.py; quant: the base's quantization
    (recorded; quant/ applies it); load: adapter weights to start from (RWKV-PEFT's lora_load / load /
    pissa_load); pissa_init: an init_pissa.pth whose A0/B0 replace a fresh SVD (resume, mount, other ranks).
    """

    layer: LoraConfig | MissConfig | None = None
    state: bool = False
    targets: tuple[str, ...] | None = None
    train_parts: tuple[str, ...] = ()
    quant: str = "none"
    load: str | None = None
    pissa_init: str | None = None

    def __post_init__(self):
        canonical_scheme(self.quant)
        if self.pissa_init and not (isinstance(self.layer, LoraConfig) and self.layer.pissa):
            raise UserError("pissa_init is only meaningful with --peft pissa")

    @property
    def method(self) -> str:
        if self.layer is not None:
            return self.layer.method
        return "state" if self.state else "none"

    @property
    def is_full_finetune(self) -> bool:
        """No adapter, no state and no train_parts: every parameter trains."""
        return self.layer is None and not self.state and not self.train_parts


def layer_config(method: str, r: int, alpha: float | None = None, dropout: float = 0.0,
                 svd_niter: int | None = 4) -> LoraConfig | MissConfig | None:
    """The layer config of a method name; None for "state" / "none"."""
    if method in ("lora", "pissa"):
        return LoraConfig(r=r, alpha=float(r if alpha is None else alpha), dropout=dropout,
                          pissa=method == "pissa", svd_niter=svd_niter)
    if method in ("bone", "bat"):
        return MissConfig(r=r, mode=method, dropout=dropout)
    if method in ("state", "none"):
        return None
    raise UserError(f"unknown adapter method {method!r}; known: {', '.join(METHODS)}, state, none")


def spec_to_config(spec: AdapterSpec, targets: list[str], base: dict, version: str,
                   pissa_init: str | None, pissa_init_fingerprint: str | None = None) -> dict:
    """The JSON written beside an adapter file. `targets` are the resolved block-relative names, `base` the
    base model's dims and fingerprint, `pissa_init` the init file's name (relative to the adapter's folder) and
    `pissa_init_fingerprint` its factors' id (io.pissa_init_fingerprint), checked wherever the init is read."""
    layer = spec.layer
    return {
        "format": FORMAT, "format_version": 1, "rwkv_peft_version": version,
        "method": spec.method, "state": spec.state,
        "r": layer.r if layer else None,
        "alpha": layer.alpha if isinstance(layer, LoraConfig) else None,
        "dropout": layer.dropout if layer else None,
        "mode": layer.mode if isinstance(layer, MissConfig) else None,
        "svd_niter": layer.svd_niter if isinstance(layer, LoraConfig) and layer.pissa else None,
        "pissa_init": pissa_init,
        "pissa_init_fingerprint": pissa_init_fingerprint,
        "targets": targets if layer else [],
        "train_parts": list(spec.train_parts),
        "quant": None if spec.quant == "none" else spec.quant,
        "base": base,
    }


def spec_from_config(config: dict, source: str) -> AdapterSpec:
    """Back from `adapter_config.json` (without load / pissa_init paths, which the caller resolves)."""
    if config.get("format") != FORMAT:
        raise UserError(f"{source}: not an rwkv-peft adapter config (format {config.get('format')!r})")
    try:
        method = config["method"]
        niter = config.get("svd_niter", 4) if method == "pissa" else 4  # PiSSA's null: the exact SVD
        layer = None if method in ("state", "none") else layer_config(
            method, config["r"], config.get("alpha"), config.get("dropout") or 0.0, niter)
        return AdapterSpec(layer=layer, state=bool(config.get("state")) or method == "state",
                           targets=tuple(config["targets"]) if layer else None,
                           train_parts=tuple(config.get("train_parts") or ()), quant=config.get("quant") or "none")
    except (KeyError, TypeError) as e:
        raise UserError(f"{source}: incomplete adapter config ({type(e).__name__}: {e})") from None
