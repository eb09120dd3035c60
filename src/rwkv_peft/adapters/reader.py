"""Reading an adapter file, ours or RWKV-PEFT's, into one checked description that merge and mount share.

With `adapter_config.json` beside the file, the config says the method, rank and alpha, and every one of them is
checked against the tensors: a config that contradicts its file is an error, never a guess. Without one (a
RWKV-PEFT file), the method is read off the keys: `.lora_A/.lora_B` is LoRA, or PiSSA when its init file is
given; a 2-D `.disha` is bone, a 3-D one bat; `att.time_state` is a state; any other key is a trained base
tensor (train_parts). LoRA's alpha is in no RWKV-PEFT file, and its merge script's default (16) is not its
training default (32), so a config-less LoRA needs `lora_alpha` and never gets a guessed one.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from torch import Tensor

from ..errors import UserError
from ..model import infer_config, read_checkpoint
from ..quant.schemes import canonical_scheme
from .base import block_relative
from .io import base_fingerprint, pissa_init_fingerprint, read_config, read_pissa_init
from .lora import LoraConfig
from .spec import METHODS, AdapterSpec, layer_config, spec_from_config
from .state import check_state, split_state

_LAYER_KEY = re.compile(r"^(blocks\.\d+\..+)\.(lora_A|lora_B|disha)$")
# What each `--type` of RWKV-PEFT's merge scripts (and our method names) accepts.
TYPES = {"lora": {"lora"}, "pissa": {"pissa"}, "disha": {"bone", "bat"}, "miss": {"bone", "bat"},
         "bone": {"bone"}, "bat": {"bat"}, "state": {"state"}}
_BASE_DIMS = ("version", "n_layer", "n_embd", "vocab_size", "head_size")


@dataclass
class AdapterFile:
    """An adapter file, split by role. layers: {module: {"lora_A": [r, in], ...}}; state: {time_state key:
    [H, N, N]}; parts: {official base key: tensor}; pissa_init: {module: (A0, B0)}; base: the config's record
    of the base (dims, fingerprint), None for RWKV-PEFT files."""

    path: str
    spec: AdapterSpec
    layers: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    state: dict[str, Tensor] = field(default_factory=dict)
    parts: dict[str, Tensor] = field(default_factory=dict)
    pissa_init: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    base: dict | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return _targets(self.layers)

    @property
    def trained_quant(self) -> str | None:
        """The --quant the run trained against ("none" included), from our config; None for RWKV-PEFT files,
        which do not record it (`base` is set only when a config was read)."""
        return canonical_scheme(self.spec.quant) if self.base is not None else None

    def tensors(self) -> dict[str, Tensor]:
        """Back to the file's flat {key: tensor}."""
        flat = {f"{m}.{k}": v for m, ts in self.layers.items() for k, v in ts.items()}
        return flat | self.state | self.parts


def split_adapter(sd: Mapping[str, Tensor]) -> tuple[dict[str, dict[str, Tensor]], dict, dict]:
    """(layers, state, parts) of a flat adapter dict."""
    rest, state = split_state(sd)
    layers: dict[str, dict[str, Tensor]] = {}
    parts = {}
    for key, value in rest.items():
        m = _LAYER_KEY.match(key)
        if m:
            layers.setdefault(m.group(1), {})[m.group(2)] = value
        else:
            parts[key] = value
    return layers, state, parts


def _targets(layers: Mapping[str, object]) -> tuple[str, ...]:
    """Block-relative names of the adapted modules, in file order: ("att.key", "ffn.value", ...)."""
    return tuple(dict.fromkeys(block_relative(m) for m in layers))


