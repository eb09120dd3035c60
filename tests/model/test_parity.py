"""Our RWKV-7 and RWKV-6 against the official `rwkv` package (strategy 'cpu fp32') on random official-shape
checkpoints: logits at every position, recurrent state, and our own sequence vs recurrent modes."""

import copy

import pytest
import torch

from rwkv_peft.model import model_from_state_dict
from rwkv_peft.model.init import random_state_dict
from tests.conftest import load_official, rel_err, tiny_config

# Both sides compute in fp32 from the same weights; differences are summation order only.
PARITY_TOL = 1e-4
# Sequence vs one-token-at-a-time in our own model: same fp32 math in another order.
MODE_TOL = 1e-5

SHAPES = [  # (version, n_layer, n_embd, vocab, head_size)
    (7, 2, 128, 1000, 64),
    (7, 3, 256, 500, 32),
    (7, 1, 64, 300, 16),
    (6, 2, 128, 1000, 64),
    (6, 3, 192, 500, 32),
]


def _tokens(vocab: int, T: int, seed: int = 0) -> list[int]:
    return torch.randint(1, vocab, (T,), generator=torch.Generator().manual_seed(seed)).tolist()


def _official_logits(ref, version: int, tokens: list[int]) -> torch.Tensor:
    if version == 7:
        return ref.forward(tokens, None, full_output=True)[0]
    # The v6 class returns only the last position: step it to get every position.
    out, state = [], None
    for t in tokens:
        logits, state = ref.forward([t], state)
        out.append(logits)
    return torch.stack(out)


@pytest.mark.parametrize("version,n_layer,n_embd,vocab,head_size", SHAPES)
def test_logits_match_official_package(tmp_path, version, n_layer, n_embd, vocab, head_size):
    # fp32 files: the v6 package computes LN(emb) in the file dtype, which would add bf16 rounding to its side.
    cfg = tiny_config(version, n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, head_size=head_size)
    sd = random_state_dict(cfg, seed=n_embd, dtype=torch.float32)
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    tokens = _tokens(vocab, 23)
    with torch.no_grad():
        ours = model_from_state_dict(sd)(torch.tensor([tokens]))[0]
    theirs = _official_logits(load_official(path, version), version, tokens)
    assert rel_err(ours, theirs) < PARITY_TOL


def test_v7_0p1b_shape_matches_official_package(tmp_path):
    """The real 0.1B geometry (L12 C768, 65536 vocab) from a bf16 file, as official checkpoints are stored."""
    cfg = tiny_config(7, n_layer=12, n_embd=768, vocab_size=65536)
    sd = random_state_dict(cfg, seed=1, dtype=torch.bfloat16)
    path = tmp_path / "rand-0.1b.pth"
    torch.save(sd, path)
    tokens = _tokens(65536, 8)
    with torch.no_grad():
        ours = model_from_state_dict(sd, dtype=torch.float32)(torch.tensor([tokens]))[0]
    theirs = _official_logits(load_official(path, 7), 7, tokens)
    assert rel_err(ours, theirs) < PARITY_TOL


@pytest.mark.parametrize("version", [7, 6])
def test_final_state_matches_official_package(tmp_path, version):
    cfg = tiny_config(version)
    sd = random_state_dict(cfg, seed=3, dtype=torch.float32)
    path = tmp_path / "m.pth"
    torch.save(sd, path)
    tokens = _tokens(cfg.vocab_size, 17)
    with torch.no_grad():
        _, state = model_from_state_dict(sd).forward_with_state(torch.tensor([tokens]))
    ref = load_official(path, version)
    ref_state = None
    for t in tokens:
        _, ref_state = ref.forward([t], ref_state)
    for ours, theirs in zip(state.to_pip_list(version), ref_state):
        assert rel_err(ours, theirs) < PARITY_TOL


