"""The training CLI's adapter flags, every spelling the seeds use, turned into one `AdapterSpec`.

    --peft lora|pissa|miss|disha|bone|bat|state|none   --peft_config '{...}'
    --lora_config '{"lora_load":"","lora_r":8,"lora_alpha":32,"lora_dropout":0.01}'
    --pissa_config '{"pissa_load":"","pissa_init":"","pissa_r":8,"svd_niter":4}'
    --disha_config '{"mode":"bone","load":"","r":64}'
    --train_type state     --train_parts time ln     --quant none|int8|nf4|...

JSON keys may be RWKV-PEFT's (`lora_r`, `lora_alpha`, `lora_dropout`, `pissa_r`, `svd_niter`, `mode`, `r`,
`load`) or HF peft's as the newest RWKV-PEFT passes them (`r`, `lora_alpha`, `lora_dropout`, `target_modules`,
`init_weights`, `init_lora_weights`, `miss_dropout`). The method's own legacy flag (`--lora_config` for lora,
`--pissa_config` for pissa, `--disha_config` for disha/miss/bone/bat) and `--peft_config` are merged key by key;
a legacy flag of another method, or the two flags giving one setting different values, is an error (either
would silently train something other than what was asked). Each value's type is checked (a JSON `true` is not
a rank). Missing values take RWKV-PEFT's training defaults (LoRA r 8, alpha 32, dropout 0.01;
PiSSA r 8, no scaling, svd_niter 4; MiSS/DiSHA r 64), whichever flag they came through. `--peft miss` is bone
unless `init_weights` is "bat"; `--peft disha` takes `mode`. Unknown keys and invalid values (such as RWKV-PEFT's
default `"mode":"mode"`, which silently trained nothing there) are errors.

`--train_parts` not given: RWKV-PEFT's default `time ln` with a weight adapter, nothing for State tuning alone.
`--peft none` without state and train_parts is full fine-tuning.
"""

import argparse
import json
from typing import Any, Mapping

from ..errors import UserError
from .parts import DEFAULT_PARTS, check_parts
from .spec import AdapterSpec, layer_config

PEFT_CHOICES = ("none", "lora", "pissa", "miss", "disha", "bone", "bat", "state")
TRAIN_TYPES = ("none", "state", "infctx")
# Each accepted JSON key -> its one meaning. None: accepted and ignored (HF bookkeeping).
_KEYS = {"r": "r", "lora_r": "r", "pissa_r": "r", "lora_alpha": "alpha", "alpha": "alpha",
         "lora_dropout": "dropout", "dropout": "dropout", "miss_dropout": "dropout", "svd_niter": "svd_niter",
         "mode": "mode", "init_weights": "init_weights", "init_lora_weights": "init_lora_weights",
         "target_modules": "targets", "targets": "targets", "lora_load": "load", "load": "load",
         "pissa_load": "load", "pissa_init": "pissa_init", "bias": "bias", "task_type": None}
_ALLOWED = {"lora": {"r", "alpha", "dropout", "init_lora_weights", "targets", "load", "pissa_init", "svd_niter",
                     "bias"},
            "miss": {"r", "dropout", "mode", "init_weights", "targets", "load", "bias"}}
_LEGACY_FLAG = {"lora": "lora_config", "pissa": "pissa_config", "disha": "disha_config", "miss": "disha_config",
                "bone": "disha_config", "bat": "disha_config"}
_FLAG_METHOD = {"lora_config": "lora", "pissa_config": "pissa", "disha_config": "disha (or miss, bone, bat)"}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is a bool, and Python's bool an int


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_path(value: Any) -> bool:
    return value is None or isinstance(value, str)  # "" and null both mean none, as in RWKV-PEFT's defaults


