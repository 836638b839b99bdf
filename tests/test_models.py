import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from fcn8s.architecture import BACKBONE_LAYERS
from fcn8s.checkpoint import load_weights, save_checkpoint
from fcn8s.kernels import LIBRARY_PLAN, plan as kernels_plan
from fcn8s.models import FCN, bilinear_kernel
from fcn8s.models.layers import FastGradConv2d, MaxPool, TransposedConv
from fcn8s.models.vgg import conv_bn_relu_block
from fcn8s.models.tutorial import TutorialFCN8s


def _input(rng, *shape):
    return ms.Tensor(rng.standard_normal(shape).astype(np.float32))


def test_full_size_fcn8s_has_the_tutorial_names_shapes_and_counts():
    net = FCN("fcn8s", 21)
    shapes = {p.name: tuple(p.shape) for p in net.get_parameters()}
    assert len(shapes) == 81
    assert sum(int(np.prod(s)) for s in shapes.values()) == 134_526_944
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == 134_502_112
    assert shapes["conv1.0.weight"] == (64, 3, 3, 3)
    assert shapes["conv3.6.weight"] == (256, 256, 3, 3)
    assert shapes["conv6.0.weight"] == (4096, 512, 7, 7)
    assert shapes["conv7.0.weight"] == (4096, 4096, 1, 1)
    assert shapes["score_fr.weight"] == (21, 4096, 1, 1)
    assert shapes["upscore2.weight"] == (21, 21, 4, 4)
    assert shapes["upscore_pool4.weight"] == (21, 21, 4, 4)
    assert shapes["upscore8.weight"] == (21, 21, 16, 16)
    assert shapes["score_pool4.weight"] == (21, 512, 1, 1)
    assert shapes["score_pool3.weight"] == (21, 256, 1, 1)
    assert {"conv1.1.gamma", "conv1.1.beta", "conv1.1.moving_mean", "conv1.1.moving_variance"} <= set(shapes)
    assert not any(name.endswith("bias") for name in shapes)


