"""Loss and perplexity of a model over a dataset, and samples from fixed prompts: the trainer's validation and
`rwkv-peft eval` use the same functions.

Loss is the mean cross entropy over every trained label position (sum of CE / number of tokens, not a mean of
per-batch means), perplexity its exponential.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Batch, TokenDataset, batches
from ..model.generate import Sampling, generate
from .dist import DistInfo
from .infctx import infctx_loss
from .loss import head_loss
from .precision import Precision


@dataclass(frozen=True)
class EvalResult:
    loss: float
    ppl: float
    tokens: int
    batches: int

    def as_dict(self) -> dict:
        return {"loss": self.loss, "ppl": self.ppl, "tokens": self.tokens, "batches": self.batches}


def evaluate(model: nn.Module, dataset: TokenDataset, micro_bsz: int, precision: Precision, device: torch.device,
             max_batches: int = 0, chunk_ctx: int = 0, dist: DistInfo | None = None,
             loss_module: nn.Module | None = None) -> EvalResult:
    """Mean CE over `dataset` (this rank's share of one deterministic pass; summed over ranks).

    max_batches > 0 stops early; chunk_ctx > 0 runs each row in chunks carrying the state (long samples).
    loss_module: the trainer's `wrap.TrainModule` around `model`, which whole-row batches go through (under
    FSDP only it gathers the sharded base). The model is put in eval mode (no dropout) and restored to its
    previous mode afterwards.
    """
    dist = dist or DistInfo()
    was_training = model.training
    model.eval()
    ce_sum, tokens, count = 0.0, 0, 0
    try:
        for batch in batches(dataset, micro_bsz, dist.rank, dist.world_size, epoch=0):
            if max_batches and count >= max_batches:
                break
            c, n = batch_loss(model, batch.to(device), precision, chunk_ctx, loss_module)
            ce_sum, tokens, count = ce_sum + c, tokens + n, count + 1
    finally:
        model.train(was_training)
    ce_sum, tokens = dist.all_reduce_sum([ce_sum, float(tokens)], device)
    loss = ce_sum / max(tokens, 1)
    return EvalResult(loss, math.exp(min(loss, 50.0)), int(tokens), count)


@torch.no_grad()
def batch_loss(model: nn.Module, batch: Batch, precision: Precision, chunk_ctx: int = 0,
               loss_module: nn.Module | None = None) -> tuple[float, int]:
    """(sum of CE, trained tokens) of one batch; rows run in chunks of chunk_ctx (0: whole) unless packed."""
    if loss_module is not None and (batch.cu_seqlens is not None or not chunk_ctx):
        loss, n = loss_module(batch.input_ids, batch.labels, batch.cu_seqlens, 1.0)
        return float(loss), n
    if batch.cu_seqlens is not None:
        with precision.autocast():
            hidden, _ = model.hidden(batch.input_ids, cu_seqlens=batch.cu_seqlens)
        loss, n = head_loss(hidden, model.head.weight, batch.labels, 1.0, precision.compute_dtype)
        return float(loss), n
    return infctx_loss(model, batch.input_ids, batch.labels, chunk_ctx or batch.input_ids.shape[1], precision)


def sample(model: nn.Module, tokenizer, prompts: list[str], max_tokens: int, precision: Precision,
           seed: int = 0) -> list[str]:
    """One continuation per prompt (top-p 0.3, fixed seed, so samples across steps are comparable)."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for prompt in prompts:
            with precision.autocast():
                out.append("".join(generate(model, tokenizer, prompt, Sampling(top_p=0.3, max_new_tokens=max_tokens,
                                                                               seed=seed))))
        return out
    finally:
        model.train(was_training)


def evaluate_file(model_path: str, data_file: str, *, adapter: str | None = None, state: str | None = None,
                  lora_alpha: float | None = None, pissa_init: str | None = None, data_type: str = "jsonl",
                  ctx_len: int = 1024, chunk_ctx: int = 0, micro_bsz: int = 4, loss_mask: str = "pad",
                  dataload: str = "pad", max_batches: int = 0, precision: str = "fp32",
                  device: str = "cpu", quant: str | None = None, check_fingerprint: bool = True) -> EvalResult:
    """`rwkv-peft eval`: load (and mount), read the data, evaluate."""
    from ..api import load_model
    from ..data import build_dataset

    prec = Precision(precision, torch.device(device))
    prec.configure_backends()
    model = load_model(model_path, adapter=adapter, state=state, device=device, dtype=prec.frozen_dtype,
                       lora_alpha=lora_alpha, pissa_init=pissa_init, quant=quant,
                       check_fingerprint=check_fingerprint)
    dataset = build_dataset(data_file, data_type, None, ctx_len, loss_mask, dataload)
    return evaluate(model, dataset, micro_bsz, prec, torch.device(device), max_batches, chunk_ctx)
