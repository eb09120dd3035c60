"""pad equals RWKV-PEFT's semantics, pack carries exact cu_seqlens, get follows RWKV-LM, and the loader resumes."""

from collections import Counter
from itertools import islice, pairwise

import numpy as np
import pytest
import torch

from rwkv_peft.data import IGNORE, BatchLoader, batches, build_dataset, write_binidx

CTX = 16


def make_binidx(tmp_path, lengths, seed=0) -> tuple[str, list[list[int]]]:
    """Documents of the given lengths (EOD included) with distinct random tokens, as binidx."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 65530, n - 1).tolist() + [0] for n in lengths]
    prefix = str(tmp_path / "docs")
    write_binidx(prefix, [np.array(d) for d in docs])
    return prefix, docs


def anchor_pad_sample(stream: list[int], offsets: list[int], idx: int, ctx_len: int):
    """RWKV-PEFT's binidx `pad` sample (anchor notes §6.4): reads past the document, then masks after it."""
    req_len = ctx_len + 1
    dix = stream[offsets[idx]:offsets[idx] + req_len]
    dix += stream[:req_len - len(dix)]
    min_len = min(offsets[idx + 1] - offsets[idx], req_len)
    x = dix[:-1]
    dix[min_len:] = [IGNORE] * (req_len - min_len)
    return x, dix[1:], min_len


def test_pad_equals_anchor(tmp_path):
    prefix, docs = make_binidx(tmp_path, [3, 17, 18, 40, 2, 9])
    stream = [t for d in docs for t in d]
    offsets = np.cumsum([0] + [len(d) for d in docs]).tolist()
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="pad")
    ours = {}
    for batch in batches(ds, 2, fixed_len=True):
        assert batch.input_ids.shape == (2, CTX) and batch.cu_seqlens is None
        for x, y in zip(batch.input_ids.tolist(), batch.labels.tolist()):
            ours[tuple(y)] = x
    assert len(ours) == len(docs)
    for idx in range(len(docs)):
        x, y, min_len = anchor_pad_sample(stream, offsets, idx, CTX)
        assert tuple(y) in ours
        # inputs agree wherever they can influence a label; after the document RWKV-PEFT has spill-over, we pad 0
        assert ours[tuple(y)][:min_len - 1] == x[:min_len - 1]
        assert set(ours[tuple(y)][min_len - 1:]) <= {0}


def test_pad_rows_shrink_to_the_batch_longest_rounded_to_16(tmp_path):
    prefix, _ = make_binidx(tmp_path, [3, 5, 20, 7])
    ds = build_dataset(prefix, "binidx", ctx_len=64)
    shapes = sorted(b.input_ids.shape[1] for b in batches(ds, 2, seed=3))
    assert all(t % 16 == 0 for t in shapes) and max(shapes) == 32
    assert sum(b.num_tokens for b in batches(ds, 2, seed=3)) == 2 + 4 + 19 + 6


def pieces_of(batch, t: int):
    """Split a packed batch along cu_seqlens -> (real pieces as token lists, padding lengths)."""
    cu = batch.cu_seqlens.tolist()
    x, y = batch.input_ids[0].tolist(), batch.labels[0].tolist()
    assert cu[0] == 0 and cu[-1] == len(x) and all(a < b for a, b in pairwise(cu))
    assert set(range(0, len(x) + 1, t)) <= set(cu)  # row boundaries are document boundaries
    pieces, pads = [], []
    for a, b in pairwise(cu):
        if all(v == IGNORE for v in y[a:b]):
            assert b % t == 0 and set(x[a:b]) == {0}  # padding only at a row's end
            pads.append(b - a)
        else:
            assert x[a + 1:b] == y[a:b - 1]  # labels are the next inputs within a document
            pieces.append(tuple(x[a:b] + [y[b - 1]]))
    return pieces, pads


