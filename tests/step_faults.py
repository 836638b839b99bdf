"""A train step that fails on cue, for the tests of how training stops (test_train.py, test_demo.py)."""
import mindspore as ms
import numpy as np

import fcn8s.train as train_module


class InterruptedStep:
    """Stands for ``train.build_train_step``: its step raises KeyboardInterrupt before call ``at`` (counted
    from 1), and returns a NaN loss at call ``nan_at``."""

    def __init__(self, at=None, nan_at=None):
        self.at, self.nan_at, self.calls = at, nan_at, 0
        self.real_build = train_module.build_train_step

    def __call__(self, *args, **kwargs):
        step_fn, optimizer = self.real_build(*args, **kwargs)

        def step(images, labels):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            out = step_fn(images, labels)
            return ms.Tensor(np.float32("nan")) if self.calls == self.nan_at else out
        step.get_parameters = step_fn.get_parameters
        return step, optimizer
