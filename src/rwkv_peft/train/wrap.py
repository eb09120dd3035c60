"""--strategy: how the ranks of a multi-process run share one optimizer step. Every strategy is an existing engine;
this file only plugs the model into it.

| strategy                   | frozen base             | trainable tensors, gradients, optimizer state        |
|----------------------------|-------------------------|------------------------------------------------------|
| ddp (`auto`)               | replicated              | replicated; DDP all-reduces gradients during backward |
| fsdp                       | sharded (FSDP2)         | replicated; one all-reduce of gradients per step      |
| deepspeed_stage_1 / _2     | replicated              | ZeRO-1/2: optimizer state (and gradients) sharded     |
| deepspeed_stage_3          | sharded (ZeRO-3)        | sharded                                               |
| deepspeed_stage_*_offload  | as above                | optimizer state (stage 3: parameters too) in CPU RAM  |

DDP is the default: in PEFT the trainable set is small, so replicating it costs little, and DDP overlaps its
all-reduce with the backward pass. FSDP2 (`torch.distributed.fsdp.fully_shard`, per block, then the rest) is for a
base that does not fit one GPU; the adapter stays whole on every rank, so saving, clipping and the optimizer work
exactly as on one GPU. DeepSpeed is there for scripts that say deepspeed_stage_N (RWKV-PEFT's preferred option).

Equivalence with one process. DDP, FSDP and DeepSpeed average gradients over ranks, and the step's loss is
sum(CE) / (trained tokens of the whole global batch); so each rank's micro-batch loss is multiplied by the number
of ranks (`Engine.grad_divisor`), and the gradient is that of one process seeing the whole global batch.

The loss of a micro-batch is computed by `TrainModule`, an nn.Module around the model (hidden states, then the
chunked head loss), because the engines act through the forward call of the module they wrap.
"""

import contextlib
import inspect
import logging
import re
import warnings
from collections.abc import Iterator

import torch
import torch.distributed as torch_dist
from torch import Tensor, nn

from ..errors import UserError
from .config import STRATEGIES
from .dist import DistInfo
from .loss import dense_head_loss, head_loss
from .optim import load_portable_state, portable_state
from .precision import Precision

# RWKV-7's block 0 has value-residual parameters it never uses (there is no earlier layer's value to mix in).
_NEVER_USED = re.compile(r"^blocks\.0\.att\.v[012]$")
_BUCKET_NUMEL = 1 << 25  # gradients all-reduced per bucket of at most this many elements (128 MB in fp32)


class TrainModule(nn.Module):
    """The loss of one micro-batch: hidden states of the model, then the chunked head cross entropy.

    forward(input_ids [B, T], labels [B, T] (-100: untrained), cu_seqlens (packed rows) or None, normalizer)
    -> (sum(CE) / normalizer as a 0-d tensor, trained tokens). `dense_loss` is the same without host syncs,
    for a CUDA-graph capture (graph.py).
    """

    def __init__(self, model: nn.Module, precision: Precision):
        super().__init__()
        self.model = model
        self.precision = precision

    def forward(self, input_ids: Tensor, labels: Tensor, cu_seqlens: Tensor | None,
                normalizer: float) -> tuple[Tensor, int]:
        with self.precision.autocast():
            hidden, _ = self.model.hidden(input_ids, cu_seqlens=cu_seqlens)
        return head_loss(hidden, self.model.head.weight, labels, normalizer, self.precision.compute_dtype)

    def dense_loss(self, input_ids: Tensor, labels: Tensor, normalizer: Tensor) -> Tensor:
        """sum(CE) / normalizer (a 0-d tensor) over every position, untrained ones weighted 0 (no host sync)."""
        with self.precision.autocast():
            hidden, _ = self.model.hidden(input_ids)
        # A model whose blocks run compiled gets its loss chunks compiled too (by default RWKV-7 on a GPU).
        return dense_head_loss(hidden, self.model.head.weight, labels, normalizer, self.precision.compute_dtype,
                               fused=self.model.compile)


def resolve_strategy(name: str, world_size: int) -> str:
    """The strategy that runs: "single" on one process (whatever --strategy says), "ddp" for auto."""
    if name not in STRATEGIES:
        raise UserError(f"--strategy {name!r} is not one of {', '.join(STRATEGIES)}")
    if world_size == 1:
        return "single"
    return "ddp" if name == "auto" else name


def check_supported(strategy: str, *, infctx: bool, state: bool, quant: str, precision: str) -> None:
    """Refuse the combinations a strategy cannot run, with what to use instead."""
    if strategy in ("single", "ddp"):
        return
    if infctx:
        raise UserError(f"--train_type infctx runs its chunks outside the wrapped forward, which --strategy "
                        f"{strategy} needs; use --strategy ddp")
    if strategy == "fsdp" and quant != "none":
        raise UserError(f"--quant {quant} keeps the quantized base in buffers, which FSDP does not shard; use "
                        "--strategy ddp (a quantized base is small enough to replicate)")
    if strategy.startswith("deepspeed"):
        if precision == "fp16":
            raise UserError(f"--precision fp16 with --strategy {strategy} is not supported (DeepSpeed would need its "
                            "own loss scaling); use --precision bf16")
        if strategy.startswith("deepspeed_stage_3") and state:
            raise UserError(f"State tuning reads time_state outside the block's forward, which --strategy {strategy} "
                            "(ZeRO-3) cannot gather; use deepspeed_stage_2, ddp or fsdp")


