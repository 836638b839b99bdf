"""Per-pixel softmax cross-entropy over NCHW logits, void pixels ignored: the training loss.

The value and gradient are ``nn.CrossEntropyLoss(ignore_index=...)``'s (the tutorial's loss); the
computation is not. MindSpore's version reduces over the class axis of NCHW logits, strided
reductions that its CPU kernels run slowly: in ``benchmarks/profile_step.py`` its ReduceSum was the
largest op of the demo's train step after the convolutions. Made ``native``, the logits are transposed
once to one row per pixel and go through the fused ``SoftmaxCrossEntropyWithLogits``, which reads the
class axis contiguously (about 3x faster for FCN's batches, forward and backward). Made ``custom`` (CPU,
where the kernel library loads: the kernel plan's ``loss``, ``fcn8s.kernels``), the library's
``cross_entropy_*`` kernels read the NCHW logits in place: one pass for the value, which keeps each
pixel's log-sum-exp, and one for the gradient; the transposes, the one-hot targets and the masking
products are gone (``benchmarks/loss_kernel.py`` times both).
"""
import mindspore as ms
from mindspore import nn, ops

from .kernels import onednn


class PixelCrossEntropy(nn.Cell):
    """Mean cross-entropy of (N, C, H, W) logits against (N, H, W) integer labels over the pixels whose
    label is not ``ignore_index``. A batch without a labelled pixel gives 0 (nn.CrossEntropyLoss: NaN).
    ``impl``: "native" (MindSpore's ops, any device) or "custom" (the kernel library's, CPU only)."""

    def __init__(self, ignore_index=255, impl="native"):
        super().__init__()
        if impl not in ("native", "custom"):
            raise ValueError(f"the loss is made native or custom; got {impl!r}")
        self.ignore_index = ignore_index
        self.custom = impl == "custom"
        self.one = ms.Tensor(1.0, ms.float32)
        self.zero = ms.Tensor(0.0, ms.float32)
        if self.custom:
            self.sums = LibraryCrossEntropySums(ignore_index)
        else:
            self.cross_entropy = ops.SoftmaxCrossEntropyWithLogits()

    def construct(self, logits, labels):
        logits = logits.astype(ms.float32)
        if self.custom:
            sums = self.sums(logits, labels.astype(ms.int32))[0]
            return sums[0] / ops.maximum(sums[1], self.one)
        num_classes = logits.shape[1]
        rows = logits.transpose(0, 2, 3, 1).reshape(-1, num_classes)
        labels = labels.reshape(-1)
        labelled = labels != self.ignore_index
        targets = ops.one_hot(ops.select(labelled, labels, ops.zeros_like(labels)), num_classes, self.one, self.zero)
        per_pixel, _ = self.cross_entropy(rows, targets)
        weights = labelled.astype(ms.float32)
        return (per_pixel * weights).sum() / ops.maximum(weights.sum(), self.one)


class LibraryCrossEntropySums(nn.Cell):
    """(sums, lse) of float32 (N, C, H, W) logits and int32 (N, H, W) labels by the kernel library
    (``cross_entropy_*`` in fcn8s/kernels/onednn_conv.cc, CPU only): sums (2,) is the cross-entropy summed
    over the labelled pixels and their count, lse each pixel's log-sum-exp, which the gradient reuses. A
    label outside 0..C-1 other than ``ignore_index`` fails the op."""

    def __init__(self, ignore_index):
        super().__init__()
        library = onednn.load()
        self.ignore = ms.Tensor([ignore_index], ms.int32)
        self.forward = ops.Custom(f"{library}:cross_entropy_forward", func_type="aot",
                                  out_shape=lambda logits, labels, ignore: ((2,), labels),
                                  out_dtype=lambda logits, labels, ignore: (logits, logits))
        self.grad = ops.Custom(f"{library}:cross_entropy_grad", func_type="aot",
                               out_shape=lambda logits, *rest: logits, out_dtype=lambda logits, *rest: logits)

    def construct(self, logits, labels):
        return self.forward(logits, labels, self.ignore)

    def bprop(self, logits, labels, out, dout):
        # only the loss sum depends on the logits: its gradient, softmax minus the one-hot, scaled by dout
        scale = dout[0][:1]
        return self.grad(logits, labels, self.ignore, out[1], scale), ops.zeros_like(labels)
