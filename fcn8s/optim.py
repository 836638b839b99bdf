"""Momentum SGD with the tutorial's weight decay, applied in place.

``nn.Momentum(weight_decay=wd)`` adds ``wd * w`` to every gradient with a Mul and an AddN: two
temporaries the size of each weight (800 MB for conv6 alone) and about 0.25 s a step on CPU. Here
the decay goes straight into the momentum buffer before ApplyMomentum, with one in-place
``moment += (wd / m) * w`` (a gradient-descent step on the moment with a negative rate), so that
``moment' = m * (moment + wd / m * w) + g = m * moment + g + wd * w``: the same update, no temporaries.
As in nn.Momentum, BatchNorm gamma and beta are not decayed.

The in-place step is ApplyProximalGradientDescent with no shrinkage (l1 = l2 = 0), which is exactly
``var -= alpha * delta``. ApplyGradientDescent computes the same, but on CPU graph mode then holds a
buffer the size of conv6's weight (392 MiB at full width) through the backward; with this op the step's
memory pool peaks as low as with no decay at all (``benchmarks/RESULTS.md``, peak RSS).

Made ``custom`` (CPU, where the kernel library loads: the kernel plan's ``optimizer``, ``fcn8s.kernels``),
each parameter's update is one op of the library, ``sgd_momentum_update``: the decay, the moment and the
weight in one pass over memory instead of two, in nn.Momentum's order of operations.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.ops import composite as C
from mindspore.ops import functional as F

from .models.layers import in_place_library_op

_decayed_momentum = C.MultitypeFuncGraph("decayed_momentum")


@_decayed_momentum.register("Function", "Function", "Tensor", "Tensor", "Tensor", "Bool", "Tensor", "Tensor",
                            "Tensor")
def _update(apply_momentum, axpy, momentum, learning_rate, decay_rate, decay, gradient, weight, moment):
    if decay:
        # made here, per parameter: one zero Tensor shared by all of them (an attribute) made graph mode hold
        # most of the conv6-sized buffer again (measured by the memory pool's peak)
        no_shrinkage = F.zeros_like(decay_rate)
        moment = F.depend(moment, axpy(moment, decay_rate, no_shrinkage, no_shrinkage, weight))
    return F.depend(True, apply_momentum(weight, moment, learning_rate, gradient, momentum))


_fused_momentum = C.MultitypeFuncGraph("fused_momentum")


@_fused_momentum.register("Function", "Tensor", "Tensor", "Tensor", "Bool", "Tensor", "Tensor", "Tensor")
def _fused_update(update, momentum, learning_rate, weight_decay, decay, gradient, weight, moment):
    return F.depend(True, update(weight, moment, gradient, learning_rate, momentum,
                                 weight_decay if decay else F.zeros_like(weight_decay)))


class Momentum(nn.Momentum):
    """``nn.Momentum`` with in-place weight decay; same arguments, same checkpoint names (``moments.*``).
    ``impl``: "native" (MindSpore's ops, any device) or "custom" (the kernel library's one pass, CPU only)."""

    def __init__(self, params, learning_rate, momentum, weight_decay=0.0, loss_scale=1.0, impl="native"):
        if momentum <= 0:
            raise ValueError("in-place weight decay needs momentum > 0; use nn.Momentum")
        if impl not in ("native", "custom"):
            raise ValueError(f"the momentum update is made native or custom; got {impl!r}")
        super().__init__(params, learning_rate, momentum, weight_decay=0.0, loss_scale=loss_scale)
        self.decay_flags_in_place = tuple(weight_decay > 0 and "beta" not in p.name and "gamma" not in p.name
                                          for p in self._parameters)
        self.custom = impl == "custom"
        if self.custom:
            self.weight_decay_rate = ms.Tensor(weight_decay, ms.float32)
            self.update = in_place_library_op(
                "sgd_momentum_update", ("weight", "moment", "gradient", "lr", "momentum", "decay"),
                written=("weight", "moment"), out_shape=lambda *shapes: (1,), out_dtype=lambda weight, *rest: weight)
        else:
            self.decay_rate = ms.Tensor(-weight_decay / momentum, ms.float32)   # negative: axpy subtracts
            self.axpy = ops.ApplyProximalGradientDescent()   # var -= alpha * delta

    def construct(self, gradients):
        gradients = self.gradients_centralization(gradients)
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        if self.custom:
            return self.hyper_map_reverse(
                F.partial(_fused_momentum, self.update, self.momentum, lr, self.weight_decay_rate),
                self.decay_flags_in_place, gradients, self.params, self.moments)
        return self.hyper_map_reverse(
            F.partial(_decayed_momentum, self.opt, self.axpy, self.momentum, lr, self.decay_rate),
            self.decay_flags_in_place, gradients, self.params, self.moments)