# Each meaning -> (is the JSON value acceptable, what is expected). Ranges are checked here too, so the message can
# name the key the user wrote; init_weights / init_lora_weights / targets have their own checks below.
_VALUE_CHECKS = {
    "r": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "alpha": (lambda v: _is_number(v) and v > 0, "a positive number"),
    "dropout": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "svd_niter": (lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "mode": (lambda v: isinstance(v, str), 'a string, "bone" or "bat"'),
    "load": (_is_path, 'a file path (a string; "" for none)'),
    "pissa_init": (_is_path, 'a file path (a string; "" for none)'),
    "bias": (lambda v: isinstance(v, str), 'the string "none"'),
    "init_weights": (lambda v: isinstance(v, (bool, str)), 'true or "bat"'),
    "init_lora_weights": (lambda v: isinstance(v, (bool, str)), 'true, "pissa" or "pissa_niter_N"'),
}


def _json(text: Any, flag: str) -> dict:
    if text is None or text == "":
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--{flag} is not valid JSON ({e.msg} at column {e.colno}): {text}") from None
    if not isinstance(value, dict):
        raise UserError(f"--{flag} must be a JSON object like '{{\"r\":8}}', got {text}")
    return value


def _normalize(raw: dict, flag: str) -> dict:
    out, seen = {}, {}
    for key, value in raw.items():
        if key not in _KEYS:
            raise UserError(f"--{flag}: unknown key {key!r}; accepted: {', '.join(sorted(_KEYS))}")
        name = _KEYS[key]
        if name is None:
            continue
        ok, expected = _VALUE_CHECKS.get(name, (lambda v: True, ""))
        if not ok(value):
            raise UserError(f"--{flag}: {key} is {json.dumps(value)}; expected {expected}")
        if name in out and out[name] != value:
            raise UserError(f"--{flag}: {seen[name]!r} and {key!r} mean the same and disagree")
        out[name], seen[name] = value, key
    return out


def _miss_mode(peft: str, options: dict) -> str:
    modes = []
    if "mode" in options:
        modes.append(options["mode"])
    if "init_weights" in options:
        init = options["init_weights"]
        if init is not True and init != "bat":
            raise UserError(f"MiSS init_weights {init!r} is not supported; use true (bone) or \"bat\"")
        modes.append("bone" if init is True else "bat")
    if peft in ("bone", "bat"):
        modes.append(peft)
    for mode in modes:
        if mode not in ("bone", "bat"):
            raise UserError(f"DiSHA/MiSS mode {mode!r} is not valid; set \"mode\" to \"bone\" or \"bat\"")
    if len(set(modes)) > 1:
        raise UserError(f"conflicting MiSS/DiSHA modes {modes}; give one")
    return modes[0] if modes else "bone"


def _layer(peft: str, options: dict):
    family = "lora" if peft in ("lora", "pissa") else "miss"
    odd = sorted(set(options) - _ALLOWED[family])
    if odd:
        raise UserError(f"{odd[0]!r} does not apply to --peft {peft}")
    if options.get("bias", "none") != "none":
        raise UserError("adapters here have no bias (RWKV's linears have none); drop \"bias\"")
    if family == "miss":
        return layer_config(_miss_mode(peft, options), options.get("r", 64), dropout=options.get("dropout", 0.0))
    method, niter = peft, options.get("svd_niter", 4)
    init = options.get("init_lora_weights", True)
    if isinstance(init, str) and init.startswith("pissa_niter_") and init[12:].isdigit():
        method, niter = "pissa", int(init[12:])
    elif init == "pissa":  # HF peft's exact-SVD PiSSA
        method, niter = "pissa", None
    elif init is not True:
        raise UserError(f"init_lora_weights {init!r} is not supported; use true (LoRA), \"pissa\" (exact SVD) or "
                        "\"pissa_niter_N\"")
    if method == "lora" and ("svd_niter" in options or "pissa_init" in options):
        raise UserError("svd_niter / pissa_init are PiSSA settings; use --peft pissa")
    r = options.get("r", 8)
    alpha = options.get("alpha", 32.0 if method == "lora" else r)
    dropout = options.get("dropout", 0.01 if method == "lora" else 0.0)
    return layer_config(method, r, alpha, dropout, niter)


def _legacy_options(values: Mapping[str, Any], peft: str) -> dict:
    """The normalized options of the method's own legacy flag; a legacy flag of another method is an error."""
    own = _LEGACY_FLAG.get(peft)
    for flag, method in _FLAG_METHOD.items():
        if flag != own and _json(values.get(flag), flag):
            fix = (f"give the options of --peft {peft} in --{own} or --peft_config" if own
                   else f"add --peft {method.split()[0]}")
            raise UserError(f"--{flag} applies to --peft {method}, but --peft is {peft}; {fix}, or drop --{flag}")
    return _normalize(_json(values.get(own), own), own) if own else {}


def _merge_options(legacy: dict, peft_config: dict, flag: str) -> dict:
    """The legacy flag's options with --peft_config's; a setting the two give different values is an error."""
    for name in legacy.keys() & peft_config.keys():
        if legacy[name] != peft_config[name]:
            raise UserError(f"--{flag} and --peft_config disagree on {name} ({json.dumps(legacy[name])} vs "
                            f"{json.dumps(peft_config[name])}); give it in one of them")
    return legacy | peft_config


def parse_train_parts(value: Any) -> tuple[str, ...]:
    """`--train_parts time ln`, also the README's '["time","ln"]' and "time,ln" forms."""
    items = [value] if isinstance(value, str) else list(value)
    parts = []
    for item in items:
        item = item.strip()
        if item.startswith("["):
            try:
                parts += [str(p) for p in json.loads(item)]
            except json.JSONDecodeError:
                raise UserError(f"--train_parts: cannot read {item!r}; write --train_parts time ln") from None
        else:
            parts += [p.strip().strip("'\"") for p in item.split(",") if p.strip()]
    return check_parts(parts)


def spec_from_flags(args: argparse.Namespace | Mapping[str, Any]) -> AdapterSpec:
    """One AdapterSpec from the training flags (an argparse Namespace or a dict; absent flags = not given)."""
    values = dict(args) if isinstance(args, Mapping) else vars(args)
    peft = str(values.get("peft") or "none").lower()
    if peft not in PEFT_CHOICES:
        raise UserError(f"--peft {peft!r} is not known; choose from {', '.join(PEFT_CHOICES)}")
    train_type = str(values.get("train_type") or "none")
    if train_type not in TRAIN_TYPES:
        raise UserError(f"--train_type {train_type!r} is not known; choose from {', '.join(TRAIN_TYPES)}")
    peft_config = _normalize(_json(values.get("peft_config"), "peft_config"), "peft_config")
    legacy = _legacy_options(values, peft)
    layer, options = None, {}
    if peft in ("state", "none"):
        if peft_config:
            raise UserError(f"--peft_config has no meaning with --peft {peft}")
    else:
        options = _merge_options(legacy, peft_config, _LEGACY_FLAG[peft])
        layer = _layer(peft, options)
    parts = values.get("train_parts")
    train_parts = parse_train_parts(parts) if parts is not None else (DEFAULT_PARTS if layer else ())
    targets = options.get("targets")
    if targets is not None and (isinstance(targets, str) or not all(isinstance(t, str) for t in targets)):
        raise UserError(f"target_modules must be a list of layer names like [\"att.key\", \"ffn.value\"], "
                        f"got {targets!r}")
    return AdapterSpec(layer=layer, state=peft == "state" or train_type == "state",
                       targets=tuple(targets) if targets else None, train_parts=train_parts,
                       quant=str(values.get("quant") or "none"), load=options.get("load") or None,
                       pissa_init=options.get("pissa_init") or None)