def test_pack_covers_every_piece_once(tmp_path):
    lengths = [3, 17, 18, 40, 2, 9, 5, 5, 12, 33, 16, 8]
    prefix, docs = make_binidx(tmp_path, lengths)
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="pack")
    expected = Counter()
    for d in docs:  # a document of n tokens has n-1 pairs, cut every CTX pairs
        for k in range(0, len(d) - 1, CTX):
            expected[tuple(d[k:k + CTX + 1])] += 1
    got = Counter()
    plan_rows = 0
    for batch in batches(ds, 1, seed=5, fixed_len=True):
        assert batch.input_ids.shape == (1, CTX)
        pieces, _ = pieces_of(batch, CTX)
        got.update(pieces)
        plan_rows += 1
    assert got == expected
    assert plan_rows < len(expected)  # pieces really share rows


def test_pack_flattens_micro_batches(tmp_path):
    prefix, _ = make_binidx(tmp_path, [5, 9, 4, 12, 3, 7, 6])
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="pack")
    batch = next(batches(ds, 3, fixed_len=True))
    assert batch.input_ids.shape == (1, 3 * CTX) and batch.labels.shape == (1, 3 * CTX)
    assert batch.cu_seqlens.dtype == torch.int64
    pieces_of(batch, CTX)


def rwkv_lm_window(p: int, ctx_len: int, epoch_sample: int) -> int:
    """RWKV-LM train_temp/src/dataset.py: the start of sample ii = 1 + global sample number."""
    ii = 1 + epoch_sample
    factor = int(p * 0.6180339887)
    return ((factor * ii * ii * ii) % p) * ctx_len


