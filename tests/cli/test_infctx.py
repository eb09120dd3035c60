"""infctx: a sample 8 x chunk_ctx long gives the full-length loss, and the same gradient (no truncation)."""

import torch

from rwkv_peft import adapters
from rwkv_peft.model.load import load_base
from rwkv_peft.train.infctx import infctx_backward, infctx_loss
from rwkv_peft.train.loss import head_loss
from rwkv_peft.train.precision import Precision

from ..train.helpers import losses, make_binidx, run_cli, train_args

CHUNK = 16
LOSS_TOL = 1e-5  # relative; fp32 sums in another order
GRAD_TOL = 1e-4  # relative to each tensor's largest gradient


def _adapted(base, spec_flags: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = load_base(base).train()
    adapters.apply_adapter(model, adapters.spec_from_flags(spec_flags))
    with torch.no_grad():  # move off the identity init so every gradient path is non-trivial
        for p in adapters.trainable_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_chunked_loss_and_gradient_equal_full_length(base):
    model = _adapted(base, {"peft": "lora", "peft_config": '{"r":4,"lora_dropout":0.0}', "train_type": "state"})
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 256, (2, 8 * CHUNK), generator=g)
    labels = torch.randint(1, 256, (2, 8 * CHUNK), generator=g)
    labels[1, 100:] = -100  # a padded row
    n = int((labels != -100).sum())
    precision = Precision("fp32", torch.device("cpu"))

    hidden, _ = model.hidden(ids)
    full, _ = head_loss(hidden, model.head.weight, labels, n)
    full.backward()
    params = adapters.trainable_parameters(model)
    full_grads = {k: p.grad.clone() for k, p in params.items()}
    model.zero_grad()

    ce_sum, tokens = infctx_backward(model, ids, labels, CHUNK, n, precision)
    assert tokens == n
    assert abs(ce_sum / n - full.item()) <= LOSS_TOL * full.item()
    assert abs(infctx_loss(model, ids, labels, CHUNK, precision)[0] / n - full.item()) <= LOSS_TOL * full.item()
    for k, p in params.items():
        scale = full_grads[k].abs().max()
        assert (p.grad - full_grads[k]).abs().max() <= GRAD_TOL * scale, k
    # The tuned initial state gets its gradient through all 8 chunks.
    assert params["blocks.0.att.time_state"].grad.abs().max() > 0


def test_infctx_run_matches_full_length_run(base, tmp_path):
    """Through the CLI: same seed, same data, rows of 8 x chunk_ctx (longer documents are cut at ctx_len);
    every step's loss agrees."""
    data = make_binidx(tmp_path / "long", n_docs=40, lengths=(8 * CHUNK + 1, 8 * CHUNK + 40))
    flags = ["--peft", "lora", "--lora_config", '{"lora_r":8,"lora_alpha":16,"lora_dropout":0.0}',
             "--ctx_len", str(8 * CHUNK), "--epoch_steps", "6", "--plot", "0"]
    assert run_cli(*train_args(base, data, tmp_path / "full", *flags)).rc == 0
    run = run_cli(*train_args(base, data, tmp_path / "infctx", *flags, "--train_type", "infctx",
                              "--chunk_ctx", str(CHUNK)))
    assert run.rc == 0, run.err
    for a, b in zip(losses(tmp_path / "full"), losses(tmp_path / "infctx"), strict=True):
        assert abs(a - b) <= 1e-4 * a, (a, b)
