import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from fcn8s.loss import PixelCrossEntropy


@pytest.fixture(params=["native", "custom", "custom-baseline"])
def impl(request):
    """MindSpore's ops, or the library's kernels in each of their builds (conftest.baseline_build)."""
    if request.param != "native":
        request.getfixturevalue("onednn_kernels")   # skips where the kernel library does not load
    if request.param == "custom-baseline":
        request.getfixturevalue("baseline_build")
    return request.param.split("-")[0]


def _value_and_grad(loss_fn, logits, labels):
    value, grad = ms.value_and_grad(loss_fn)(ms.Tensor(logits), ms.Tensor(labels))
    return float(value), grad.asnumpy()


def _reference(logits, labels, ignore):
    """The mean cross-entropy and its gradient in float64 numpy, straight from the definition."""
    x = logits.astype(np.float64)
    lse = x.max(1) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1))
    labelled = labels != ignore
    picked = np.take_along_axis(x, np.where(labelled, labels, 0)[:, None], 1)[:, 0]
    count = max(labelled.sum(), 1)
    onehot = np.arange(x.shape[1])[None, :, None, None] == labels[:, None]
    grad = (np.exp(x - lse[:, None]) - onehot) * labelled[:, None] / count
    return ((lse - picked) * labelled).sum() / count, grad


def _batch(rng, shape, ignore, spread=3.0):
    logits = (spread * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, shape[1], (shape[0],) + shape[2:]).astype(np.int32)
    labels[rng.random(labels.shape) < 0.2] = ignore
    return logits, labels


# (1, 21, 9, 70): 630 pixels an image, not a multiple of the custom kernels' 64-pixel tiles
@pytest.mark.parametrize("shape", [(2, 5, 7, 9), (1, 21, 16, 16), (1, 21, 9, 70)])
def test_value_and_gradient_are_those_of_mindspores_cross_entropy(shape, impl, rng):
    logits, labels = _batch(rng, shape, 255)
    ours = _value_and_grad(PixelCrossEntropy(255, impl), logits, labels)
    reference = _value_and_grad(nn.CrossEntropyLoss(ignore_index=255), logits, labels)
    assert ours[0] == pytest.approx(reference[0], rel=1e-5)
    np.testing.assert_allclose(ours[1], reference[1], atol=1e-7)
    assert np.abs(ours[1][np.broadcast_to((labels == 255)[:, None], logits.shape)]).max() == 0   # void: no gradient


def test_an_ignore_label_inside_the_classes_and_logits_far_apart(impl, rng):
    """Class 0 as the void label, and logits hundreds apart (a naive exp overflows): float64's values."""
    logits, labels = _batch(rng, (2, 6, 5, 11), 0, spread=300.0)
    value, grad = _value_and_grad(PixelCrossEntropy(0, impl), logits, labels)
    expected_value, expected_grad = _reference(logits, labels, 0)
    assert value == pytest.approx(expected_value, rel=1e-5)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)
    assert not grad[np.broadcast_to((labels == 0)[:, None], logits.shape)].any()


def test_a_batch_without_labelled_pixels_gives_zero_loss_and_gradient(impl):
    logits = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    value, grad = _value_and_grad(PixelCrossEntropy(255, impl), logits, np.full((1, 4, 4), 255, np.int32))
    assert value == 0 and not grad.any()


def test_a_nan_logit_of_any_class_makes_the_loss_nan(impl, rng):
    """The trainer stops on a NaN loss; a NaN in a class other than the label's must not be lost."""
    logits, labels = _batch(rng, (1, 4, 3, 3), 255)
    labels[0, 1, 1] = 2
    logits[0, 3, 1, 1] = np.nan
    value = float(PixelCrossEntropy(255, impl)(ms.Tensor(logits), ms.Tensor(labels)))
    assert math.isnan(value)


def test_the_custom_kernel_refuses_a_label_outside_the_classes(onednn_kernels, rng):
    logits, labels = _batch(rng, (1, 4, 3, 3), 255)
    labels[0, 2, 2] = 7
    with pytest.raises(RuntimeError):
        PixelCrossEntropy(255, "custom")(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()


def test_the_loss_is_made_native_or_custom():
    with pytest.raises(ValueError, match="native or custom"):
        PixelCrossEntropy(255, "onednn")
