"""fcn8s import-weights: an ImageNet vgg16_bn of torchvision or timm becomes our conv1..conv7, exactly.

Our pool3, pool4 and conv7 activations after the import are compared with the source network's
own (eval mode; conv biases and BatchNorm parameters and statistics random, so the folding
matters) on one 224x224 image: the size at which pool5 is 7x7, so that fc6 sees exactly the
window our 7x7 'same' conv6 sees at the centre pixel.
"""
import logging
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import ops

from fcn8s.checkpoint import load_weights, save_checkpoint
from fcn8s.cli import main
from fcn8s.models import FCN
from fcn8s.weights_import import read_pretrained

# torchvision's cfgs["D"] and timm's cfgs["vgg16"]: output channels, "M" = 2x2 max pooling
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
POOL3, POOL4 = 23, 33    # features.N of the pooling after conv3_3 and after conv4_3
TOLERANCE = 1e-4         # of the activations' scale


def _features_layout():
    """(features index, out channels, in channels) of each 3x3 convolution; its BatchNorm is at index + 1."""
    layout, index, in_channels = [], 0, 3
    for v in VGG16_CFG:
        if v == "M":
            index += 1
        else:
            layout.append((index, v, in_channels))
            index, in_channels = index + 3, v
    return layout


def _fresh_model():
    return FCN("fcn8s", num_classes=21, width=1.0, kernels="native")


def _our_activations(net, image):
    net.set_train(False)
    pool3 = net.pool(net.conv3(net.pool(net.conv2(net.pool(net.conv1(ms.Tensor(image)))))))
    pool4 = net.pool(net.conv4(pool3))
    conv7 = net.conv7(net.conv6(net.pool(net.conv5(pool4))))
    return pool3.asnumpy(), pool4.asnumpy(), conv7.asnumpy()[:, :, 3, 3]   # the centre: fc7 of the whole pool5


def _assert_close(ours, reference):
    for name, a, b in zip(("pool3", "pool4", "conv7"), ours, reference):
        assert a.shape == b.shape, name
        scale = np.abs(b).max()
        assert scale > 0, name
        assert np.abs(a - b).max() <= TOLERANCE * scale, f"{name}: max diff {np.abs(a - b).max()}, scale {scale}"


def _image(rng):
    return rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32)


def _torchvision_vgg16_bn():
    """torchvision's vgg16_bn(weights=None): ``make_layers(cfgs["D"], batch_norm=True)`` + its classifier.

    Built from torch.nn as torchvision/models/vgg.py builds it (same module tree, same state dict)
    because a torchvision wheel only imports with the torch build it was made for;
    test_layout_is_torchvisions compares the two where torchvision imports.
    """
    from torch import nn
    layers, in_channels = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_channels = v
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000))
    return model


