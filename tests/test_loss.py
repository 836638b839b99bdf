import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from fcn8s.loss import PixelCrossEntropy


def _value_and_grad(loss_fn, logits, labels):
    value, grad = ms.value_and_grad(loss_fn)(ms.Tensor(logits), ms.Tensor(labels))
    return float(value), grad.asnumpy()


@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 21, 16, 16)])
def test_value_and_gradient_are_those_of_mindspores_cross_entropy(shape):
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = 255
    ours = _value_and_grad(PixelCrossEntropy(255), logits, labels)
    reference = _value_and_grad(nn.CrossEntropyLoss(ignore_index=255), logits, labels)
    assert ours[0] == pytest.approx(reference[0], rel=1e-5)
    np.testing.assert_allclose(ours[1], reference[1], atol=1e-7)
    assert np.abs(ours[1][np.broadcast_to((labels == 255)[:, None], logits.shape)]).max() == 0   # void: no gradient


def test_a_batch_without_labelled_pixels_gives_zero_loss_and_gradient():
    logits = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    value, grad = _value_and_grad(PixelCrossEntropy(255), logits, np.full((1, 4, 4), 255, np.int32))
    assert value == 0 and not grad.any()
