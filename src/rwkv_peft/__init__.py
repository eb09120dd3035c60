"""rwkv-peft: parameter-efficient fine-tuning for RWKV-7 and RWKV-6.

    import rwkv_peft as rp
    model = rp.load_model("base.pth", adapter=None, state=None, device="cpu", dtype=torch.float32)
    logits = model(tokens)                                   # [B, T] -> [B, T, V]
    logits, state = model.forward_with_state(tokens, state)
"""

from .api import describe, load_model
from .errors import UserError

__version__ = "0.1.0"
__all__ = ["load_model", "describe", "UserError", "__version__"]
