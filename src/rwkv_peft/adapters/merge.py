"""Adapter (and/or state) + base -> one ordinary `.pth`, tensor by tensor (the base stays memory-mapped).

Rules of the output (rwkv-reference.md §3): the base's key set and key order, every merged weight computed in
fp32 from the base tensor and cast once to the base tensor's dtype (or `dtype`), train_parts tensors replace
their base tensors, no adapter keys. The formulas are the layers' own `merge_weight`:
- LoRA:  W + (alpha / r) B A
- PiSSA: W - s B0 A0 + s B A (s = alpha / r, 1 for RWKV-PEFT files), exact given init_pissa.pth
- bone:  W + D^T tiled over the input blocks;  bat: W + W_ab D_b + D_b per block
- state: like RWKV-PEFT's merge_state.py, the `blocks.i.att.time_state` keys are added to the file. The `rwkv`
  pip v6 class starts from them; its v7 class ignores them, so for v7 mount the standalone state file
  (`rwkv-peft generate --state`, Runner, Ai00) or inject it (see state.py).

A run trained on a quantized base (`--quant`, recorded in adapter_config.json) learned its delta against the
rounded weights Q(W). By default the merge follows it: every base linear the run had quantized (the att/ffn
linears, adapted or not; for PiSSA the residual W - s B0 A0) is quantized and dequantized before the delta is
added, so the merged model computes what the adapted model computed in training (RWKV-PEFT's merge.py --quant
does this for the adapted layers only). `quant="none"` adds the delta to the original weights instead: the
quantization error of the base disappears, but the delta no longer sees the base it was fitted to.
"""

import os
from pathlib import Path

import torch

from ..errors import UserError
from ..model import read_checkpoint, write_checkpoint
from ..model.load import validate_state_dict
from ..quant.schemes import canonical_scheme, roundtrip
from .base import default_targets
from .lora import pissa_residual
from .reader import check_against_base, read_adapter, read_state, trained_quant
from .spec import METHODS
from .state import split_state


def merge(base: str | os.PathLike, adapter: str | os.PathLike | None, output: str | os.PathLike, *,
          state: str | os.PathLike | None = None, method: str | None = None, lora_alpha: float | None = None,
          pissa_init: str | os.PathLike | None = None, quant: str | None = None, dtype: torch.dtype | None = None,
          device: str = "cpu", check_fingerprint: bool = True) -> dict:
    """Write base + adapter (+ state) to `output`; return a summary {output, method, adapted_linears (how many
    linear modules got a delta), parts (train_parts tensors replaced), state, quant}
    (plus `note` when `quant` overrides what the adapter was trained with).

    adapter: our `rwkv-N.pth` (its adapter_config.json gives method, rank, alpha, quant) or a RWKV-PEFT file
    (then `lora_alpha` for LoRA, `pissa_init` for PiSSA); state: a state file to add; method: an expected
    RWKV-PEFT `--type`, checked against the file; quant: round the base as a `--quant` run did (see above);
    None follows adapter_config.json ("none" without one); dtype: None keeps each base tensor's dtype.
    """
    if adapter is None and state is None:
        raise UserError("nothing to merge: give an adapter (--peft_checkpoint) and/or a state (--state_checkpoint)")
    inputs = [Path(p).resolve() for p in (base, adapter, state, pissa_init) if p is not None]
    if Path(output).resolve() in inputs:
        raise UserError(f"--output {output} is one of the inputs; write the merged model to a new file")
    base_sd = read_checkpoint(base)
    base_only, base_state = split_state(base_sd)
    cfg = validate_state_dict(base_only, str(base))
    out = {k: v if dtype is None else v.to(dtype) for k, v in base_sd.items()}
    summary = {"output": str(output), "method": "state", "adapted_linears": 0, "parts": 0, "state": False}
    # A state file goes through the adapter's checks: with the config of the run that trained it beside it, its
    # base (dims, fingerprint) and --quant are checked and followed exactly as --peft_checkpoint would.
    a = None
    if adapter is not None:
        a = read_adapter(adapter, method=method, lora_alpha=lora_alpha, pissa_init=pissa_init)
    st = read_state(state) if state is not None else None
    if a is not None and a.state and st is not None:
        raise UserError(f"{adapter} already carries a tuned state; do not also pass --state_checkpoint")
    for f in (a, st):
        if f is not None:
            check_against_base(f, base_only, str(base), check_fingerprint)
    trained = trained_quant(a, st)
    scheme = canonical_scheme(quant) if quant is not None else (trained or "none")
    summary["quant"] = scheme
    if trained is not None and scheme != trained:
        what = "adapter" if a is not None else "state"
        summary["note"] = (f"the {what} was trained on a {trained} base, merged with quant {scheme} as asked: the "
                           "merged model differs from the adapted one by the difference in base rounding")
    layers = a.layers if a is not None else {}
    # The linears the run had quantized (quantize_model's default): the att/ffn set and every adapted layer.
    rounded = set() if scheme == "none" else set(layers) | {
        f"blocks.{i}.{t}" for i in range(cfg.n_layer) for t in default_targets(cfg.version)}
    for module in [*layers, *sorted(rounded - set(layers))]:
        key = f"{module}.weight"
        weight = base_sd[key].to(device, torch.float32)
        if module in layers and a.spec.method == "pissa":
            init_A, init_B = (t.to(device, torch.float32) for t in a.pissa_init[module])
            weight = pissa_residual(weight, init_A, init_B, a.spec.layer.scaling)
        if module in rounded:
            # Quantized from the base's dtype, as training quantized the weight it had loaded.
            weight = roundtrip(weight.to(base_sd[key].dtype), scheme).float()
        if module in layers:
            tensors = {k: v.to(device, torch.float32) for k, v in layers[module].items()}
            weight = METHODS[a.spec.method].merge_weight(weight, tensors, a.spec.layer)
        out[key] = weight.to("cpu", dtype or base_sd[key].dtype)
    if a is not None:
        for key, value in a.parts.items():
            out[key] = value.to(dtype or base_sd[key].dtype)
        summary.update(method=a.spec.method, adapted_linears=len(a.layers), parts=len(a.parts))
    states = (a.state if a is not None else {}) or (st.state if st is not None else {})
    if states:
        if base_state:
            raise UserError(f"{base} already carries time_state tensors; merge into the plain base")
        out |= {k: v.to(dtype or base_sd["emb.weight"].dtype) for k, v in states.items()}
        summary["state"] = True
    write_checkpoint(out, output)
    return summary
