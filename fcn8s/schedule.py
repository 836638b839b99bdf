"""Per-step learning-rate schedules (a value for every optimizer step, not one per epoch)."""
import math

import numpy as np


def lr_per_step(kind, base_lr, total_steps, min_lr=0.0, warmup_steps=0, power=0.9):
    """float32 array of ``total_steps`` learning rates.

    ``warmup_steps`` ramp linearly up to ``base_lr`` (step i gets base_lr * (i+1) / warmup_steps),
    then ``kind`` decays from ``base_lr`` towards ``min_lr`` over the remaining steps:
    cosine: min + (base - min) * (1 + cos(pi * t)) / 2;  poly: min + (base - min) * (1 - t) ** power;
    constant: base; with t = step / decay_steps in [0, 1).
    """
    warmup_steps = min(int(warmup_steps), total_steps)
    decay_steps = total_steps - warmup_steps
    lrs = [base_lr * (i + 1) / warmup_steps for i in range(warmup_steps)]
    for i in range(decay_steps):
        t = i / decay_steps
        if kind == "cosine":
            lrs.append(min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t)) / 2)
        elif kind == "poly":
            lrs.append(min_lr + (base_lr - min_lr) * (1 - t) ** power)
        elif kind == "constant":
            lrs.append(base_lr)
        else:
            raise ValueError(f"unknown schedule {kind!r}")
    return np.asarray(lrs, dtype=np.float32)
