"""What the benchmarks share: the official RWKV-7 shapes they build, and GPU memory as nvidia-smi counts it.

Imported as a sibling module (`python bench/x.py` and `torchrun bench/x.py` put bench/ on sys.path)."""

import subprocess
import threading
import time
from pathlib import Path

import torch

# (n_layer, n_embd) of the official RWKV-7 sizes; the other dims follow RWKV-LM's sizing rule.
MODELS = {"0.1b": (12, 768), "0.4b": (24, 1024), "1.5b": (24, 2048), "2.9b": (32, 2560), "7b": (32, 4096)}


def smi_used_gib() -> float:
    """GPU memory in use on this process's GPU as nvidia-smi reports it (CUDA context included), in GiB."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                          "-i", str(torch.cuda.current_device())], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


class SmiPeak:
    """How far GPU memory in use rose above its value at the end of the `with` block, polled from a thread: add
    `rise_gib` to nvidia-smi's figure at the end for the run's peak (warm-up, capture and saving included), which
    is how the anchor's figures were taken. Only the rise is taken from the poll, so the source's own offset
    cancels: NVML's v1 `used` (torch.cuda.device_memory_used) counts the driver's reserved memory, which
    nvidia-smi's memory.used leaves out (session 4's first peaks sat a constant 0.47 GiB above the end value on an
    H100, most likely that)."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.peak_bytes, self.peak_at_s, self._stop = every_s, 0, 0.0, threading.Event()
        # (seconds since the start, GiB) whenever the figure moved by 32 MiB or more: when memory comes and goes.
        self.timeline: list[tuple[float, float]] = []
        self.start = time.perf_counter()
        self.device = torch.cuda.current_device()

    def since_start(self) -> float:
        return round(time.perf_counter() - self.start, 1)

    def _used(self) -> int:
        # NVML, not the CUDA runtime: a runtime call from this thread could break a graph capture in the trainer's
        # (capture_error_mode "global" forbids unsafe calls from every thread while it captures).
        try:
            return torch.cuda.device_memory_used(self.device)
        except Exception:  # no pynvml: nvidia-smi itself
            return int(smi_used_gib() * 2**30)

    def _poll(self) -> None:
        last = -(2**40)
        while not self._stop.is_set():
            used = self._used()
            if used > self.peak_bytes:
                self.peak_bytes, self.peak_at_s = used, self.since_start()
            if abs(used - last) >= 32 * 2**20:
                self.timeline.append((self.since_start(), round(used / 2**30, 2)))
                last = used
            self._stop.wait(self.every_s)

    def __enter__(self) -> "SmiPeak":
        self.start = time.perf_counter()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end_bytes = self._used()

    @property
    def rise_gib(self) -> float:
        return max(0, self.peak_bytes - self.end_bytes) / 2**30


def write_profile(prof, wall_ms: float, steps: int, path: Path, header: str) -> None:
    """Top kernels by GPU time of a finished torch.profiler run over `steps` steps, and how busy the GPU was."""
    events = prof.key_averages()
    gpu_ms = sum(e.self_device_time_total for e in events) / 1e3
    table = events.table(sort_by="self_device_time_total", row_limit=45, max_name_column_width=90)
    path.write_text(f"{header}\n{steps} steps: wall {wall_ms:.1f} ms, GPU busy {gpu_ms:.1f} ms "
                    f"({gpu_ms / wall_ms:.0%})\n\n{table}\n")


