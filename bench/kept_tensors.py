"""What one compiled RWKV-7 block keeps for its backward pass, counted without a GPU.

The block (1.5B width unless --model says otherwise, an adapter on the six block linears, `--op triton`'s WKV
operator) runs on the meta device through AOTAutograd with Inductor's decompositions and partitioner, under the
partitioner settings the trainer uses (`model/compiled.PARTITIONER_OPTIONS`; more with --partitioner). The forward
graph's outputs are what backward keeps (and the block's own outputs, the first listed): listed from 1 MiB up, with
the total per block; parameters are left out.
No autocast here (the CPU's bf16 autocast differs from CUDA's), so products of an fp32 adapter run in fp32; counts
have matched the GPU's allocated memory within a few percent where compared (bench/NOTES.md rows 23, 26).

    python bench/kept_tensors.py                          # LoRA r64, ctx 1024
    python bench/kept_tensors.py --method bone --ctx 4096
    python bench/kept_tensors.py --partitioner activation_memory_budget=0.9
    python bench/kept_tensors.py --method state   # State tuning: a trained initial WKV state, nothing else
"""

import argparse
from functools import partial

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch import config as functorch_config
from torch._functorch.partitioners import min_cut_rematerialization_partition
from torch._inductor.decomposition import select_decomp_table

from common import MODELS
from rwkv_peft.adapters import LoraConfig, MissConfig, fold
from rwkv_peft.adapters.base import inject
from rwkv_peft.adapters.parts import part_parameter_names
from rwkv_peft.model import RWKV7Config, compiled
from rwkv_peft.model.rwkv7 import Block
from rwkv_peft.ops import registry, wkv7_triton

ADAPTERS = {"lora": LoraConfig(r=64, alpha=128, dropout=0.0), "bone": MissConfig(r=64),
            "bat": MissConfig(r=64, mode="bat")}
TARGETS = ["att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"]


def adapted_block(model: str, method: str) -> Block:
    """Block 1 of an RWKV-7 of `model`'s shape on the meta device, bf16, frozen but for the adapter (fp32) and the
    LayerNorms (`--train_parts ln`); LoRA folded and r, k, v stacked as on a GPU (adapters/fold.py). "state": all
    frozen (the trained initial state comes in as an input, as the model passes it)."""
    n_layer, n_embd = MODELS[model]
    with torch.device("meta"):
        block = Block(RWKV7Config(n_layer=n_layer, n_embd=n_embd), 1).to(torch.bfloat16).requires_grad_(False)
    if method == "state":
        return block
    config, layers = ADAPTERS[method], []

    def make(name, linear):
        layers.append(config.make_layer(linear))
        return layers[-1]

    with torch.device("meta"):
        for name in part_parameter_names(block, ["ln"]):
            block.get_parameter(name).requires_grad_(True)
        inject(block, TARGETS, make)  # the adapter's tensors: fp32 beside a bf16 base, trainable
        if method == "lora":
            fold.fold(layers, fold.stack_groups(block, layers))
    return block


def kept(block: Block, ctx: int, state: bool = False) -> list[tuple[str, tuple, torch.dtype, int]]:
    """(producer, shape, dtype, bytes) of each tensor the forward graph hands to backward, parameters left out.
    state: the block gets an fp32 initial WKV state [1, H, N, N] that needs a gradient (State tuning)."""
    found = []

    def forward_compiler(gm, inputs):
        for node in gm.graph.output_node().args[0]:
            val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
            if not isinstance(val, torch.Tensor) or (node.op == "placeholder" and node.name.startswith("primals")):
                continue  # parameters and buffers are kept anyway
            src = node
            while src.op == "call_function" and ("view" in str(src.target) or "detach" in str(src.target)):
                src = src.args[0]
            found.append((str(src.target) if src.op == "call_function" else src.name, tuple(val.shape), val.dtype,
                          val.numel() * val.element_size()))
        return gm

    backend = aot_autograd(fw_compiler=forward_compiler, bw_compiler=lambda gm, _: gm,
                           decompositions=select_decomp_table(),
                           partition_fn=partial(min_cut_rematerialization_partition, compiler="inductor"))
    run = torch.compile(compiled.call_block, backend=backend, dynamic=False, fullgraph=True)
    C = block.att.receptance.in_features
    with torch.device("meta"):
        x, v_first = (torch.empty(1, ctx, C, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        H, N = block.att.n_head, block.att.head_size
        s0 = torch.empty(1, H, N, N, requires_grad=True) if state else None
        run(block, x, v_first, None, s0, None, None, "triton")
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="1.5b", choices=MODELS)
    ap.add_argument("--method", default="lora", choices=[*ADAPTERS, "state"])
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--partitioner", nargs="*", default=[], metavar="KEY=VALUE",
                    help="more torch._functorch.config settings, e.g. activation_memory_budget=0.9")
    args = ap.parse_args()
    settings = dict(compiled.PARTITIONER_OPTIONS)
    for item in args.partitioner:
        key, value = item.split("=", 1)
        settings[key] = eval(value)  # a number or True/False, typed by the user
    # The CPU has no CUDA device: let the backend's operator run on the meta device (its shape functions).
    registry.register("wkv7_terms", "triton", wkv7_triton.wkv7_triton_terms, lambda device: True)
    with functorch_config.patch(settings):
        found = kept(adapted_block(args.model, args.method), args.ctx, state=args.method == "state")
    for producer, shape, dtype, nbytes in found:
        if nbytes >= 2**20:
            print(f"{producer:40s} {str(shape):24s} {str(dtype).removeprefix('torch.'):9s} {nbytes / 2**20:7.2f} MiB")
    total = sum(n for *_, n in found)
    print(f"{args.method} at {args.model}, ctx {args.ctx}: {total / 2**20:.1f} MiB per block "
          f"({total / 2**20 / args.ctx * 1024:.1f} per 1K tokens)")


if __name__ == "__main__":
    main()
