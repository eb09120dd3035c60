"""`rwkv-peft train --devices N`: start N worker processes with torchrun's launcher (`torch.distributed.run`).

The command line is passed to the workers unchanged, so each one parses the same flags and recipe; inside a
worker RANK/LOCAL_RANK/WORLD_SIZE are set and training starts (`dist.init_distributed`). This process runs the
launcher itself, as the `torchrun` command would: it watches the workers, stops them all when one fails, and
returns the first failure's exit status (2: a user error). Workers hand their user errors to this process (a file
each in a temporary folder), which prints each distinct message once: N workers usually hit the same one.

One machine: `--standalone` rendezvous on a free local port. Several machines: torchrun's own flags, run once on
every machine (this needs a launcher per machine, so `--num_nodes` alone is refused with the command to use):

    torchrun --nnodes 2 --nproc_per_node 8 --node_rank 0 --rdzv_backend c10d --rdzv_endpoint HOST0:29500 \\
        -m rwkv_peft train --devices 8 --num_nodes 2 ...          (and --node_rank 1 on the second machine)
"""

import importlib.util
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from .. import adapters
from ..errors import UserError
from .checkpoint import find_checkpoint
from .config import TrainConfig
from .dist import check_gpu_count, under_launcher
from .proj_dir import check_proj_dir
from .wrap import check_supported, resolve_strategy

# Where a worker started by `launch` leaves its user error for the launcher (a folder; unset elsewhere).
ERRORS_ENV = "RWKV_PEFT_WORKER_ERRORS"


def needs_launch(cfg: TrainConfig) -> bool:
    """True when this process should start the workers instead of training (more than one, none started)."""
    return cfg.run.devices * cfg.run.num_nodes > 1 and not under_launcher()


def preflight(cfg: TrainConfig) -> None:
    """The errors every worker would hit, raised once here before any worker starts."""
    r = cfg.run
    check_proj_dir(r.proj_dir, find_checkpoint(r.resume, r.proj_dir))
    if r.num_nodes > 1:
        raise UserError(f"--num_nodes {r.num_nodes}: start the workers on every machine with torchrun, e.g. "
                        f"`torchrun --nnodes {r.num_nodes} --nproc_per_node {r.devices} --node_rank K "
                        "--rdzv_backend c10d --rdzv_endpoint HOST0:29500 -m rwkv_peft train ...` on machine K "
                        "(see docs/distributed.md)")
    check_gpu_count(r.accelerator, r.devices)
    strategy = resolve_strategy(r.strategy, r.devices)
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"--strategy {strategy} needs DeepSpeed: pip install 'rwkv-peft[deepspeed]' (or use "
                        "--strategy ddp, which needs nothing more)")
    from .session import _adapter_flags  # the adapter flags as training reads them

    spec = adapters.spec_from_flags(_adapter_flags(cfg))
    check_supported(strategy, infctx=cfg.adapter.train_type == "infctx", state=spec.state, quant=spec.quant,
                    precision=r.precision)


def torchrun_args(devices: int, argv: list[str]) -> list[str]:
    """torchrun's arguments that run `rwkv-peft ARGV` in `devices` processes on this machine."""
    return ["--standalone", "--nnodes", "1", "--nproc_per_node", str(devices), "-m", "rwkv_peft", *argv]


def launch(cfg: TrainConfig, argv: list[str]) -> int:
    """Run `rwkv-peft ARGV` in cfg.run.devices worker processes; 0 when all succeeded, else the first failure's
    exit status."""
    preflight(cfg)
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun would give each worker 1 thread; CPU workers share the cores instead (GPU ones barely use them).
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = threads or str(max(1, (os.cpu_count() or 1) // cfg.run.devices))
    # The launcher turns termination signals into SignalException while it runs; give the caller its own back.
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    # The launcher logs each failure and the stopping of the other workers; what failed is said below instead.
    elastic_log = logging.getLogger("torch.distributed.elastic")
    log_level = elastic_log.level
    elastic_log.setLevel(logging.CRITICAL)
    errors = tempfile.TemporaryDirectory(prefix="rwkv-peft-errors-")
    os.environ[ERRORS_ENV] = errors.name
    try:
        torchrun.run(torchrun.parse_args(torchrun_args(cfg.run.devices, argv)))
    except SignalException:  # Ctrl-C or a kill: the launcher has stopped the workers
        print("rwkv-peft train: interrupted; --resume auto continues from the last checkpoint", file=sys.stderr)
        return 130
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode == 2:  # a UserError
            print_worker_errors(Path(errors.name))
            return 2
        print(f"rwkv-peft train: worker {rank} failed (exit status {failure.exitcode}); its output is above",
              file=sys.stderr)
        return 1
    finally:
        elastic_log.setLevel(log_level)
        del os.environ[ERRORS_ENV]
        errors.cleanup()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]
    return 0


def report_worker_error(message: str) -> bool:
    """In a worker that `launch` started: leave a user error for the launcher to print; False where there is no
    launcher of ours to print it (the caller prints it then)."""
    folder = os.environ.get(ERRORS_ENV)
    if not folder or "RANK" not in os.environ:
        return False
    try:
        Path(folder, f"rank-{os.environ['RANK']}.txt").write_text(message)
    except OSError:
        return False
    return True


def print_worker_errors(folder: Path) -> None:
    """Each distinct error the workers left in `folder` once, with its ranks if they did not all agree."""
    by_message: dict[str, list[int]] = {}
    for file in sorted(folder.glob("rank-*.txt"), key=lambda f: int(f.stem.split("-")[1])):
        by_message.setdefault(file.read_text(), []).append(int(file.stem.split("-")[1]))
    if not by_message:
        print("rwkv-peft train: a worker stopped with an error (exit status 2); its output is above", file=sys.stderr)
    for message, ranks in by_message.items():
        where = "" if len(by_message) == 1 else f" (rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))})"
        print(f"rwkv-peft train: error{where}: {message}", file=sys.stderr)
