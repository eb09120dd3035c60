"""Replaying a training step as CUDA graphs (`--cuda_graph`): each micro-batch's forward + backward, then the
optimizer's side of the step.

Why: at small batches, training RWKV on a fast GPU is bound by the host launching kernels, not by the GPU: the
1.5B model at 1024 tokens spent ~265 ms of host time per step on ~66 ms of GPU work (bench/NOTES.md). Replaying
a captured graph launches all of a micro-batch's kernels at once.

How: the first `warmup` calls of each input shape run eagerly on a side stream (torch.compile, Triton autotuning
and cuBLAS workspaces happen there, outside any capture); the next call is captured and then replayed; later calls
copy their batch into the captured input buffers and replay. The captured backward adds into the trainable
parameters' existing `.grad` tensors, so a replay accumulates this micro-batch's gradient exactly as an eager
backward does; the optimizer must therefore zero them in place (`zero_grad(set_to_none=False)`). One graph per
input shape (the trainer pads rows to a few bucket lengths, see `data.bucket_length`); all graphs share one memory
pool, since only one runs at a time.

What the step may not do inside: synchronize with the host (the loss is `dense_head_loss`), change shape, or use
packed batches (fla derives its chunk index from cu_seqlens on the host).

The update (`GraphedUpdate`) is two more graphs: one computes the gradients' total norm, the other clips with it,
runs AdamW (built `capturable` and fused, its rates device tensors the schedule overwrites) and zeroes the
gradients in place. A non-finite loss or norm is refused on the device: it sets a flag that fused AdamW reads as
"skip" (parameters, moments and step count stay as they were), and the flag stays set, so no later update applies
either. The host reads the loss, the norm and the flag when it wants (the trainer: after launching the next step,
so the GPU never waits for the host) and stops the run on the flag. Measured on the 1.5B LoRA step: the eager
optimizer, clipping and their host work left the GPU idle ~26% of the step (bench/NOTES.md).
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# fn(input_ids [B, T] (or their embeddings [B, T, C]), labels [B, T], normalizer 0-d fp32) -> the detached loss;
# runs backward itself.
StepFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    input_ids: Tensor
    labels: Tensor
    normalizer: Tensor
    loss: Tensor


class GraphedStep:
    """Call like `fn` (with a float normalizer): eager for the first `warmup` calls of a shape, then replayed."""

    def __init__(self, fn: StepFn, params: list[torch.nn.Parameter], warmup: int = 2) -> None:
        self.fn, self.params, self.warmup = fn, params, warmup
        _give_gradients(params)
        self.graphs: dict[tuple[int, ...], _Captured] = {}
        self.calls: Counter = Counter()
        self.pool = None
        # One side stream for warm-ups and captures: every stream that runs a matmul gets its own cuBLAS
        # workspace from the allocator, kept for good (H100: 64 MiB each; a stream per warm-up and torch's own
        # capture stream held three of them).
        self.stream: torch.cuda.Stream | None = None

    def __call__(self, input_ids: Tensor, labels: Tensor, normalizer: float) -> Tensor:
        shape = tuple(input_ids.shape)
        captured = self.graphs.get(shape)
        if captured is None:
            self.calls[shape] += 1
            if self.calls[shape] <= self.warmup:
                return self._side_stream(input_ids, labels, normalizer)
            captured = self.graphs[shape] = self._capture(input_ids, labels)
        captured.input_ids.copy_(input_ids)
        captured.labels.copy_(labels)
        captured.normalizer.fill_(normalizer)
        captured.graph.replay()
        return captured.loss

    def _side_stream(self, input_ids: Tensor, labels: Tensor, normalizer: float) -> Tensor:
        stream = self.stream = self.stream or torch.cuda.Stream(input_ids.device)
        stream.wait_stream(torch.cuda.current_stream(input_ids.device))
        with torch.cuda.stream(stream):
            norm = torch.full((), normalizer, dtype=torch.float32, device=input_ids.device)
            loss = self.fn(input_ids, labels, norm)
        torch.cuda.current_stream(input_ids.device).wait_stream(stream)
        return loss

    def _capture(self, input_ids: Tensor, labels: Tensor) -> _Captured:
        ids, lab = input_ids.clone(), labels.clone()
        norm = torch.ones((), dtype=torch.float32, device=input_ids.device)
        # The eager warm-up's cached blocks would otherwise stay reserved next to the graph's own pool.
        torch.cuda.synchronize(input_ids.device)
        torch.cuda.empty_cache()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            loss = self.fn(ids, lab, norm)
        self.pool = graph.pool()
        return _Captured(graph, ids, lab, norm, loss)


def _give_gradients(params: list[torch.nn.Parameter]) -> None:
    """Zero gradients where there are none yet, at construction: a graph reads and writes the `.grad` tensors it
    was captured with, so they must exist before and stay the same tensors after; made before the first forward,
    they also sit next to the parameters rather than pinning allocator segments that activations used."""
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


class _Replayed:
    """fn() (no inputs) run eagerly on its first call, captured on its second and replayed from then on;
    returns fn's output (on replays the same tensor, overwritten). graphs=False: always eager (the CPU)."""

    def __init__(self, fn: Callable[[], Tensor | None], graphs: bool = True) -> None:
        self.fn, self.graphs, self.calls, self.graph, self.out = fn, graphs, 0, None, None

    def __call__(self) -> Tensor | None:
        if self.graph is None:
            self.calls += 1
            if self.calls == 1 or not self.graphs:
                return self.fn()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self.fn()
            self.graph = graph
        self.graph.replay()
        return self.out


