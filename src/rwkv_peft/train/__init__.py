"""Training: the config tree, the loop (setup, step, evaluate, save), optimizer and schedules, the chunked loss,
infctx, resumable checkpoints, metrics and evaluation.

    from rwkv_peft.train import build_config, train
    cfg = build_config({"load_model": "base.pth", "data_file": "data.jsonl", "peft": "lora"})
    summary = train(cfg)
"""

from .config import TrainConfig, build_config
from .eval import EvalResult, evaluate
from .loop import RunSummary, Trainer, TrainingDiverged, train

__all__ = [
           "EvalResult",
           "RunSummary",
           "TrainConfig",
           "Trainer",
           "TrainingDiverged",
           "build_config",
           "evaluate",
           "train",
]
