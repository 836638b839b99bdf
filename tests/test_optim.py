import functools

import mindspore as ms
import numpy as np
import pytest
from mindspore import amp, nn

from fcn8s.kernels import onednn
from fcn8s.models import FCN
from fcn8s.optim import Momentum

needs_library = pytest.mark.skipif(not onednn.available()[0], reason="the kernel library does not load here")


def _train(optimizer_cls, mode, loss_scale, rng_seed=0, steps=4):
    ms.set_context(mode=mode)
    ms.set_seed(0)
    net = FCN("fcn8s", num_classes=3, width=0.0625)
    lr = ms.Tensor(np.linspace(0.05, 0.01, steps).astype(np.float32))
    optimizer = optimizer_cls(net.trainable_params(), learning_rate=lr, momentum=0.9, weight_decay=0.01,
                              loss_scale=loss_scale)
    kwargs = {"loss_scale_manager": amp.FixedLossScaleManager(loss_scale, drop_overflow_update=False)} \
        if loss_scale != 1.0 else {}
    step = amp.build_train_network(net, optimizer, nn.CrossEntropyLoss(ignore_index=255), level="O0", **kwargs)
    rng = np.random.default_rng(rng_seed)
    images = ms.Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, 3, (2, 64, 64)).astype(np.int32))
    for _ in range(steps):
        step(images, labels)
    return {p.name: p.asnumpy().copy() for p in step.get_parameters()}


@pytest.mark.parametrize("mode, loss_scale, impl", [
    (ms.PYNATIVE_MODE, 1.0, "native"), (ms.GRAPH_MODE, 1.0, "native"), (ms.GRAPH_MODE, 1024.0, "native"),
    pytest.param(ms.GRAPH_MODE, 1.0, "custom", marks=needs_library),
    pytest.param(ms.GRAPH_MODE, 1024.0, "custom", marks=needs_library)])
def test_in_place_decay_equals_nn_momentum(mode, loss_scale, impl):
    try:
        ours = _train(functools.partial(Momentum, impl=impl), mode, loss_scale)
        reference = _train(nn.Momentum, mode, loss_scale)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert ours.keys() == reference.keys() and any(k.startswith("moments.") for k in ours)
    for name, value in reference.items():
        # the same update up to float rounding: m * (a + wd / m * w) is not bit-equal to m * a + wd * w
        np.testing.assert_allclose(ours[name], value, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(value).max()),
                                   err_msg=name)
    start = FCN("fcn8s", num_classes=3, width=0.0625)
    assert not np.allclose(start.conv1[0].weight.asnumpy(), ours["conv1.0.weight"])  # it did train


@needs_library
@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_the_librarys_update_is_momentum_with_decay_in_place_and_leaves_batchnorm_undecayed(mode):
    rng = np.random.default_rng(0)
    start = {"conv.weight": rng.standard_normal(40000).astype(np.float32),   # over one chunk: split over threads
             "bn.gamma": rng.standard_normal(7).astype(np.float32)}
    params = [ms.Parameter(ms.Tensor(value), name=name) for name, value in start.items()]
    grads = [[rng.standard_normal(value.shape).astype(np.float32) for value in start.values()] for _ in range(2)]
    lr, momentum, decay = 0.1, 0.9, 0.01
    try:
        ms.set_context(mode=mode)
        optimizer = Momentum(params, learning_rate=lr, momentum=momentum, weight_decay=decay, impl="custom")
        for step in grads:
            optimizer(tuple(ms.Tensor(g) for g in step))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for i, (name, weight) in enumerate(start.items()):
        weight, moment = weight.astype(np.float64), np.zeros(weight.shape)
        for step in grads:
            moment = momentum * moment + step[i] + (decay * weight if name == "conv.weight" else 0.0)
            weight = weight - lr * moment
        np.testing.assert_allclose(params[i].asnumpy(), weight, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(optimizer.moments[i].asnumpy(), moment, rtol=1e-5, atol=1e-6, err_msg=name)
