"""Learning-rate schedules, in optimizer steps (the unit of --warmup_steps, --max_steps and the run's length).

Every schedule starts with a linear warmup over `warmup` steps (step s gets (s + 1) / warmup of the peak, so the
first step never has a zero rate), then:

- cos_decay: cosine from lr_init down to lr_final over the remaining steps (RWKV-PEFT's default, plus warmup);
- wsd: warmup-stable-decay: lr_init held constant, then a linear decay to lr_final over the last
  `decay_fraction` of the run (RWKV-PEFT's "wsd" was warmup + cosine to 0 and ignored lr_final);
- constant: lr_init throughout (lr_final unused).

`lr_init == lr_final` gives a constant rate under every schedule, as in RWKV-PEFT. Steps past the end keep the
final rate.
"""

import math
from dataclasses import dataclass

SCHEDULES = ("cos_decay", "wsd", "constant")
_ALIASES = {"cos": "cos_decay"}


@dataclass(frozen=True)
class Schedule:
    kind: str
    total_steps: int
    warmup_steps: int = 0
    decay_fraction: float = 0.2

    def __post_init__(self):
        object.__setattr__(self, "kind", _ALIASES.get(self.kind, self.kind))
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.kind!r}; choose from {', '.join(SCHEDULES)}")

    def lr(self, step: int, lr_init: float, lr_final: float) -> float:
        """The rate of optimizer step `step` (0-based) for a group whose peak is lr_init and end lr_final."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return lr_init * (step + 1) / self.warmup_steps
        if self.kind == "constant" or lr_init == lr_final:
            return lr_init
        if self.kind == "cos_decay":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return lr_final + 0.5 * (lr_init - lr_final) * (1 + math.cos(math.pi * progress))
        decay_steps = max(1, round(self.decay_fraction * self.total_steps))
        decay_start = max(self.warmup_steps, self.total_steps - decay_steps)
        if step < decay_start:
            return lr_init
        progress = min(1.0, (step - decay_start + 1) / max(1, self.total_steps - decay_start))
        return lr_init + (lr_final - lr_init) * progress
