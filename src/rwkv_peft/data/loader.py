"""Which samples go into which batch on which rank, epoch after epoch, resumable at any step.

An epoch is a seeded order of N samples (pad: one document each; pack: rows of packed pieces; get: windows); with
shuffle off (--data_shuffle 0) the order is the data's own: documents as they are in the file, windows one after
the other from the start of the token stream (magic_prime keeps RWKV-LM's order, which is its own shuffle).
Global position pos goes to rank pos % world_size, and rank r's step s takes positions (s*B + b)*world_size + r
for b < B (micro_bsz) -- the layout RWKV-LM uses, so `get` with magic_prime reproduces its sample order. The epoch
is padded to a whole number of global batches by wrapping around to its first samples (as torch's
DistributedSampler does): every sample is seen at least once per epoch, at most world_size*B - 1 twice, and every
rank takes the same number of steps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import UserError
from .batch import Batch, collate
from .dataset import TokenDataset
from .magic_prime import magic_chunk

log = logging.getLogger(__name__)
Row = list[tuple[int, int]]  # (stream offset, number of pairs) per span
_OPEN_ROWS = 16  # pack: rows kept open for first-fit; more fills rows better but costs time per piece


def pack_rows(lens: Sequence[int], ctx_len: int) -> list[list[int]]:
    """Pieces of `lens` pairs, in the given (shuffled) order -> rows of piece indices, each <= ctx_len pairs.

    First-fit over a few open rows: the order stays mostly random, and rows end up nearly full.
    """
    rows: list[list[int]] = []
    open_rows: list[list] = []  # [free pairs, piece indices]
    for i, n in enumerate(lens):
        for row in open_rows:
            if row[0] >= n:
                row[0] -= n
                row[1].append(i)
                break
        else:
            row = [ctx_len - n, [i]]
            open_rows.append(row)
        if row[0] == 0:
            open_rows.remove(row)
            rows.append(row[1])
        elif len(open_rows) > _OPEN_ROWS:
            rows.append(open_rows.pop(0)[1])
    rows.extend(row[1] for row in open_rows)
    return rows


class EpochPlan:
    """The ordered samples of one epoch: len() samples, plan[pos] the spans of sample pos (pos may exceed len)."""

    def __init__(self, dataset: TokenDataset, epoch: int, seed: int, global_batch: int, shuffle: bool = True) -> None:
        # global_batch (world_size * micro_bsz) only numbers magic_prime samples across epochs.
        self.ds, self.epoch, self.seed, self.global_batch = dataset, epoch, seed, global_batch
        self.shuffle = shuffle
        self.order = self.rows = None
        if dataset.dataload == "get":
            self.size = dataset.magic_prime or dataset.data_size // dataset.ctx_len
            return
        n = len(dataset.piece_starts)
        self.order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        if dataset.dataload == "pack":
            starts, lens = dataset.piece_starts[self.order].tolist(), dataset.piece_lens[self.order].tolist()
            self.rows = [[(starts[i], lens[i]) for i in row] for row in pack_rows(lens, dataset.ctx_len)]
        self.size = len(self.order) if self.rows is None else len(self.rows)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, pos: int) -> Row:
        if self.rows is not None:
            return self.rows[pos % self.size]
        if self.order is not None:
            piece = self.order[pos % self.size]
            return [(int(self.ds.piece_starts[piece]), int(self.ds.piece_lens[piece]))]
        ctx = self.ds.ctx_len
        if self.ds.magic_prime:
            # RWKV-LM counts samples over the whole run: ii = 1 + global sample number.
            ii = 1 + self.epoch * padded_size(self.size, self.global_batch) + pos
            return [(magic_chunk(self.ds.magic_prime, ii) * ctx, ctx)]
        if not self.shuffle:
            return [((pos % self.size) * ctx, ctx)]
        rng = np.random.default_rng([self.seed, self.epoch, pos])
        return [(int(rng.integers(0, self.ds.data_size - ctx)), ctx)]


def padded_size(n: int, global_batch: int) -> int:
    return -(-n // global_batch) * global_batch


def _check(micro_bsz: int, rank: int, world_size: int, seed: int) -> None:
    if seed < 0:
        raise UserError(f"the data shuffling seed must be >= 0, got {seed}")
    if micro_bsz < 1:
        raise UserError(f"--micro_bsz must be at least 1, got {micro_bsz}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")


def _batches(plan: EpochPlan, micro_bsz: int, rank: int, world_size: int, start_step: int,
             fixed_len: bool) -> Iterator[Batch]:
    gb = micro_bsz * world_size
    packed = plan.ds.dataload == "pack"
    for step in range(start_step, padded_size(len(plan), gb) // gb):
        rows = [plan[(step * micro_bsz + b) * world_size + rank] for b in range(micro_bsz)]
        yield collate(plan.ds, rows, packed, fixed_len)


def batches(dataset: TokenDataset, micro_bsz: int, rank: int = 0, world_size: int = 1, epoch: int = 0,
            seed: int | None = None, start_step: int = 0, fixed_len: bool = False,
            shuffle: bool = True) -> Iterator[Batch]:
    """This rank's batches of one epoch, from step `start_step`. seed None: the dataset's seed."""
    seed = dataset.seed if seed is None else seed
    _check(micro_bsz, rank, world_size, seed)
    plan = EpochPlan(dataset, epoch, seed, micro_bsz * world_size, shuffle)
    return _batches(plan, micro_bsz, rank, world_size, start_step, fixed_len)


class BatchLoader:
    """Endless batches for one rank, epoch after epoch, with a position that checkpoints can save and restore.

    After receiving a batch, `state_dict()` describes the position after it, so a run resumed from that state
    continues with the next batch.
    """

    def __init__(self, dataset: TokenDataset, micro_bsz: int, rank: int = 0, world_size: int = 1,
                 seed: int | None = None, fixed_len: bool = False, shuffle: bool = True) -> None:
        self.seed = dataset.seed if seed is None else seed
        _check(micro_bsz, rank, world_size, self.seed)
        self.dataset, self.micro_bsz, self.rank, self.world_size = dataset, micro_bsz, rank, world_size
        self.fixed_len, self.shuffle = fixed_len, shuffle
        self.epoch, self.step = 0, 0
        self._cached: EpochPlan | None = None

    def _epoch_plan(self, epoch: int) -> EpochPlan:
        if self._cached is None or (self._cached.epoch, self._cached.seed) != (epoch, self.seed):
            self._cached = EpochPlan(self.dataset, epoch, self.seed, self.micro_bsz * self.world_size, self.shuffle)
        return self._cached

    def steps_in_epoch(self, epoch: int | None = None) -> int:
        """Steps (micro-batches per rank) in `epoch` (default: the current one); pack epochs differ slightly."""
        gb = self.micro_bsz * self.world_size
        return padded_size(len(self._epoch_plan(self.epoch if epoch is None else epoch)), gb) // gb

    def __iter__(self) -> Iterator[Batch]:
        while True:
            plan = self._epoch_plan(self.epoch)
            for batch in _batches(plan, self.micro_bsz, self.rank, self.world_size, self.step, self.fixed_len):
                self.step += 1
                yield batch
            self.epoch, self.step = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed, "micro_bsz": self.micro_bsz,
                "world_size": self.world_size, "data_size": self.dataset.data_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` was saved. A changed micro_bsz x world_size keeps the global sample position
        (rounded down to a whole step of the new size: a few samples may repeat)."""
        if state["data_size"] != self.dataset.data_size:
            log.warning("the data has %d tokens, the checkpoint's had %d: the resumed position refers to other data",
                        self.dataset.data_size, state["data_size"])
        self.seed, self.epoch = state["seed"], state["epoch"]
        done = state["step"] * state["micro_bsz"] * state["world_size"]
        gb = self.micro_bsz * self.world_size
        self.step = done // gb
        if done % gb:
            log.warning("resuming with %d samples per global step instead of %d: %d samples of epoch %d repeat",
                        gb, state["micro_bsz"] * state["world_size"], done % gb, self.epoch)