def _detect(layers: dict[str, dict[str, Tensor]], source: str) -> str | None:
    kinds = set()
    for module, ts in layers.items():
        if "disha" in ts:
            kinds.add("bone" if ts["disha"].dim() == 2 else "bat")
        elif set(ts) == {"lora_A", "lora_B"}:
            kinds.add("lora")
        else:
            raise UserError(f"{source}: {module} has {sorted(ts)}; LoRA needs both lora_A and lora_B")
    if len(kinds) > 1:
        raise UserError(f"{source}: mixes adapter kinds {sorted(kinds)}; one method per file")
    return kinds.pop() if kinds else None


def _rank(method: str, layers: dict[str, dict[str, Tensor]], source: str) -> int:
    ranks = {METHODS[method].rank(ts) for ts in layers.values()}
    if len(ranks) > 1:
        raise UserError(f"{source}: layers have different ranks {sorted(ranks)}; expected one rank")
    return ranks.pop()


def _spec_from_keys(detected: str | None, layers, state, source: str, method: str | None,
                    lora_alpha: float | None, pissa_init: str | None) -> AdapterSpec:
    """The spec of a RWKV-PEFT file (no config)."""
    if detected is None:
        return AdapterSpec(state=bool(state))
    if detected == "lora":
        if method == "pissa" or pissa_init:
            if not pissa_init:
                raise UserError(f"{source}: merging PiSSA needs its init_pissa.pth (--lora_init)")
            if lora_alpha is not None:
                raise UserError("RWKV-PEFT's PiSSA has no alpha scaling; drop --lora_alpha")
            detected = "pissa"
        elif lora_alpha is None:
            beside = Path(source).parent / "init_pissa.pth"
            hint = f"; or, since {beside} exists, --type pissa --lora_init {beside}" if beside.exists() else ""
            raise UserError(f"{source}: a LoRA file without adapter_config.json does not say its alpha; pass "
                            f"--lora_alpha (RWKV-PEFT trains with 32 by default, its merge script assumes 16){hint}")
    return AdapterSpec(layer=layer_config(detected, _rank(detected, layers, source), lora_alpha), state=bool(state))


def _check_holds_adapter(layers, state, parts, source: str) -> None:
    """A file without a config must hold adapter or state tensors: base tensors alone (train_parts) are only
    recognised with our config, else a whole model given by mistake would merge as a copy of itself."""
    if layers or state:
        return
    what = "it looks like a whole model" if "emb.weight" in parts else f"only base tensors such as {next(iter(parts))}"
    raise UserError(f"{source}: holds no adapter or state tensors ({what}); expected an adapter file with "
                    ".lora_A/.lora_B, .disha or att.time_state keys, such as a training run's rwkv-N.pth")


def _check_config(spec: AdapterSpec, detected: str | None, layers, state, source: str) -> None:
    """The config beside a file must describe that file."""
    file_method = detected if detected is not None else ("state" if state else "none")
    config_method = "lora" if spec.method == "pissa" else spec.method
    if config_method != file_method and not (config_method == "state" and file_method == "none"):
        raise UserError(f"{source}: adapter_config.json says method {spec.method!r} but the file holds "
                        f"{file_method!r} tensors; the config belongs to another run")
    if spec.layer is not None:
        r = _rank(detected, layers, source)
        if r != spec.layer.r:
            raise UserError(f"{source}: adapter_config.json says r={spec.layer.r} but the tensors have rank {r}")
        found = _targets(layers)
        if set(found) != set(spec.targets):
            raise UserError(f"{source}: adapter_config.json targets {list(spec.targets)} but the file adapts "
                            f"{list(found)}")
    if spec.state != bool(state):
        raise UserError(f"{source}: adapter_config.json says state={spec.state} but the file "
                        f"{'has' if state else 'has no'} time_state tensors")