def test_tutorial_checkpoint_loads_with_same_logits(tmp_path, rng, randomise_bn_statistics):
    tutorial = TutorialFCN8s(21)
    randomise_bn_statistics(tutorial)
    path = tmp_path / "tutorial.ckpt"
    save_checkpoint(tutorial.get_parameters(), path)
    ours = FCN("fcn8s", 21)
    report = load_weights(ours, path)
    assert len(report.loaded) == 81 and not report.skipped and not report.reinitialised
    tutorial.set_train(False)
    ours.set_train(False)
    x = _input(rng, 1, 3, 64, 96)
    expected, got = tutorial(x).asnumpy(), ours(x).asnumpy()
    assert got.shape == (1, 21, 64, 96)
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("arch", ["fcn8s", "fcn16s", "fcn32s"])
@pytest.mark.parametrize("size", [(64, 96), (75, 101)])
def test_logits_have_the_input_size(arch, size, rng):
    net = FCN(arch, num_classes=5, width=0.125)
    net.set_train(False)
    out = net(_input(rng, 2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_padding_does_not_change_the_valid_region_of_fcn32s_input(rng):
    """An odd-sized input gives the same logits as the same input zero-padded by hand."""
    net = FCN("fcn8s", num_classes=3, width=0.125)
    net.set_train(False)
    x = rng.standard_normal((1, 3, 75, 101)).astype(np.float32)
    padded = np.zeros((1, 3, 96, 128), np.float32)
    padded[:, :, :75, :101] = x
    np.testing.assert_allclose(net(ms.Tensor(x)).asnumpy(), net(ms.Tensor(padded)).asnumpy()[:, :, :75, :101],
                               atol=1e-5)


def test_bilinear_kernel_upsamples_bilinearly():
    k = bilinear_kernel(2, 2, 4)
    np.testing.assert_allclose(k[0, 0][1], [0.1875, 0.5625, 0.5625, 0.1875])
    assert np.all(k[0, 1] == 0) and np.all(k[1, 0] == 0)
    # a constant map stays constant in the interior after x2 upsampling
    up = nn.Conv2dTranspose(2, 2, 4, stride=2, weight_init=ms.Tensor(k))
    out = up(ms.Tensor(np.ones((1, 2, 6, 6), np.float32))).asnumpy()
    assert out.shape == (1, 2, 12, 12)
    np.testing.assert_allclose(out[:, :, 2:-2, 2:-2], 1.0, atol=1e-6)


def test_xavier_deconv_init_option():
    bil = FCN("fcn32s", num_classes=3, width=0.125, deconv_init="bilinear")
    xav = FCN("fcn32s", num_classes=3, width=0.125, deconv_init="xavier")
    np.testing.assert_array_equal(bil.upscore32.weight.asnumpy(), bilinear_kernel(3, 3, 64))
    assert np.abs(xav.upscore32.weight.asnumpy()[0, 1]).sum() > 0


def _weighted_sum(net, weights):
    def loss(x):
        return (net(x) * weights).sum()
    return loss


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("channels, kernel, grads", [
    ((24, 40), 7, {"weight_grad": "matmul"}),                          # conv6's fast path
    ((12, 20), 3, {"input_grad": "flipped"}),                          # conv1-conv3's
    ((20, 12), 3, {"input_grad": "flipped", "weight_grad": "matmul"}),
    ((12, 20), 3, {"kernels": "onednn"}),                              # model.kernels onednn
    ((20, 12), 3, {"kernels": "onednn"}),
    ((8, 16), 7, {"kernels": "onednn"}),
    ((16, 8), 1, {"kernels": "onednn"}),
    ((12, 20), 3, {"kernels": "onednn-any"}),                          # in the layout oneDNN prefers
    ((20, 12), 3, {"kernels": "onednn-any"}),
    ((8, 16), 7, {"kernels": "onednn-any"}),
    ((8, 16), 7, {"kernels": "gemm"}),                                 # conv6 and conv7 on the library's sgemm
    ((16, 8), 1, {"kernels": "gemm"}),
    ((12, 20), 3, {"kernels": "gemm"}),
])
def test_fast_gradient_convolutions_match_native_conv(mode, channels, kernel, grads, rng, request):
    if grads.get("kernels") in ("onednn", "onednn-any", "gemm"):
        request.getfixturevalue("onednn_kernels")
    ms.set_context(mode=mode)
    try:
        fast = FastGradConv2d(*channels, kernel, **grads)
        native = nn.Conv2d(*channels, kernel, pad_mode="same", weight_init=ms.Tensor(fast.weight.asnumpy()))
        x = _input(rng, 2, channels[0], 9, 11)
        dout = _input(rng, 2, channels[1], 9, 11)
        results = []
        for net in (fast, native):
            grad = ms.value_and_grad(_weighted_sum(net, dout), grad_position=0, weights=net.trainable_params())
            value, (dx, (dw,)) = grad(x)
            results.append((net(x).asnumpy(), value.asnumpy(), dx.asnumpy(), dw.asnumpy()))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("impl", ["onednn", "onednn-any"])
def test_inference_folds_batchnorm_and_relu_into_the_library_convolutions(mode, impl, rng, randomise_bn_statistics,
                                                                           onednn_kernels):
    block = conv_bn_relu_block(6, 10, num_convs=2, impl=impl)
    randomise_bn_statistics(block)
    for p in block.get_parameters():   # and a scale and shift, which fresh BatchNorms leave at 1 and 0
        if p.name.endswith(("gamma", "beta")):
            p.set_data(ms.Tensor(rng.uniform(-1.5, 1.5, p.shape).astype(np.float32)))
    block.set_train(False)
    x = _input(rng, 2, 6, 9, 11)
    unfolded = x
    for cell in block.cell_list:   # conv, BN (moving statistics), ReLU as separate ops
        unfolded = cell(unfolded)
    ms.set_context(mode=mode)
    try:
        assert block.folded
        folded = block(x).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    want = unfolded.asnumpy()
    assert 0.1 < np.mean(want == 0) < 0.9   # the ReLU clips some, and the BN's shift and scale matter
    np.testing.assert_allclose(folded, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert not conv_bn_relu_block(6, 10, impl="flipped").folded   # MindSpore's convolutions keep the three ops


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("shape", [(2, 3, 8, 12), (1, 5, 9, 11)])   # odd: the last row and column are dropped
def test_custom_max_pooling_matches_nn_maxpool2d(mode, shape, rng, onednn_kernels):
    x = _input(rng, *shape)
    dout = _input(rng, shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    ms.set_context(mode=mode)
    try:
        results = []
        for net in (MaxPool("custom"), nn.MaxPool2d(kernel_size=2, stride=2)):
            value, dx = ms.value_and_grad(_weighted_sum(net, dout))(x)
            results.append((net(x).asnumpy(), value.asnumpy(), dx.asnumpy()))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(results[0][2]) == dout.size   # one winner per window, none in a dropped row/column


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
@pytest.mark.parametrize("channels, factor, size", [
    ((21, 21), 8, (3, 5)),    # FCN-8s's upscore8; 21 channels fill no register block (4 x 3) exactly
    ((3, 7), 16, (2, 1)),     # FCN-16s's factor, more out channels than in, one input column
    ((6, 2), 8, (1, 4)),      # one input row
])
def test_library_upsampling_matches_nn_conv2d_transpose(mode, channels, factor, size, rng, onednn_kernels):
    up = TransposedConv(*channels, factor)
    up.weight.set_data(_input(rng, channels[0], channels[1], 2 * factor, 2 * factor))
    native = nn.Conv2dTranspose(*channels, 2 * factor, stride=factor, weight_init=ms.Tensor(up.weight.asnumpy()))
    x = _input(rng, 2, channels[0], *size)
    dout = _input(rng, 2, channels[1], size[0] * factor, size[1] * factor)
    ms.set_context(mode=mode)
    try:
        results = []
        for net in (up, native):
            grad = ms.value_and_grad(_weighted_sum(net, dout), grad_position=0, weights=net.trainable_params())
            value, (dx, (dw,)) = grad(x)
            results.append((net(x).asnumpy(), value.asnumpy(), dx.asnumpy(), dw.asnumpy()))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert results[0][0].shape == (2, channels[1], size[0] * factor, size[1] * factor)
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_fused_training_batchnorm_relu_matches_nn_batchnorm2d_and_relu(mode, rng, library_build):
    """Outputs, gradients and the moving statistics after a step, with channel means far from zero against their
    spread (the input offset by 50) and gamma and beta away from 1 and 0."""
    blocks = [conv_bn_relu_block(6, 10, num_convs=2, batchnorm=way) for way in ("custom", "native")]
    for p in blocks[0].get_parameters():
        value = (rng.uniform(-1.5, 1.5, p.shape) if p.name.endswith(("gamma", "beta")) else p.asnumpy())
        p.set_data(ms.Tensor(np.asarray(value, np.float32)))
    for fused, native in zip(blocks[0].get_parameters(), blocks[1].get_parameters()):
        native.set_data(fused.data.copy())
    x = ms.Tensor(rng.standard_normal((2, 6, 9, 11)).astype(np.float32) + 50)
    dout = _input(rng, 2, 10, 9, 11)
    ms.set_context(mode=mode)
    try:
        results = []
        for block in blocks:
            block.set_train(True)
            grad = ms.value_and_grad(_weighted_sum(block, dout), grad_position=0, weights=block.trainable_params())
            value, (dx, dparams) = grad(x)
            moving = [p.asnumpy() for p in block.get_parameters() if p.name.endswith(("moving_mean", "variance"))]
            results.append((value.asnumpy(), dx.asnumpy(), *(g.asnumpy() for g in dparams), *moving))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert blocks[0].fused_training and not blocks[1].fused_training
    assert len(results[0]) == 1 + 1 + 6 + 4   # value, dx, two convs' weights and BN gammas and betas, 2 x 2 moving
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert np.abs(results[0][-4] - 0).max() > 0.1   # the moving means moved (from 0)


@pytest.mark.parametrize("kernels, conv_types", [
    ("mindspore", ["FastGradConv2d", "FastGradConv2d", "Conv2d", "FastGradConv2d", "Conv2d"]),
    ("onednn", ["FastGradConv2d"] * 5),
    ("onednn-any", ["FastGradConv2d"] * 5),   # the blocks in the layout oneDNN prefers
])
def test_fast_and_native_models_have_the_same_loss_and_gradients(kernels, conv_types, rng, request):
    """The whole network: fast conv6 and backbone gradients against nn.Conv2d everywhere, one checkpoint."""
    library = kernels.startswith("onednn")
    if library:
        request.getfixturevalue("onednn_kernels")
    if kernels == "onednn-any":
        kernels = kernels_plan("onednn", {**LIBRARY_PLAN, **dict.fromkeys(BACKBONE_LAYERS, "onednn-any")})
    fast = FCN("fcn8s", num_classes=4, width=0.125, kernels=kernels)
    native = FCN("fcn8s", num_classes=4, width=0.125, kernels="native")
    convs = (fast.conv1[0], fast.conv3[0], fast.conv4[0], fast.conv6[0], fast.conv7[0])
    assert [type(c).__name__ for c in convs] == conv_types
    if library:
        assert [type(c.op).__name__ for c in convs] == ["OneDNNConv"] * 3 + ["GemmConv"] * 2
    assert type(fast.pool.pool).__name__ == ("MaxPool2x2" if library else "MaxPool2d")
    assert fast.conv1.fused_training == fast.conv7.fused_training == library
    assert [type(fast.upscore2).__name__, type(fast.upscore8).__name__] == (
        ["Conv2dTranspose", "TransposedConv"] if library else ["Conv2dTranspose"] * 2)
    assert "FastGradConv2d" not in {type(cell).__name__ for _, cell in native.cells_and_names()}
    native_params = {p.name: p for p in native.get_parameters()}
    for p in fast.get_parameters():
        native_params[p.name].set_data(p.data.copy())
    x = _input(rng, 2, 3, 64, 64)
    labels = ms.Tensor(rng.integers(0, 4, (2, 64, 64)).astype(np.int32))
    loss_fn = nn.CrossEntropyLoss()
    results = []
    for net in (fast, native):
        net.set_train(True)
        grad = ms.value_and_grad(lambda images: loss_fn(net(images), labels), None, net.trainable_params())
        loss, grads = grad(x)
        results.append((float(loss.asnumpy()), {p.name: g.asnumpy() for p, g in zip(net.trainable_params(), grads)}))
    assert abs(results[0][0] - results[1][0]) < 1e-5
    assert results[0][1].keys() == results[1][1].keys()
    for name, want in results[1][1].items():
        np.testing.assert_allclose(results[0][1][name], want, rtol=1e-3, atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_fast_and_native_conv6_models_share_checkpoints(tmp_path, rng):
    fast = FCN("fcn8s", num_classes=4, width=0.125, kernels="mindspore")
    native = FCN("fcn8s", num_classes=4, width=0.125, kernels="native")
    save_checkpoint(fast.get_parameters(), tmp_path / "w.ckpt")
    load_weights(native, tmp_path / "w.ckpt")
    fast.set_train(False)
    native.set_train(False)
    x = _input(rng, 1, 3, 64, 64)
    np.testing.assert_allclose(fast(x).asnumpy(), native(x).asnumpy(), rtol=1e-4, atol=1e-5)
