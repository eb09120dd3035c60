"""Resources of ops/wkv7_triton.py's kernels on Hopper, read without a GPU: each kernel compiled for sm_90 by
Triton, then ptxas's report (registers per thread, bytes spilled to local memory) and Triton's shared memory.
Spills are what to look at first: a spilled kernel moves its live values through local memory on every use.

    pip install triton            # a CPU machine needs only the package: it carries ptxas
    python bench/wkv_regs.py      # the module's settings; --values-warps 4 etc. to try others

Use the Triton the GPU runs (3.6.0 in bench/results): 3.9's compiler writes PTX 9.4, which the ptxas it carries for
sm_90 (CUDA 12.8) refuses. Beside another Triton, e.g. `python -m venv /tmp/t36 && /tmp/t36/bin/pip install
triton==3.6.0`, then `PYTHONPATH=/tmp/t36/lib/python3.11/site-packages:src python bench/wkv_regs.py`.
"""

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from rwkv_peft.ops import wkv7_triton as ours

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
# The wrapper's bf16 tensors with the default bf16 products (LOW_PRECISION): inputs, outputs, kept states, scratch.
BF16_ARGS = ("r_ptr", "k_ptr", "v_ptr", "a_ptr", "b_ptr", "dy_ptr", "y_ptr", "states_ptr", "sa_ptr", "drhs_ptr",
             "linv_ptr", "trans_ptr", "q_ptr", "dr_ptr", "dk_ptr", "dv_ptr", "da_ptr", "db_ptr")


# With TERMS (what the model runs) the log-decay slot holds w_raw and its gradient, in the model's bf16.
TERMS_BF16_ARGS = ("lw_ptr", "dlw_ptr")


def compile_sm90(fn, constexprs: dict, num_warps: int, num_stages: int = 3):
    """Triton's compile of `fn` for sm_90: pointers bf16 where the wrapper passes bf16, fp32 otherwise. Every
    constexpr parameter must be given (one left out would compile as a runtime integer)."""
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in constexprs]
    if missing:
        raise ValueError(f"{fn.__name__}: no value for constexpr {missing}")
    bf16 = BF16_ARGS + (TERMS_BF16_ARGS if constexprs.get("TERMS") else ())
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*bf16" if name in bf16 else "*fp32"
        else:
            sig[name] = "i32"
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps,
                                                                            num_stages=num_stages))


def ptxas_report(kernel) -> str:
    """'REG n, spill stores/loads bytes' from ptxas -v on the kernel's PTX."""
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(kernel.asm["ptx"])
        out = subprocess.run([PTXAS, "-v", "-arch=sm_90a", ptx, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", out)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    stack = re.search(r"(\d+) bytes stack frame", out)
    return (f"regs {regs.group(1) if regs else '?'}, stack {stack.group(1) if stack else '?'} B, "
            f"spill st/ld {spill.group(1)}/{spill.group(2)} B" if spill else out[-300:])


def kernels(args) -> list[tuple[str, object, dict, int]]:
    N, C = 64, args.chunk
    sizes = dict(N=N, C=C, LOG_C=C.bit_length() - 1)
    return [
        ("prep fwd", ours._prep_kernel, dict(H=32, FWD=True, LOWP=True, TERMS=args.terms, KEEP_INV=True, **sizes),
         args.prep_warps),
        ("prep bwd", ours._prep_kernel, dict(H=32, FWD=False, LOWP=True, TERMS=args.terms, KEEP_INV=True, **sizes),
         args.prep_warps),
        ("walk fwd", ours._fwd_kernel, dict(H=32, N=N, C=C, BV=args.bv, HAS_S0=True, PREFETCH=args.prefetch),
         ours.WARPS["fwd"]),
        ("walk bwd", ours._bwd_state_kernel, dict(H=32, N=N, C=C, BV=args.bv, HAS_DST=True,
                                                     PREFETCH=args.prefetch), ours.WARPS["state"]),
        ("bwd values", ours._bwd_values_kernel, dict(H=32, LOWP=True, TERMS=args.terms, KEEP_INV=True, **sizes),
         args.values_warps),
        ("bwd factors", ours._bwd_factors_kernel, dict(H=32, LOWP=True, TERMS=args.terms, N=N, C=C),
         args.factors_warps),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunk", type=int, default=ours.CHUNK)
    ap.add_argument("--bv", type=int, default=ours.VALUE_BLOCK)
    ap.add_argument("--prep-warps", type=int, default=ours.WARPS["prep"])
    ap.add_argument("--values-warps", type=int, default=ours.WARPS["values"])
    ap.add_argument("--factors-warps", type=int, default=ours.WARPS["factors"])
    ap.add_argument("--prefetch", type=int, default=1, help="the walks' PREFETCH (at the default's small grids: 1)")
    ap.add_argument("--terms", type=int, default=1, help="TERMS: the kernels form log w, a, b from RWKV-7's terms "
                    "(1, what the model runs) or take them (0)")
    args = ap.parse_args()
    for name, fn, consts, warps in kernels(args):
        k = compile_sm90(fn, consts, warps)
        print(f"{name:24s} warps {warps}  shared {k.metadata.shared:6d} B  {ptxas_report(k)}")


if __name__ == "__main__":
    main()
