"""The adapter test matrix: tiny model sizes, one training recipe per method (in the seeds' flag spellings), and
what a trained case keeps for the checks."""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from rwkv_peft import adapters
from rwkv_peft.model import RWKV6Config, RWKV7Config
from rwkv_peft.model.load import load_base

VOCAB = 1000
CONFIGS = {7: RWKV7Config(n_layer=2, n_embd=128, vocab_size=VOCAB),
           6: RWKV6Config(n_layer=2, n_embd=128, vocab_size=VOCAB)}
# Training flags per matrix case, in the spellings the seeds use. bone_ragged: r=48 divides neither C=128 nor
# the FFN width, so the padded last block is exercised.
CASES = {
    "lora": {"peft": "lora", "lora_config": '{"lora_load":"","lora_r":8,"lora_alpha":16,"lora_dropout":0.01}'},
    "pissa": {"peft": "pissa", "pissa_config": '{"pissa_load":"","pissa_init":"","pissa_r":8,"svd_niter":4}'},
    "bone": {"peft": "miss", "peft_config": '{"r":32}', "train_parts": ["ln"]},
    "bone_ragged": {"peft": "disha", "disha_config": '{"mode":"bone","load":"","r":48}'},
    "bat": {"peft": "disha", "disha_config": '{"mode":"bat","load":"","r":32}'},
    "state": {"train_type": "state"},
    "state+lora": {"peft": "lora", "peft_config": '{"r":8,"lora_alpha":32,"lora_dropout":0.0}',
                   "train_type": "state"},
}
STEPS = 4
LR = {"state": 0.05}


@dataclass
class Trained:
    """One matrix case after a few training steps. Logits are [B, T, V] on `tokens`."""

    spec: adapters.AdapterSpec
    model: torch.nn.Module
    base_path: Path
    proj_dir: Path
    adapter_path: Path
    tokens: torch.Tensor
    base_logits: torch.Tensor
    init_logits: torch.Tensor
    adapted_logits: torch.Tensor
    losses: list[float]


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def train_steps(model, tokens: torch.Tensor, case: str) -> tuple[list[float], torch.Tensor]:
    """STEPS Adam steps on the fixed batch: (loss before each step and after the last, final logits)."""
    optimizer = torch.optim.Adam(adapters.trainable_parameters(model).values(), lr=LR.get(case, 1e-2))
    model.train()
    losses = []
    for _ in range(STEPS):
        loss = lm_loss(model, tokens)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        losses.append(lm_loss(model, tokens).item())
        adapted_logits = model(tokens)
    return losses, adapted_logits


def train_case(case: str, version: int, base_path: Path, proj_dir: Path, tokens: torch.Tensor) -> Trained:
    torch.manual_seed(1234)
    spec = adapters.spec_from_flags(CASES[case])
    model = load_base(base_path)
    with torch.no_grad():
        base_logits = model(tokens)
    adapters.apply_adapter(model, spec)
    if spec.method == "pissa":
        adapters.write_pissa_init(model, proj_dir)
    with torch.no_grad():
        init_logits = model(tokens)
    losses, adapted_logits = train_steps(model, tokens, case)
    path = adapters.save_adapter(model, spec, proj_dir, 0, base_path)
    return Trained(spec, model, base_path, proj_dir, path, tokens, base_logits, init_logits, adapted_logits, losses)


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()