def add_experiment_flags(ap) -> None:
    """Flags for trying a change before it becomes the trainer's default (results name them)."""
    ap.add_argument("--act-budget", type=float, default=None,
                    help="torch.compile partitioner activation memory budget (0..1): lower saves less for backward "
                         "and recomputes the cheapest ops (torch._functorch.config.activation_memory_budget)")
    ap.add_argument("--recompute-wkv", action="store_true",
                    help="fla recomputes its WKV forward inside backward (its default) instead of keeping it (ours)")
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="an Inductor setting (torch._inductor.config.KEY, dotted for sub-configs) for the compiled "
                         "blocks, on top of the trainer's (rwkv_peft.model.compiled.INDUCTOR_OPTIONS: "
                         "combo_kernels=True), e.g. coordinate_descent_tuning=True, combo_kernels=False; repeatable")
    ap.add_argument("--partitioner", action="append", default=[], metavar="KEY=VALUE",
                    help="an AOTAutograd partitioner setting (torch._functorch.config.KEY) for the compiled blocks, on "
                         "top of the trainer's (rwkv_peft.model.compiled.PARTITIONER_OPTIONS), e.g. "
                         "ban_recompute_used_far_apart=True; repeatable")
    ap.add_argument("--wkv-chunk", type=int, choices=[16, 32, 64],
                    help="fla's WKV-7 chunk size (rwkv_peft.ops.fla.WKV7_KERNEL; ours: 64)")
    ap.add_argument("--setting", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="a module-level setting of the package, its dotted path below rwkv_peft, e.g. "
                         "ops.wkv7_triton.KEEP_INVERSE=False; repeatable")


def apply_experiment_flags(args) -> str:
    """Set what the flags ask for; returns them in words for the results ("" when none is set)."""
    import ast
    import importlib

    import torch._functorch.config as functorch_config

    from rwkv_peft.model import compiled  # imported by name: an older copy on PYTHONPATH may lack a setting

    def literal(text):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    if args.act_budget is not None:
        compiled.PARTITIONER_OPTIONS["activation_memory_budget"] = args.act_budget
    for item in args.partitioner:
        key, _, text = item.partition("=")
        if not hasattr(functorch_config, key):
            raise SystemExit(f"--partitioner {item}: torch._functorch.config has no {key}")
        compiled.PARTITIONER_OPTIONS[key] = literal(text)
    if args.recompute_wkv:
        import fla.ops.rwkv7 as fla_rwkv7  # rwkv_peft.ops.fla imports chunk_rwkv7 from here on each call

        plain = fla_rwkv7.chunk_rwkv7
        fla_rwkv7.chunk_rwkv7 = lambda *a, **k: plain(*a, **(k | {"disable_recompute": False}))
    if args.inductor:
        import torch._inductor.config as inductor_config

        for item in args.inductor:
            key, _, text = item.partition("=")
            owner = inductor_config
            for part in key.split("."):
                if not hasattr(owner, part):
                    raise SystemExit(f"--inductor {item}: torch._inductor.config has no {key}")
                owner = getattr(owner, part)
            # the blocks' torch.compile options (they override the global config)
            compiled.INDUCTOR_OPTIONS[key] = literal(text)
    if args.wkv_chunk:
        from rwkv_peft.ops.fla import WKV7_KERNEL

        WKV7_KERNEL["chunk_size"] = args.wkv_chunk
    for item in args.setting:
        path, _, text = item.partition("=")
        module_name, _, name = path.rpartition(".")
        module = importlib.import_module(f"rwkv_peft.{module_name}")
        if not hasattr(module, name):
            raise SystemExit(f"--setting {item}: rwkv_peft.{module_name} has no {name}")
        setattr(module, name, literal(text))
    if args.setting:
        # A setting can change what a custom operator returns (KEEP_INVERSE: L^-1's shape) without changing the
        # block's graph code, which is all Inductor's on-disk graph cache keys on: a graph compiled under the
        # default would be loaded back and fail (H200, session 24: "dimensionality of sizes (1) must match
        # dimensionality of strides (4)").
        compiled.INDUCTOR_OPTIONS["fx_graph_cache"] = False
    settings = (("act_budget", args.act_budget), ("recompute_wkv", args.recompute_wkv),
                ("inductor", " ".join(args.inductor)),
                ("partitioner", " ".join(args.partitioner)), ("wkv_chunk", args.wkv_chunk),
                ("setting", " ".join(args.setting)))
    return ", ".join(f"{k}={v}" for k, v in settings if v not in (None, False, ""))
