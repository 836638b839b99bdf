"""The VGG-16-BN body as the MindSpore tutorial names it: blocks conv1..conv5 of Conv-BN-ReLU."""
from mindspore import nn

from ..architecture import VGG16_BLOCKS, scaled
from ..kernels import BACKBONE
from .layers import make_conv


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3, impl="native"):
    """SequentialCell [Conv, BN, ReLU] * num_convs, so parameters are named ``<block>.0.weight``, ``<block>.1.gamma``...

    The convolutions are made by make_conv with ``impl``.
    """
    layers = []
    for i in range(num_convs):
        conv = make_conv(in_channels if i == 0 else out_channels, out_channels, kernel_size, impl)
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.SequentialCell(layers)


def vgg16_bn_blocks(layer_plan, width=1.0, in_channels=3):
    """The five blocks conv1..conv5 (pooling is separate), each made as ``layer_plan`` (fcn8s.kernels) says,
    and the channel count of each."""
    blocks, channels = [], []
    for (out_channels, num_convs), block in zip(VGG16_BLOCKS, BACKBONE):
        out_channels = scaled(out_channels, width)
        blocks.append(conv_bn_relu_block(in_channels, out_channels, num_convs, impl=layer_plan[block]))
        channels.append(out_channels)
        in_channels = out_channels
    return blocks, channels