def _randomised(model):
    """Random conv biases and BatchNorm parameters and statistics (torchvision's init makes them 0 and 1)."""
    import torch
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.features:
            if isinstance(module, torch.nn.Conv2d):
                module.bias.normal_(0, 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _torchvision_activations(model, image):
    import torch
    with torch.no_grad():
        pool3 = model.features[:POOL3 + 1](torch.from_numpy(image))
        pool4 = model.features[POOL3 + 1:POOL4 + 1](pool3)
        pool5 = model.features[POOL4 + 1:](pool4)
        fc7 = model.classifier[:5](torch.flatten(model.avgpool(pool5), 1))   # fc6, ReLU, dropout, fc7, ReLU
    return pool3.numpy(), pool4.numpy(), fc7.numpy()


def test_torchvision_vgg16_bn_imports_exactly(tmp_path, rng, capsys):
    torch = pytest.importorskip("torch")
    source = _randomised(_torchvision_vgg16_bn())
    src, out = tmp_path / "vgg16_bn-random.pth", tmp_path / "vgg16_bn_imagenet.ckpt"
    torch.save(source.state_dict(), src)
    assert main(["import-weights", str(src), "-o", str(out)]) == 0
    log = capsys.readouterr().out
    assert "torchvision vgg16_bn state dict (.pth), sha256 " in log
    assert "mapped 82 tensors" in log   # 13 x (conv weight, bias, 4 BatchNorm) + 2 x (fc weight, bias)
    assert "dropped 15: classifier.6.weight, classifier.6.bias, 13 BatchNorm num_batches_tracked counters\n" in log

    net = _fresh_model()
    head_before = net.score_fr.weight.asnumpy().copy()
    report = load_weights(net, out, backbone_only=True)
    assert len(report.loaded) == 15 * 5 and not report.skipped
    np.testing.assert_array_equal(net.score_fr.weight.asnumpy(), head_before)   # the head keeps its own init
    image = _image(rng)
    _assert_close(_our_activations(net, image), _torchvision_activations(source, image))


def test_layout_is_torchvisions():
    pytest.importorskip("torch")
    try:
        from torchvision.models import vgg16_bn
    except (ImportError, RuntimeError) as exc:   # RuntimeError: a wheel built for another torch
        pytest.skip(f"torchvision does not import: {str(exc).splitlines()[0]}")
    ours = {k: tuple(v.shape) for k, v in _torchvision_vgg16_bn().state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in vgg16_bn(weights=None).state_dict().items()}


def _timm_state(rng):
    """Random weights under timm's vgg16_bn names and shapes (timm/models/vgg.py: ``features.N`` as in
    torchvision, then ConvMlp ``pre_logits.fc1`` 7x7 and ``pre_logits.fc2`` 1x1, ClassifierHead ``head.fc``)."""
    def he(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / np.prod(shape[1:])))

    def small(n, offset=0.0):
        return rng.normal(offset, 0.1, n).astype(np.float32)

    state = {}
    for index, out_channels, in_channels in _features_layout():
        bn = f"features.{index + 1}"
        state.update({f"features.{index}.weight": he(out_channels, in_channels, 3, 3),
                      f"features.{index}.bias": small(out_channels),
                      f"{bn}.weight": small(out_channels, 1.0), f"{bn}.bias": small(out_channels),
                      f"{bn}.running_mean": small(out_channels),
                      f"{bn}.running_var": rng.uniform(0.5, 2.0, out_channels).astype(np.float32),
                      f"{bn}.num_batches_tracked": np.array(7, dtype=np.int64)})
    state.update({"pre_logits.fc1.weight": he(4096, 512, 7, 7), "pre_logits.fc1.bias": small(4096),
                  "pre_logits.fc2.weight": he(4096, 4096, 1, 1), "pre_logits.fc2.bias": small(4096),
                  "head.fc.weight": he(1000, 4096), "head.fc.bias": small(1000)})
    return state


def _timm_activations(state, image):
    """The timm network's function from its own tensors: conv + bias, BatchNorm (eps 1e-5), ReLU, pooling."""
    def channels(name):
        return ms.Tensor(state[name].reshape(1, -1, 1, 1))

    def conv_relu(x, layer, padding, bn=None):
        y = ops.conv2d(x, ms.Tensor(state[f"{layer}.weight"]), pad_mode="pad", padding=padding)
        y = y + channels(f"{layer}.bias")
        if bn:
            y = (channels(f"{bn}.weight") * (y - channels(f"{bn}.running_mean"))
                 / ops.sqrt(channels(f"{bn}.running_var") + 1e-5) + channels(f"{bn}.bias"))
        return ops.relu(y)

    x, pools, index = ms.Tensor(image), [], 0
    for v in VGG16_CFG:
        if v == "M":
            x = ops.max_pool2d(x, 2, 2)
            pools.append(x)
            index += 1
        else:
            x = conv_relu(x, f"features.{index}", 1, f"features.{index + 1}")
            index += 3
    fc7 = conv_relu(conv_relu(x, "pre_logits.fc1", 0), "pre_logits.fc2", 0)
    return pools[2].asnumpy(), pools[3].asnumpy(), fc7.asnumpy()[:, :, 0, 0]


@pytest.fixture
def log_lines():
    """The package's log lines (its logger does not propagate, so caplog cannot see them)."""
    from fcn8s.log import get_logger
    lines, handler = [], logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    get_logger().addHandler(handler)
    yield lines
    get_logger().removeHandler(handler)