class Engine:
    """One process, or the base of the others: call the loss module, backward, nothing to synchronise."""

    owns_step = False  # True: the engine clips and steps the optimizer itself (DeepSpeed)
    can_sample = True  # False: the model's own forward is not usable alone (sharded base)

    def __init__(self, module: TrainModule, grad_divisor: int = 1):
        self.module = module
        self.grad_divisor = grad_divisor

    def loss(self, input_ids: Tensor, labels: Tensor, cu_seqlens: Tensor | None,
             normalizer: float) -> tuple[Tensor, int]:
        return self.module(input_ids, labels, cu_seqlens, normalizer)

    def accumulating(self, last: bool) -> contextlib.AbstractContextManager:
        """Around the forward and backward of one micro-batch; `last` is the step's last one."""
        return contextlib.nullcontext()

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def sync_gradients(self) -> None:
        """After the step's last backward: make every rank's gradients the average over ranks."""

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer over the trainable parameters, created after wrapping (FSDP moves them first)."""

    def step(self) -> float:
        """owns_step engines: clip and step; returns the gradient norm (inf/nan: the update was skipped)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Inside: every trainable parameter holds its whole value on every rank (for saving)."""
        yield

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's state to save (called on every rank, used from rank 0)."""
        return portable_state(optimizer)

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        load_portable_state(optimizer, state)


class DDPEngine(Engine):
    """DistributedDataParallel around the loss module: gradients all-reduced in buckets during backward, skipped
    (no_sync) for every micro-batch of an accumulation but the last."""

    def __init__(self, module: TrainModule, dist: DistInfo, device: torch.device):
        super().__init__(module, dist.world_size)
        from torch.nn.parallel import DistributedDataParallel

        trainable = [name for name, p in module.model.named_parameters() if p.requires_grad]
        # Quantized bases keep their weights in buffers: they are loaded identically on every rank and never
        # change, so they are not re-broadcast before every forward.
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        self.ddp = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, gradient_as_bucket_view=True,
            find_unused_parameters=any(_NEVER_USED.match(n) for n in trainable), **no_buffer_sync)

    def loss(self, input_ids, labels, cu_seqlens, normalizer):
        return self.ddp(input_ids, labels, cu_seqlens, normalizer)

    def accumulating(self, last: bool):
        return contextlib.nullcontext() if last else self.ddp.no_sync()


