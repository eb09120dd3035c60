"""The `Batch` the trainer consumes, and how sample rows become one.

Convention (the model relies on it): without `cu_seqlens` a batch is B independent rows [B, T], each starting from
a fresh (or tuned) state. With `cu_seqlens` the rows are flattened into one [1, B*T] row and `cu_seqlens` [N+1]
lists every document boundary in it (0, ..., B*T, row boundaries included): the model restarts its state at each.
Padding at the end of a row is its own "document" whose labels are all -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .dataset import IGNORE, TokenDataset

PAD_ID = 0
ROUND_T = 16  # rows are padded to a multiple of 16 tokens: the CUDA WKV kernels need T % 16 == 0


@dataclass
class Batch:
    """input_ids [B, T] (or [1, B*T]) int64; labels same shape, -100 = ignored; cu_seqlens [N+1] int64 or None."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    cu_seqlens: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        """Trained label positions: throughput is counted over these, not over padding."""
        return int((self.labels != IGNORE).sum())

    def pad_to(self, t: int) -> Batch:
        """The same rows padded at the end to T = t (pad id, no labels); unpacked batches only."""
        extra = t - self.input_ids.shape[1]
        if extra <= 0 or self.cu_seqlens is not None:
            return self
        pad = torch.nn.functional.pad
        return Batch(pad(self.input_ids, (0, extra), value=PAD_ID), pad(self.labels, (0, extra), value=IGNORE))

    def pin_memory(self) -> Batch:
        """The batch in page-locked host memory, so that a non-blocking copy to a GPU does not wait for it."""
        cu = None if self.cu_seqlens is None else self.cu_seqlens.pin_memory()
        return Batch(self.input_ids.pin_memory(), self.labels.pin_memory(), cu)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        cu = None if self.cu_seqlens is None else self.cu_seqlens.to(device, non_blocking=non_blocking)
        return Batch(self.input_ids.to(device, non_blocking=non_blocking),
                     self.labels.to(device, non_blocking=non_blocking), cu)


def row_length(rows: list[list[tuple[int, int]]], ctx_len: int, fixed_len: bool) -> int:
    """T for a batch of rows (each a list of (start, n_pairs) spans): ctx_len, or the longest row rounded up to 16.

    Rounding keeps the number of distinct shapes small; padding to ctx_len (fixed_len) wastes compute on short
    chat data but gives one shape for the whole run.
    """
    if fixed_len:
        return ctx_len
    longest = max(sum(n for _, n in row) for row in rows)
    return min(ctx_len, -(-longest // ROUND_T) * ROUND_T)


def bucket_length(t: int, ctx_len: int) -> int:
    """The shortest of ctx_len/4, ctx_len/2, ctx_len (rounded up to 16) that holds t tokens: a compiled or
    CUDA-graphed step needs few distinct shapes (each one compiles and captures once), and padding only up to a
    bucket wastes less on short chat data than padding everything to ctx_len."""
    for size in (ctx_len // 4, ctx_len // 2):
        size = -(-size // ROUND_T) * ROUND_T
        if t <= size:
            return size
    return max(t, ctx_len)


def collate(dataset: TokenDataset, rows: list[list[tuple[int, int]]], packed: bool, fixed_len: bool = False) -> Batch:
    """Sample rows -> a Batch. packed: flatten to [1, B*T] with cu_seqlens (each span is a document)."""
    t = row_length(rows, dataset.ctx_len, fixed_len)
    inputs = np.full((len(rows), t), PAD_ID, dtype=np.int64)
    labels = np.full((len(rows), t), IGNORE, dtype=np.int64)
    bounds = [0]
    for r, row in enumerate(rows):
        at = 0
        for start, n in row:
            inputs[r, at:at + n], labels[r, at:at + n] = dataset.span(start, n)
            at += n
            bounds.append(r * t + at)
        if at < t:
            bounds.append((r + 1) * t)  # the padding "document"
    if not packed:
        return Batch(torch.from_numpy(inputs), torch.from_numpy(labels))
    return Batch(torch.from_numpy(inputs).view(1, -1), torch.from_numpy(labels).view(1, -1),
                 torch.tensor(bounds, dtype=torch.int64))
