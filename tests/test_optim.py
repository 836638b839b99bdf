import mindspore as ms
import numpy as np
import pytest
from mindspore import amp, nn

from fcn8s.models import FCN
from fcn8s.optim import Momentum


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


@pytest.mark.parametrize("mode, loss_scale", [(ms.PYNATIVE_MODE, 1.0), (ms.GRAPH_MODE, 1.0),
                                              (ms.GRAPH_MODE, 1024.0)])
def test_in_place_decay_equals_nn_momentum(mode, loss_scale):
    try:
        ours = _train(Momentum, mode, loss_scale)
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