@pytest.mark.parametrize("version", [7, 6])
def test_recurrent_mode_equals_sequence_mode(version):
    model = model_from_state_dict(random_state_dict(tiny_config(version), seed=4, dtype=torch.float32))
    tokens = torch.tensor([_tokens(1000, 29, seed=1), _tokens(1000, 29, seed=2)])
    with torch.no_grad():
        full, full_state = model.forward_with_state(tokens)
        steps, state = [], None
        for t in range(tokens.shape[1]):
            logits, state = model.forward_with_state(tokens[:, t:t + 1], state)
            steps.append(logits)
        # A split in the middle, carrying the state, is the same too.
        a, mid = model.forward_with_state(tokens[:, :11])
        b, _ = model.forward_with_state(tokens[:, 11:], copy.deepcopy(mid))
    assert rel_err(torch.cat(steps, 1), full) < MODE_TOL
    assert rel_err(torch.cat([a, b], 1), full) < MODE_TOL
    for x, y in zip(state.wkv, full_state.wkv):
        assert rel_err(x, y) < MODE_TOL


@pytest.mark.parametrize("version", [7, 6])
def test_packed_row_equals_documents_run_alone(version):
    model = model_from_state_dict(random_state_dict(tiny_config(version), seed=5, dtype=torch.float32))
    docs = [_tokens(1000, n, seed=n) for n in (9, 1, 20, 6)]
    row = torch.tensor([sum(docs, [])])
    cu = torch.tensor([0] + torch.tensor([len(d) for d in docs]).cumsum(0).tolist())
    with torch.no_grad():
        packed = model(row, cu_seqlens=cu)[0]
        alone = torch.cat([model(torch.tensor([d]))[0] for d in docs])
    assert rel_err(packed, alone) < MODE_TOL


@pytest.mark.parametrize("version", [7, 6])
def test_gradient_checkpointing_gives_the_same_gradients(version):
    sd = random_state_dict(tiny_config(version), seed=6, dtype=torch.float32)
    tokens = torch.tensor([_tokens(1000, 19)])
    grads = []
    for grad_cp in (False, True, 0.5):
        model = model_from_state_dict(sd).train()
        model.grad_cp = grad_cp
        model(tokens).logsumexp(-1).mean().backward()
        # Block 0's v0/v1/v2 are unused by design and get no gradient.
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert rel_err(grads[1], grads[0]) < MODE_TOL and rel_err(grads[2], grads[0]) < MODE_TOL


@pytest.mark.parametrize("value_residual", [True, False])
def test_one_gemm_low_rank_products_equal_the_four(value_residual):
    """RWKV-7's low-rank first products as one GEMM over [x, d] (what CUDA runs) equal the official four products of
    the token-shift mixes, outputs and gradients; without the value residual (layer 0) v1 takes no part."""
    from rwkv_peft.model.rwkv7 import TimeMix

    model = model_from_state_dict(random_state_dict(tiny_config(7), seed=7, dtype=torch.float32))
    att: TimeMix = model.blocks[1].att
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(2, 9, att.x_w.shape[-1], generator=g), torch.randn(2, 9, att.x_w.shape[-1], generator=g)
    results = []
    for one_gemm in (False, True):
        att.zero_grad(set_to_none=True)
        xs = [x.clone().requires_grad_(), d.clone().requires_grad_()]
        outs = att.lowrank_hidden(*xs, value_residual=value_residual, one_gemm=one_gemm)
        assert (outs[2] is None) != value_residual
        live = [o for o in outs if o is not None]
        sum((o * torch.randn(o.shape, generator=torch.Generator().manual_seed(i))).sum()
            for i, o in enumerate(live)).backward()
        grads = {n: p.grad for n, p in att.named_parameters() if p.grad is not None}
        results.append(([o.detach() for o in live], [t.grad for t in xs], grads))
    (a, ga, pa), (b, gb, pb) = results
    assert pa.keys() == pb.keys() and ("v1" in pa) == value_residual
    for u, v in zip(a + ga + list(pa.values()), b + gb + list(pb.values()), strict=True):
        assert rel_err(v, u) < MODE_TOL
