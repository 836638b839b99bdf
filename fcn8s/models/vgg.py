"""The VGG-16-BN body as the MindSpore tutorial names it: blocks conv1..conv5 of Conv-BN-ReLU."""
from mindspore import nn

from ..architecture import VGG16_BLOCKS, scaled
from .layers import FastGradConv2d

FLIPPED_INPUT_GRAD_BLOCKS = 3   # conv1-conv3: see layers.py for why not conv4 and conv5


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3, impl="native"):
    """SequentialCell [Conv, BN, ReLU] * num_convs, so parameters are named ``<block>.0.weight``, ``<block>.1.gamma``...

    The convolutions are nn.Conv2d for ``impl`` "native", and FastGradConv2d (same parameters and
    outputs) for "flipped" (input gradient as a flipped-kernel convolution) and "onednn" (oneDNN
    kernels for the forward and both gradients).
    """
    layers = []
    for i in range(num_convs):
        cin = in_channels if i == 0 else out_channels
        if impl == "onednn":
            conv = FastGradConv2d(cin, out_channels, kernel_size, kernels="onednn")
        elif impl == "flipped":
            conv = FastGradConv2d(cin, out_channels, kernel_size, input_grad="flipped")
        else:
            conv = nn.Conv2d(cin, out_channels, kernel_size, weight_init="xavier_uniform")
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.SequentialCell(layers)


def vgg16_bn_blocks(width=1.0, in_channels=3, impl="fast"):
    """The five blocks conv1..conv5 (pooling is separate), and the channel count of each.

    ``impl`` "onednn" runs every convolution in oneDNN's channels-last kernels (CPU); "fast"
    computes the input gradients of conv1-conv3 with flipped-kernel convolutions; "native" uses
    nn.Conv2d throughout.
    """
    blocks, channels = [], []
    for level, (out_channels, num_convs) in enumerate(VGG16_BLOCKS):
        out_channels = scaled(out_channels, width)
        block_impl = impl if impl != "fast" else "flipped" if level < FLIPPED_INPUT_GRAD_BLOCKS else "native"
        blocks.append(conv_bn_relu_block(in_channels, out_channels, num_convs, impl=block_impl))
        channels.append(out_channels)
        in_channels = out_channels
    return blocks, channels