def all_reduce_mean(tensors: list[Tensor], world_size: int) -> None:
    """Average `tensors` over ranks in place, a few flat buckets per dtype."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        while group:
            bucket, numel = [], 0
            while group and (not bucket or numel + group[0].numel() <= _BUCKET_NUMEL):
                numel += group[0].numel()
                bucket.append(group.pop(0))
            flat = torch.cat([t.reshape(-1) for t in bucket])
            torch_dist.all_reduce(flat)
            flat.div_(world_size)
            for t, piece in zip(bucket, flat.split([t.numel() for t in bucket])):
                t.copy_(piece.view_as(t))


class ReplicatedEngine(Engine):
    """Trainable tensors replicated on every rank, gradients averaged by one all-reduce after the last backward.
    Used for infctx under ddp (its chunks call the model directly, outside any wrapper) and by FSDP."""

    def __init__(self, module: TrainModule, dist: DistInfo):
        super().__init__(module, dist.world_size)
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        with torch.no_grad():
            for p in self.trainable:  # every rank starts from rank 0's adapter
                torch_dist.broadcast(p.data, src=0)

    def sync_gradients(self) -> None:
        all_reduce_mean([p.grad for p in self.trainable if p.grad is not None], self.grad_divisor)


class FSDPEngine(ReplicatedEngine):
    """FSDP2: every block (and block 0's ln0, which runs before the block) is its own unit whose frozen weights
    are all-gathered just before it runs and freed after; the root unit (the loss module) holds emb, ln_out and
    head. Trainable tensors are left out of sharding (`ignored_params`): they stay whole on every rank.

    The base is loaded on the CPU and each unit moves to the GPU as it is sharded, so the whole base never has to
    fit on one GPU.
    """

    can_sample = False

    def __init__(self, module: TrainModule, dist: DistInfo, device: torch.device):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # A block returns its token-shift states as views (x[:, -1]); nothing modifies them in place, which is
        # what FSDP2 warns about.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        mesh = init_device_mesh(device.type, (dist.world_size,))
        trainable = {p for p in module.parameters() if p.requires_grad}

        def shard(unit: nn.Module) -> None:
            if any(not p.requires_grad for p in unit.parameters()):
                fully_shard(unit, mesh=mesh, ignored_params=trainable)

        for block in module.model.blocks:
            if hasattr(block, "ln0"):
                shard(block.ln0)
            shard(block)
        fully_shard(module, mesh=mesh, ignored_params=trainable)
        with torch.no_grad():  # what fully_shard left where it was: the ignored tensors, buffers of no unit
            for t in [*module.parameters(), *module.buffers()]:
                if not _is_dtensor(t) and t.device != device:
                    t.data = t.data.to(device)
        super().__init__(module, dist)


def _is_dtensor(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor
    return isinstance(t, DTensor)


class DeepSpeedEngine(Engine):
    """`deepspeed.initialize` around the loss module, ZeRO stage 1, 2 or 3 (optionally offloaded to CPU RAM).

    DeepSpeed runs in its fp32 mode: the trainable tensors are fp32 already and the module's forward autocasts
    to bf16 itself (--precision), the frozen base stays as loaded. It accumulates over accumulate_grad_batches
    micro-steps, averages over ranks, clips (--gradient_clip_val) and steps the optimizer it was given; a
    non-finite gradient norm makes it skip the update.
    """

    owns_step = True

    def __init__(self, module: TrainModule, dist: DistInfo, device: torch.device, strategy: str, micro_bsz: int,
                 accumulate: int, clip: float):
        super().__init__(module, dist.world_size)
        try:
            import deepspeed
        except ImportError:
            raise UserError(f"--strategy {strategy} needs DeepSpeed: pip install 'rwkv-peft[deepspeed]' (or use "
                            "--strategy ddp, which needs nothing more)") from None
        self.deepspeed = deepspeed
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        self.stage = int(strategy.split("_")[2])
        zero: dict = {"stage": self.stage}
        if strategy.endswith("_offload"):
            pin = device.type == "cuda"
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
            if self.stage == 3:
                zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
        self.config = {"train_micro_batch_size_per_gpu": micro_bsz, "gradient_accumulation_steps": accumulate,
                       "gradient_clipping": clip, "zero_optimization": zero,
                       # the torch AdamW we pass (its groups carry our schedule); no DeepSpeed-built CPU Adam op
                       "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False,
                       "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}
        if self.stage == 3:
            # The head's weight is read by the loss, not through the head's own forward: gather it with the root.
            deepspeed.zero.register_external_parameter(module, module.model.head.weight)
        self.ds = None
        self.can_sample = self.stage < 3

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        self.ds, _, _, _ = self.deepspeed.initialize(model=self.module, optimizer=optimizer, config=self.config)

    def loss(self, input_ids, labels, cu_seqlens, normalizer):
        return self.ds(input_ids, labels, cu_seqlens, normalizer)

    @contextlib.contextmanager
    def accumulating(self, last: bool) -> Iterator[None]:
        yield
        if not last:
            self.ds.step()  # a micro-step: DeepSpeed counts it and updates only at the accumulation boundary

    def backward(self, loss: Tensor) -> None:
        self.ds.backward(loss, scale_wrt_gas=False)  # the loss is already normalised over the whole step

    def step(self) -> float:
        self.ds.step()
        norm = self.ds.get_global_grad_norm()
        return float("nan") if norm is None else float(norm)

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        if self.stage < 3:  # ZeRO-1/2 copy the updated values back into every rank's whole parameters
            yield
            return
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        with self.deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
            yield

    def optimizer_state(self, optimizer):
        """ZeRO shards the optimizer state: rank 0 saves every rank's shard, each serialised by torch.save."""
        import io
        buffer = io.BytesIO()
        torch.save(self.ds.optimizer.state_dict(), buffer)
        shard = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        shards = DistInfo.current().gather_to_main(shard)
        return {"deepspeed_zero": shards, "stage": self.stage}

    def load_optimizer_state(self, optimizer, state):
        import io
        dist = DistInfo.current()
        shards = state.get("deepspeed_zero")
        if shards is None or len(shards) != dist.world_size or state.get("stage") != self.stage:
            raise ValueError(f"it holds no ZeRO-{self.stage} optimizer state of {dist.world_size} ranks")
        # Our own checkpoint's bytes; DeepSpeed's state holds its own classes, which weights_only refuses.
        shards = [torch.load(io.BytesIO(s.numpy().tobytes()), map_location="cpu", weights_only=False) for s in shards]
        self.ds.optimizer.load_state_dict(shards, load_from_fp32_weights=True)


def wrap(model: nn.Module, strategy: str, precision: Precision, dist: DistInfo, device: torch.device, *,
         infctx: bool = False, micro_bsz: int = 1, accumulate: int = 1, clip: float = 0.0) -> Engine:
    """The engine that runs `model` (adapter applied, trainable tensors set) under `strategy` (resolved)."""
    module = TrainModule(model, precision)
    if strategy == "single":
        return Engine(module)
    if strategy == "ddp":
        return ReplicatedEngine(module, dist) if infctx else DDPEngine(module, dist, device)
    if strategy == "fsdp":
        return FSDPEngine(module, dist, device)
    return DeepSpeedEngine(module, dist, device, strategy, micro_bsz, accumulate, clip)
