"""The FCN family's shape, framework-free: VGG-16 block layout, width scaling, head layers, FLOPs.

The one description of the layers and their names: the MindSpore network (models/), the ONNX graph
(onnx_graph.py), the PyTorch twin and checkpoint loading (which names are backbone, which head) all
build or read it from here.

Shared by the MindSpore network (models/), the PyTorch twin (torch_twin.py) and the benchmark's
GFLOP/s figures. Importing it loads neither MindSpore nor PyTorch.
"""
from typing import NamedTuple

STRIDE = 32          # total downsampling: inputs are padded to a multiple of this
ARCHS = ("fcn8s", "fcn16s", "fcn32s")
# (output channels, 3x3 convolutions) of VGG-16's five blocks conv1..conv5, each followed by a 2x2 pool
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
BACKBONE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("conv6", "conv7")   # the paper's fc6 (7x7) and fc7 (1x1) as convolutions
FC_CHANNELS = 4096


class HeadLayer(NamedTuple):
    """A layer of the head after score_fr, applied in order to the running class score: an upsampler
    (a transposed convolution by ``factor``), or a 1x1 score of pooling stage ``pool`` (3: pool3)
    added to it."""
    name: str
    factor: int = None
    pool: int = None


def scaled(channels, width):
    """Channel count under the width multiplier (1.0 = the paper's network)."""
    return max(1, int(round(channels * width)))


def head_layers(arch):
    """The HeadLayers of ``arch`` after score_fr, in order."""
    if arch == "fcn32s":
        return (HeadLayer("upscore32", factor=32),)
    if arch == "fcn16s":
        return HeadLayer("upscore2", factor=2), HeadLayer("score_pool4", pool=4), HeadLayer("upscore16", factor=16)
    return (HeadLayer("upscore2", factor=2), HeadLayer("score_pool4", pool=4), HeadLayer("upscore_pool4", factor=2),
            HeadLayer("score_pool3", pool=3), HeadLayer("upscore8", factor=8))


# every layer whose shape depends on the class count: what a new class count re-initialises
HEAD_LAYER_NAMES = ("score_fr",) + tuple(sorted({layer.name for arch in ARCHS for layer in head_layers(arch)}))


def pool_channels(pool, width):
    """Channels of pooling stage ``pool`` (1..5) under the width multiplier."""
    return scaled(VGG16_BLOCKS[pool - 1][0], width)


def fcn_forward_gflop(arch, num_classes, width, batch, height, width_px):
    """GFLOP (2 x multiply-adds, 1e9) of the convolutions and transposed convolutions of one forward.

    Counts the network as it runs: on the input padded up to a multiple of 32, with 'same'
    padding zeros included. A convolution costs out_channels x out_pixels x in_channels x k^2
    MACs; a transposed one in_pixels x in_channels x out_channels x k^2 (every input pixel
    scatters a full kernel). BatchNorm, ReLU, pooling, the skip additions and the loss are not
    counted (< 1% of the total). A train step is taken as 3 x this (forward, and the input and
    weight gradients, each the size of the forward).
    """
    h, w = -(-height // STRIDE) * STRIDE, -(-width_px // STRIDE) * STRIDE
    macs, in_channels = 0, 3
    for level, (out_channels, num_convs) in enumerate(VGG16_BLOCKS):
        out_channels = scaled(out_channels, width)
        pixels = (h >> level) * (w >> level)
        macs += pixels * 9 * out_channels * (in_channels + (num_convs - 1) * out_channels)
        in_channels = out_channels
    fc = scaled(FC_CHANNELS, width)
    pixels5 = (h // STRIDE) * (w // STRIDE)
    macs += pixels5 * (in_channels * fc * 49 + fc * fc + fc * num_classes)
    stride = STRIDE    # of the score map that enters the next head layer
    for layer in head_layers(arch):
        pixels = (h // stride) * (w // stride)
        if layer.factor:
            macs += pixels * num_classes * num_classes * (2 * layer.factor) ** 2
            stride //= layer.factor
        else:
            macs += pixels * pool_channels(layer.pool, width) * num_classes
    return 2 * batch * macs / 1e9