def test_timm_safetensors_as_pretrained_imports_exactly(tmp_path, rng, log_lines):
    """The train.pretrained path: a timm model.safetensors read with numpy only (no torch), converted in memory."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="pip install safetensors (the test extra)")
    state = _timm_state(rng)
    src = tmp_path / "model.safetensors"
    safetensors_numpy.save_file(state, str(src))
    net = _fresh_model()
    from fcn8s.log import get_logger
    report = load_weights(net, src, backbone_only=True, ckpt=read_pretrained(src, get_logger()))
    assert len(report.loaded) == 15 * 5
    assert log_lines[0].startswith(f"imported {src}: timm vgg16_bn safetensors, sha256 ")
    assert log_lines[1].startswith("mapped 82 tensors")
    assert log_lines[2] == "dropped 15: head.fc.bias, head.fc.weight, 13 BatchNorm num_batches_tracked counters"
    image = _image(rng)
    _assert_close(_our_activations(net, image), _timm_activations(state, image))


def _tiny_vgg(convs, batch_norm, fc6="classifier.0"):
    """A small state dict with VGG's key layout: ``convs`` 3x3 convolutions, with or without BatchNorm."""
    state, index = {}, 0
    for _ in range(convs):
        state[f"features.{index}.weight"] = np.ones((2, 2, 3, 3), np.float32)
        state[f"features.{index}.bias"] = np.zeros(2, np.float32)
        if batch_norm:
            for stat in ("weight", "bias", "running_mean", "running_var"):
                state[f"features.{index + 1}.{stat}"] = np.ones(2, np.float32)
        index += 3 if batch_norm else 2
    state[f"{fc6}.weight"] = np.ones((4, 8), np.float32)
    return state


WRONG_NETWORKS = {
    "resnet": ({"conv1.weight": np.ones((4, 3, 7, 7), np.float32), "bn1.running_mean": np.ones(4, np.float32),
                "layer1.0.conv1.weight": np.ones((4, 4, 3, 3), np.float32)},
               "found 3 tensors but no VGG features.N convolutions (e.g. bn1.running_mean"),
    "vgg16": (_tiny_vgg(13, False), "found a VGG with 13 convolutions without BatchNorm (vgg16)"),
    "vgg19_bn": (_tiny_vgg(16, True), "found a VGG with 16 convolutions and BatchNorm (vgg19_bn)"),
    "no_fc6": (_tiny_vgg(13, True, fc6="fc"), "found vgg16_bn convolutions but no fc6"),
    "narrow": (_tiny_vgg(13, True), "features.0: (2, 2, 3, 3) + bias (2,), vgg16_bn has (64, 3, 3, 3)"),
}


def _refused(capsys, tmp_path, src, expected):
    out = tmp_path / "out.ckpt"
    assert main(["import-weights", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fcn8s: error: {src}: ") and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]   # nothing written, no temporary file


@pytest.mark.parametrize("network", sorted(WRONG_NETWORKS))
def test_another_network_is_refused_in_one_line(network, tmp_path, capsys):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="pip install safetensors (the test extra)")
    state, expected = WRONG_NETWORKS[network]
    src = tmp_path / f"{network}.safetensors"
    safetensors_numpy.save_file(state, str(src))
    _refused(capsys, tmp_path, src, expected)


def test_another_network_in_a_pth_is_refused(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    src = tmp_path / "vgg16.pth"
    torch.save({k: torch.from_numpy(v) for k, v in _tiny_vgg(13, False).items()}, src)
    _refused(capsys, tmp_path, src, "found a VGG with 13 convolutions without BatchNorm (vgg16)")


def test_truncated_files_are_refused(tmp_path, capsys):
    safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="pip install safetensors (the test extra)")
    src = tmp_path / "model.safetensors"
    safetensors_numpy.save_file(_tiny_vgg(13, True), str(src))
    src.write_bytes(src.read_bytes()[:-100])
    _refused(capsys, tmp_path, src, "not a readable safetensors file")
    torch = pytest.importorskip("torch")
    src.unlink()
    src = tmp_path / "vgg16_bn.pth"
    torch.save({k: torch.from_numpy(v) for k, v in _tiny_vgg(13, True).items()}, src)
    src.write_bytes(src.read_bytes()[:-100])
    _refused(capsys, tmp_path, src, "not a readable PyTorch file")


def test_mindspore_checkpoint_needs_no_import(tmp_path, capsys):
    src = tmp_path / "fcn8s_vgg16_pretrain.ckpt"
    save_checkpoint([ms.Parameter(ms.Tensor(np.ones(2, np.float32)), name="conv1.1.gamma")], src)
    _refused(capsys, tmp_path, src, "a MindSpore checkpoint is used directly by --pretrained")


def test_missing_reader_is_one_line_naming_the_package(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.pth").write_bytes(b"PK\x03\x04 rest of a zip")
    (tmp_path / "b.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors", None)
    for name, package in (("a.pth", "pip install torch"), ("b.safetensors", "pip install safetensors")):
        assert main(["import-weights", str(tmp_path / name), "-o", str(tmp_path / "out.ckpt")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and package in err, err
    assert not (tmp_path / "out.ckpt").exists()


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "out.ckpt"
    out.write_bytes(b"keep")
    assert main(["import-weights", str(tmp_path / "missing.pth"), "-o", str(out)]) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep"