class GraphedUpdate:
    """Clip + AdamW step + zeroed gradients of `params`, as `grad_norm()` then `apply(loss)`, refusing a non-finite
    step on the device (see the module's docstring). `optimizer` must be fused (it alone reads the refusal flag)
    and, for graphs, capturable; max_norm inf: no clipping (the norm is still reported)."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], max_norm: float) -> None:
        if not all(group.get("fused") for group in optimizer.param_groups):
            raise ValueError("GraphedUpdate needs a fused optimizer: only fused AdamW skips a refused step")
        self.optimizer, self.params, self.max_norm = optimizer, params, max_norm
        _give_gradients(params)
        device = params[0].device
        self.norm: Tensor | None = None
        self.loss = torch.zeros((), dtype=torch.float32, device=device)
        # 1.0 once a step was non-finite; torch's AdamW passes `found_inf` to the fused kernel, which then skips.
        self.refused = torch.zeros((), dtype=torch.float32, device=device)
        optimizer.found_inf = self.refused
        graphs = device.type == "cuda"
        self._norm = _Replayed(self._total_norm, graphs)
        self._apply = _Replayed(self._update, graphs)

    def grad_norm(self) -> Tensor:
        """The 2-norm of all gradients, a 0-d fp32 device tensor."""
        self.norm = self._norm()
        return self.norm

    def apply(self, loss: Tensor) -> None:
        """Clip, step and zero the gradients, unless `loss` (0-d) or the norm is not finite, or an earlier step's
        was not; the gradients are zeroed either way."""
        self.loss.copy_(loss)
        self._apply()

    def apply_eagerly(self, loss: Tensor) -> None:
        """`apply` without a graph (after a failed capture), with the norm `grad_norm` returned."""
        self.loss.copy_(loss)
        self._update()

    def _total_norm(self) -> Tensor:
        return torch.nn.utils.get_total_norm([p.grad for p in self.params]).float()

    def _update(self) -> None:
        finite = torch.isfinite(self.loss) & torch.isfinite(self.norm)
        torch.maximum(self.refused, (~finite).float(), out=self.refused)
        if self.max_norm != float("inf"):
            torch.nn.utils.clip_grads_with_norm_(self.params, self.max_norm, self.norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)
