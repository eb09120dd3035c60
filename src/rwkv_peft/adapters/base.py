"""What every weight adapter (LoRA/PiSSA, MiSS bone/bat) shares: a wrapper that takes the place of one
`nn.Linear` inside a block, and the surgery that puts it there.

The wrapper keeps the frozen base weight under the same name, `weight`, as a Parameter with requires_grad=False.
So the model's state_dict keeps every official key (`blocks.0.att.key.weight`), and the adapter tensors sit
beside it under RWKV-PEFT's names (`blocks.0.att.key.lora_A`): a file holding them moves both ways between
rwkv-peft and RWKV-PEFT's merge scripts.

The base layer is only ever reached through `base_forward(x)` and `base_weight()`. A quantized base (the
future `quant/` layer) overrides those two and every adapter keeps working unchanged.
"""

from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError

# The linear layers RWKV-PEFT wraps (its make_linear_att/ffn), relative to a block.
V7_TARGETS = ("att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value")
V6_TARGETS = V7_TARGETS[:4] + ("att.gate", "ffn.key", "ffn.receptance", "ffn.value")


class AdapterLinear(nn.Module):
    """Base class: y = adapted(x) for x [..., in] -> [..., out]; `weight` [out, in] is frozen.

    Subclasses name their trainable tensors in `tensor_names`, give their shapes in `shapes`, and implement
    `forward` and the pure `merge_weight`, which is also what file-level merging calls, so a mounted adapter
    and a merged file can never disagree.
    """

    tensor_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, base: nn.Linear, config):
        super().__init__()
        self.config = config
        if base.bias is not None:
            raise ValueError("RWKV's linear layers have no bias; adapters do not support one")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = nn.Parameter(base.weight.detach(), requires_grad=False)

    def new_tensor(self, name: str, r: int) -> nn.Parameter:
        """Adapter tensor `name` of this layer, zero, shaped by `shapes(out, in, r)`, on the base's device in the
        adapter dtype: the base's, but at least fp32 (a bf16 base trains fp32 adapters)."""
        shape = self.shapes(self.out_features, self.in_features, r)[name]
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        return nn.Parameter(torch.zeros(shape, dtype=dtype, device=self.weight.device))

    def base_forward(self, x: Tensor) -> Tensor:
        """The frozen layer: x [..., in] -> [..., out]."""
        return F.linear(x, self.weight)

    def base_weight(self) -> Tensor:
        """The frozen weight as a dense [out, in] tensor (a quantized base dequantizes here)."""
        return self.weight

    def adapter_tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.tensor_names}

    def merged_weight(self) -> Tensor:
        """The plain weight [out, in] (fp32) that makes this layer an ordinary nn.Linear."""
        tensors = {k: v.detach().float() for k, v in self.adapter_tensors().items()}
        return self.merge_weight(self.base_weight().detach().float(), tensors, self.config)

    @staticmethod
    def shapes(out_features: int, in_features: int, r: int) -> dict[str, tuple[int, ...]]:
        """The shape of each adapter tensor for a [out, in] layer at rank r. Raises UserError if impossible."""
        raise NotImplementedError

    @staticmethod
    def rank(tensors: dict[str, Tensor]) -> int:
        """The rank r that adapter tensors of this kind were made with, read off their shapes."""
        raise NotImplementedError

    @staticmethod
    def merge_weight(weight: Tensor, tensors: dict[str, Tensor], config) -> Tensor:
        """Fold adapter `tensors` into `weight` [out, in]; everything fp32. Does not modify its inputs."""
        raise NotImplementedError


def block_relative(module_name: str) -> str:
    """Module name -> its name inside the block: blocks.3.att.key -> att.key."""
    return module_name.split(".", 2)[2]


def default_targets(version: int) -> tuple[str, ...]:
    return V7_TARGETS if version == 7 else V6_TARGETS


def resolve_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Full names of the block linears that `targets` select, in model order.

    A target matches a module inside `blocks.i` whose block-relative name equals it or ends with "." + it, so
    "att.key" picks only the attention key and "key" (HF peft style) picks att.key and ffn.key. A target that
    matches nothing, or matches something that is not a linear layer, is an error.
    """
    names = []
    for target in targets:
        hits = [name for name, _ in model.named_modules()
                if name.startswith("blocks.") and name.count(".") >= 2
                and (block_relative(name) == target or block_relative(name).endswith("." + target))]
        if not hits:
            raise UserError(f"target {target!r} matches no layer; valid targets are linear layers inside a "
                            f"block, e.g. {', '.join(default_targets(model.config.version))}")
        odd = [n for n in hits if not isinstance(model.get_submodule(n), nn.Linear)]
        if odd:
            raise UserError(f"target {target!r} matches {odd[0]}, which is not a linear layer")
        names += [n for n in hits if n not in names]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(names, key=order.__getitem__)


def inject(model: nn.Module, names: Sequence[str], make_layer: Callable[[str, nn.Linear], AdapterLinear]) -> None:
    """Replace each named nn.Linear with `make_layer(name, linear)`, in place."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, make_layer(name, getattr(parent, child)))


def adapter_layers(model: nn.Module) -> dict[str, AdapterLinear]:
    """Every wrapped layer of the model, by full module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLinear)}
