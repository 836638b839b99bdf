"""Per-pixel softmax cross-entropy over NCHW logits, void pixels ignored: the training loss.

The value and gradient are ``nn.CrossEntropyLoss(ignore_index=...)``'s (the tutorial's loss); the
computation is not. MindSpore's version reduces over the class axis of NCHW logits, strided
reductions that its CPU kernels run slowly: in ``benchmarks/profile_step.py`` its ReduceSum was the
largest op of the demo's train step after the convolutions. Here the logits are transposed once to
one row per pixel and go through the fused ``SoftmaxCrossEntropyWithLogits``, which reads the class
axis contiguously (about 3x faster for FCN's batches, forward and backward).
"""
import mindspore as ms
from mindspore import nn, ops


class PixelCrossEntropy(nn.Cell):
    """Mean cross-entropy of (N, C, H, W) logits against (N, H, W) integer labels over the pixels whose
    label is not ``ignore_index``. A batch without a labelled pixel gives 0 (nn.CrossEntropyLoss: NaN)."""

    def __init__(self, ignore_index=255):
        super().__init__()
        self.ignore_index = ignore_index
        self.cross_entropy = ops.SoftmaxCrossEntropyWithLogits()
        self.one = ms.Tensor(1.0, ms.float32)
        self.zero = ms.Tensor(0.0, ms.float32)

    def construct(self, logits, labels):
        num_classes = logits.shape[1]
        rows = logits.astype(ms.float32).transpose(0, 2, 3, 1).reshape(-1, num_classes)
        labels = labels.reshape(-1)
        labelled = labels != self.ignore_index
        targets = ops.one_hot(ops.select(labelled, labels, ops.zeros_like(labels)), num_classes, self.one, self.zero)
        per_pixel, _ = self.cross_entropy(rows, targets)
        weights = labelled.astype(ms.float32)
        return (per_pixel * weights).sum() / ops.maximum(weights.sum(), self.one)
