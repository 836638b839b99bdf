"""Per-pixel softmax cross-entropy over NCHW logits, void pixels ignored: the training loss.

The value and gradient are ``nn.CrossEntropyLoss(ignore_index=...)``'s (the tutorial's loss); the
computation is not. MindSpore's version reduces over the class axis of NCHW logits, a strided
reduction that its CPU kernels run slowly: 120-220 ms for forward and backward of one FCN batch
(8x21x128², 2x21x256², 1x21x512²), 25-40% of the demo's whole train step. Here the logits are
transposed once to one row per pixel and go through the fused ``SoftmaxCrossEntropyWithLogits``,
which takes the class axis contiguously: 30-75 ms for the same batches.
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