def read_adapter(path: str | os.PathLike, *, method: str | None = None, lora_alpha: float | None = None,
                 pissa_init: str | os.PathLike | None = None) -> AdapterFile:
    """Read and check an adapter file. method: an expected `--type` (see TYPES); lora_alpha / pissa_init: for
    files without a config (with one, they must agree with it)."""
    source = str(path)
    sd = read_checkpoint(path)
    if not sd:
        raise UserError(f"{source}: empty file, no adapter tensors")
    layers, state, parts = split_adapter(sd)
    detected = _detect(layers, source)
    config = read_config(path)
    # The standalone state file of a state+adapter run sits beside that run's config.
    if config is not None and not layers and not parts and state:
        config = dict(config, method="state", state=True, r=None, targets=[], train_parts=[])
    if config is None:
        _check_holds_adapter(layers, state, parts, source)
        spec = _spec_from_keys(detected, layers, state, source, method, lora_alpha,
                               str(pissa_init) if pissa_init else None)
        base = None
    else:
        spec = spec_from_config(config, f"{Path(source).parent / 'adapter_config.json'}")
        _check_config(spec, detected, layers, state, source)
        base = config.get("base")
        if lora_alpha is not None and isinstance(spec.layer, LoraConfig) and lora_alpha != spec.layer.alpha:
            raise UserError(f"--lora_alpha {lora_alpha} contradicts adapter_config.json (alpha "
                            f"{spec.layer.alpha}); drop the flag, the config already says it")
        if spec.method == "pissa" and pissa_init is None:
            pissa_init = Path(source).parent / (config.get("pissa_init") or "init_pissa.pth")
    if method is not None and spec.method not in TYPES.get(method, {method}):
        raise UserError(f"{source}: --type {method} but the file is a {spec.method!r} adapter")
    init = {}
    if spec.method == "pissa":
        init = read_pissa_init(pissa_init)
        if set(init) != set(layers):
            odd = sorted(set(init) ^ set(layers))[0]
            raise UserError(f"{pissa_init}: init factors and adapter disagree on {odd}; is it this run's init file?")
        _check_init_fingerprint(init, config, pissa_init, source)
    return AdapterFile(source, spec, layers, state, parts, init, base)


def _check_init_fingerprint(init, config: dict | None, init_path, source: str) -> None:
    """The init must be the one the adapter trained from, when its config records which (older configs and
    RWKV-PEFT files do not: then only the modules are checked)."""
    want = (config or {}).get("pissa_init_fingerprint")
    if want is not None and pissa_init_fingerprint(init) != want:
        raise UserError(f"{init_path} is not the init {source} was trained from (its adapter_config.json records "
                        f"fingerprint {want}, the file has {pissa_init_fingerprint(init)}); pass the init_pissa.pth "
                        "written by that run")


def read_state(path: str | os.PathLike) -> AdapterFile:
    """Read a state file to mount or merge: exactly the `blocks.i.att.time_state` keys. With our
    adapter_config.json beside it, it carries that run's record of its base and --quant, checked and followed as
    an adapter's are (`check_against_base`, `trained_quant`); RWKV-PEFT's state files have no config and are
    checked by their shapes alone."""
    rest, state = split_state(read_checkpoint(path))
    if rest or not state:
        example = next(iter(rest), "no time_state keys")
        raise UserError(f"{path}: not a state file (it has {example}); a state file holds only "
                        "blocks.i.att.time_state keys: pass adapter files as the adapter (--peft_checkpoint, "
                        "--adapter)")
    return read_adapter(path)


def trained_quant(*files: AdapterFile | None) -> str | None:
    """The --quant the given adapter / state files were trained with (None: none of them records one)."""
    recorded = {f.path: f.trained_quant for f in files if f is not None and f.trained_quant is not None}
    if len(set(recorded.values())) > 1:
        listed = ", ".join(f"{path} on a {q} base" for path, q in recorded.items())
        raise UserError(f"the files were trained on differently quantized bases ({listed}); pass --quant (quant=...) "
                        "to choose how the base is rounded")
    return next(iter(recorded.values()), None)