def test_get_magic_prime_matches_rwkv_lm_and_covers_all_chunks(tmp_path):
    prefix, docs = make_binidx(tmp_path, [50] * 10)  # 500 tokens, 31 chunks of 16
    stream = [t for d in docs for t in d]
    p, world, bsz = 29, 2, 3
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="get", magic_prime=p)
    starts = {}
    for rank in range(world):
        for step, batch in enumerate(batches(ds, bsz, rank=rank, world_size=world)):
            assert batch.input_ids.shape == (bsz, CTX)
            for b in range(bsz):
                g = (step * bsz + b) * world + rank
                s = rwkv_lm_window(p, CTX, g)
                assert batch.input_ids[b].tolist() == stream[s:s + CTX]
                assert batch.labels[b].tolist() == stream[s + 1:s + CTX + 1]
                starts[g] = s
    assert sorted(starts[g] // CTX for g in range(p)) == list(range(p))
    assert len(starts) == 30  # 29 padded to a multiple of world * bsz


def test_get_without_magic_prime_is_seeded_uniform(tmp_path):
    prefix, docs = make_binidx(tmp_path, [30] * 6)
    stream = [t for d in docs for t in d]
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="get")
    first = [b.input_ids for b in batches(ds, 2, seed=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, [b.input_ids for b in batches(ds, 2, seed=1)]))
    assert not all(torch.equal(a, b) for a, b in zip(first, [b.input_ids for b in batches(ds, 2, seed=2)]))
    assert len(first) == -(-(len(stream) // CTX) // 2)  # data_size // ctx_len windows, padded to whole steps
    text = " ".join(map(str, stream))
    for batch in batches(ds, 2, seed=1, epoch=1):
        for x, y in zip(batch.input_ids.tolist(), batch.labels.tolist()):
            assert x[1:] == y[:-1] and " ".join(map(str, x + y[-1:])) in text


@pytest.mark.parametrize("world, bsz, n_docs", [(3, 2, 12), (2, 2, 13), (1, 4, 7)])
def test_rank_sharding_sees_each_sample_once(tmp_path, world, bsz, n_docs):
    prefix, docs = make_binidx(tmp_path, [5 + i for i in range(n_docs)])
    ds = build_dataset(prefix, "binidx", ctx_len=64)
    seen, steps = Counter(), set()
    for rank in range(world):
        rank_batches = list(batches(ds, bsz, rank=rank, world_size=world, epoch=2, seed=9))
        steps.add(len(rank_batches))
        for batch in rank_batches:
            seen.update(int((row != IGNORE).sum()) for row in batch.labels)
    assert len(steps) == 1  # every rank takes the same number of steps
    counts = [seen[len(d) - 1] for d in docs]
    extra = steps.pop() * bsz * world - n_docs
    assert min(counts) == 1 and sum(counts) == n_docs + extra and extra < bsz * world


def test_epochs_reshuffle(tmp_path):
    prefix, _ = make_binidx(tmp_path, list(range(3, 30)))
    ds = build_dataset(prefix, "binidx", ctx_len=64)
    order = lambda epoch: [b.num_tokens for b in batches(ds, 1, epoch=epoch, seed=0)]
    assert order(0) == order(0) and order(0) != order(1) and sorted(order(0)) == sorted(order(1))


@pytest.mark.parametrize("dataload", ["pad", "pack", "get"])
def test_resume_continues_with_the_same_batches(tmp_path, dataload):
    prefix, _ = make_binidx(tmp_path, [4 + 3 * i for i in range(15)])
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload=dataload)
    loader = BatchLoader(ds, micro_bsz=2, seed=4)
    per_epoch = loader.steps_in_epoch()
    it = iter(loader)
    list(islice(it, per_epoch - 1))  # stop one step before the epoch ends
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["step"] == per_epoch - 1
    rest = list(islice(it, 4))  # crosses into epoch 1
    resumed = BatchLoader(ds, micro_bsz=2, seed=123)
    resumed.load_state_dict(state)
    again = list(islice(iter(resumed), 4))
    for a, b in zip(rest, again):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert loader.state_dict()["epoch"] == 1


def test_resume_with_a_different_global_batch_keeps_the_sample_position(tmp_path):
    prefix, _ = make_binidx(tmp_path, [4 + i for i in range(16)])
    ds = build_dataset(prefix, "binidx", ctx_len=CTX)
    small = BatchLoader(ds, micro_bsz=1, seed=0)
    it = iter(small)
    list(islice(it, 4))
    expected = [row for b in islice(it, 4) for row in b.labels.tolist()]
    big = BatchLoader(ds, micro_bsz=4, seed=0)
    big.load_state_dict(small.state_dict() | {"step": 4})
    got = [row for b in islice(iter(big), 1) for row in b.labels.tolist()]
    strip = lambda rows: [[v for v in r if v != IGNORE] for r in rows]
    assert strip(got) == strip(expected)


def test_num_tokens_counts_trained_labels():
    from rwkv_peft.data import Batch

    batch = Batch(torch.zeros(2, 4, dtype=torch.long), torch.tensor([[1, 2, IGNORE, IGNORE], [3, IGNORE, 4, 5]]))
    assert batch.num_tokens == 5
    assert batch.to("cpu").cu_seqlens is None


def test_bucket_lengths_and_padding_keep_every_row():
    from rwkv_peft.data.batch import Batch, bucket_length

    assert [bucket_length(t, 1024) for t in (1, 256, 257, 512, 513, 1024)] == [256, 256, 512, 512, 1024, 1024]
    assert bucket_length(40, 100) == 64 and bucket_length(10, 100) == 32  # ctx/4 and ctx/2 rounded up to 16
    b = Batch(torch.tensor([[5, 6, 7]]), torch.tensor([[6, 7, -100]]))
    p = b.pad_to(8)
    assert p.input_ids.tolist() == [[5, 6, 7, 0, 0, 0, 0, 0]] and p.labels.tolist() == [[6, 7] + [-100] * 6]
    assert p.num_tokens == b.num_tokens and b.pad_to(2) is b


def test_no_shuffle_takes_the_data_in_its_own_order(tmp_path):
    """--data_shuffle 0: documents in file order (rank r of 2 takes every other one), windows from the start."""
    prefix, docs = make_binidx(tmp_path, [5, 9, 7, 12, 6, 8])
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="pad")
    firsts = [b.input_ids[0, 0].item() for b in batches(ds, 1, shuffle=False)]
    assert firsts == [d[0] for d in docs]
    assert [b.input_ids[0, 0].item() for b in batches(ds, 1, rank=1, world_size=2, shuffle=False)] == firsts[1::2]
    assert firsts != [b.input_ids[0, 0].item() for b in batches(ds, 1, seed=0)]  # the default shuffles
    stream = [t for d in docs for t in d]
    ds = build_dataset(prefix, "binidx", ctx_len=CTX, dataload="get")
    got = [b.input_ids[0].tolist() for b in batches(ds, 1, shuffle=False)]
    assert got == [stream[i * CTX:(i + 1) * CTX] for i in range(len(got))] and len(got) == len(stream) // CTX
