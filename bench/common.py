"""What the benchmarks share: the official RWKV-7 shapes they build, and GPU memory as nvidia-smi counts it.

Imported as a sibling module (`python bench/x.py` and `torchrun bench/x.py` put bench/ on sys.path)."""

import subprocess
from pathlib import Path

import torch

# (n_layer, n_embd) of the official RWKV-7 sizes; the other dims follow RWKV-LM's sizing rule.
MODELS = {"0.1b": (12, 768), "0.4b": (24, 1024), "1.5b": (24, 2048), "2.9b": (32, 2560), "7b": (32, 4096)}


def smi_used_gib() -> float:
    """GPU memory in use on this process's GPU as nvidia-smi reports it (CUDA context included), in GiB."""
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                          "-i", str(torch.cuda.current_device())], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


def write_profile(prof, wall_ms: float, steps: int, path: Path, header: str) -> None:
    """Top kernels by GPU time of a finished torch.profiler run over `steps` steps, and how busy the GPU was."""
    events = prof.key_averages()
    gpu_ms = sum(e.self_device_time_total for e in events) / 1e3
    table = events.table(sort_by="self_device_time_total", row_limit=45, max_name_column_width=90)
    path.write_text(f"{header}\n{steps} steps: wall {wall_ms:.1f} ms, GPU busy {gpu_ms:.1f} ms "
                    f"({gpu_ms / wall_ms:.0%})\n\n{table}\n")
