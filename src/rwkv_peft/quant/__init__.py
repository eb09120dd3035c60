"""A quantized frozen base (`--quant int8 | nf4 | fp4`): swaps the base's linear weights for int8 / 4-bit ones
on bitsandbytes (the `quant` extra, `pip install 'rwkv-peft[quant]'`); adapters call the base and never care.

For a training loop, after the adapter is applied (PiSSA's SVD needs the full-precision weights):

    apply_adapter(model, spec)
    quantize_model(model, spec.quant)                 # "none" does nothing; device="cuda" to quantize there
    model.to(device)

What gets quantized: the att/ffn linears RWKV-PEFT wraps, whether or not they carry an adapter; `emb`, `head`,
norms and the small v7 low-rank mixes stay as they are (`quantize_head=True` also quantizes the head). What
trains is unchanged. Adapter files never contain quantized tensors; `adapter_config.json` records the scheme
(`AdapterSpec.quant`), and merging follows it (see `rwkv_peft.adapters.merge`).

Merging a quantized run: the delta was fitted to the rounded base Q(W), so by default the merge rounds the base
the same way and the merged model equals the adapted one; `--quant none` adds the delta to W instead. Measured
on the tiny test models (2 layers, C 128, nf4, 4 training steps; relative error of the logits against the
quantized adapted model): merged with nf4 rounding <= 7e-7 for every method (0 for bat and state); merged without
rounding 0.06-0.19 (LoRA 0.16, PiSSA 0.15, bone 0.06, bat 0.11, state 0.15 on RWKV-7), the size of the
quantized base's own error (0.16 nf4, 0.22 fp4, 0.021 int8). Whether dropping the rounding helps or hurts
quality depends on the run; keeping it reproduces what was trained and evaluated.
"""

from .model import quantize_model, quantized_layers
from .schemes import BLOCKSIZE, SCHEMES, canonical_scheme, roundtrip
from .weight import QuantizedWeight, QuantLinear

__all__ = ["quantize_model", "quantized_layers", "QuantizedWeight", "QuantLinear", "SCHEMES", "BLOCKSIZE",
           "canonical_scheme", "roundtrip"]