def check_against_base(adapter: AdapterFile, base_sd: Mapping[str, Tensor], base_name: str,
                       check_fingerprint: bool = True) -> None:
    """Raise UserError unless the adapter fits this base: dims, fingerprint, and every tensor's shape."""
    cfg = infer_config(base_sd, base_name)
    if adapter.base is not None:
        want = {k: adapter.base.get(k) for k in _BASE_DIMS}
        have = {k: getattr(cfg, k) for k in _BASE_DIMS}
        if want != have:
            raise UserError(f"{adapter.path} was trained on a different base ({_dims(want)}); {base_name} is "
                            f"{_dims(have)}; use the base it was trained on")
        if check_fingerprint and adapter.base.get("fingerprint") != base_fingerprint(base_sd):
            raise UserError(f"{adapter.path} was trained on another base with the same dims (fingerprint "
                            f"{adapter.base.get('fingerprint')}, {base_name} is {base_fingerprint(base_sd)}); "
                            "use the base it was trained on, or if you are sure, --ignore_base_fingerprint "
                            "(check_fingerprint=False)")
    if adapter.layers:
        expected = {f"blocks.{i}.{t}" for i in range(cfg.n_layer) for t in adapter.targets}
        extra, missing = sorted(set(adapter.layers) - expected), sorted(expected - set(adapter.layers))
        if extra:
            raise UserError(f"{adapter.path}: adapts {extra[0]}, which the {cfg.n_layer}-layer base {base_name} "
                            "does not have; the adapter is for another base")
        if missing:
            raise UserError(f"{adapter.path}: has no tensors for {missing[0]}; the file is incomplete or was "
                            "trained on another base")
        cls, r = METHODS[adapter.spec.method], adapter.spec.layer.r
        for module, ts in adapter.layers.items():
            out_features, in_features = base_sd[f"{module}.weight"].shape
            for name, shape in cls.shapes(out_features, in_features, r).items():
                if tuple(ts[name].shape) != shape:
                    raise UserError(f"{adapter.path}: {module}.{name} has shape {tuple(ts[name].shape)}, "
                                    f"{base_name} needs {shape}; the adapter is for another base")
    if adapter.state:
        check_state(adapter.state, cfg, adapter.path)
    for key, value in adapter.parts.items():
        if key not in base_sd:
            raise UserError(f"{adapter.path}: {key} is neither an adapter tensor nor a tensor of {base_name}")
        if base_sd[key].shape != value.shape:
            raise UserError(f"{adapter.path}: {key} has shape {tuple(value.shape)}, {base_name} has "
                            f"{tuple(base_sd[key].shape)}; the adapter is for another base")


def _dims(d: dict) -> str:
    return (f"RWKV-{d['version']} L{d['n_layer']} C{d['n_embd']} vocab {d['vocab_size']} "
            f"head size {d['head_size']}")


def describe_adapter(sd: Mapping[str, Tensor], path: str | os.PathLike) -> dict | None:
    """`rwkv-peft info` for an adapter file: method, rank, alpha (from its config), targets, layers, base dims.
    None when `sd` is not an adapter (a model, or a bare state file, which the caller describes)."""
    layers, state, parts = split_adapter(sd)
    config = read_config(path)
    if not layers and (not config or not parts or "emb.weight" in sd):
        return None
    detected = _detect(layers, str(path))
    method = config.get("method") if config else (detected or ("state" if state else "none"))
    blocks = {int(k.split(".")[1]) for k in [*layers, *state]}
    return {
        "kind": "adapter", "method": method if config or method != "lora" else "lora (or pissa; no config)",
        "r": _rank(detected, layers, str(path)) if detected else None,
        "alpha": config.get("alpha") if config else None,
        "targets": list(_targets(layers)),
        "n_layer": max(blocks) + 1 if blocks else None, "state": bool(state),
        "train_part_tensors": len(parts), "params": sum(v.numel() for v in sd.values()),
        "dtype": str(next(iter(sd.values())).dtype).removeprefix("torch."),
        "config": str(Path(path).parent / "adapter_config.json") if config else None,
        "base": config.get("base") if config else None,
    }
