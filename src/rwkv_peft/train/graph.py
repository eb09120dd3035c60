"""Replaying a micro-batch's forward + backward as one CUDA graph (`--cuda_graph`).

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
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# fn(input_ids [B, T], labels [B, T], normalizer 0-d fp32) -> the detached loss; runs backward itself.
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
        self.graphs: dict[tuple[int, ...], _Captured] = {}
        self.calls: Counter = Counter()
        self.pool = None

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
        stream = torch.cuda.Stream(input_ids.device)
        stream.wait_stream(torch.cuda.current_stream(input_ids.device))
        with torch.cuda.stream(stream):
            norm = torch.full((), normalizer, dtype=torch.float32, device=input_ids.device)
            loss = self.fn(input_ids, labels, norm)
        torch.cuda.current_stream(input_ids.device).wait_stream(stream)
        return loss

    def _capture(self, input_ids: Tensor, labels: Tensor) -> _Captured:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        ids, lab = input_ids.clone(), labels.clone()
        norm = torch.ones((), dtype=torch.float32, device=input_ids.device)
        # The eager warm-up's cached blocks would otherwise stay reserved next to the graph's own pool.
        torch.cuda.synchronize(input_ids.device)
        torch.cuda.empty_cache()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            loss = self.fn(ids, lab, norm)
        self.pool = graph.pool()
        return _Captured(graph, ids, lab, norm, loss)
