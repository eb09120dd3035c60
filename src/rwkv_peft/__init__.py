"""rwkv-peft: parameter-efficient fine-tuning for RWKV-7 and RWKV-6.

    import rwkv_peft as rp
    model = rp.load_model("base.pth", adapter=None, state=None, device="cpu", dtype=torch.float32)
    logits = model(tokens)                                   # [B, T] -> [B, T, V]
    logits, state = model.forward_with_state(tokens, state)
    rp.merge("base.pth", "proj/rwkv-0.pth", "merged.pth")    # adapter_config.json gives method, rank, alpha
"""

from .api import describe, load_model, merge
from .errors import UserError

__version__ = "0.1.0"
__all__ = ["load_model", "merge", "describe", "UserError", "__version__"]
