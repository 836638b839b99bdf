"""The VGG-16-BN body as the MindSpore tutorial names it: blocks conv1..conv5 of Conv-BN-ReLU."""
from mindspore import nn

from ..architecture import VGG16_BLOCKS, scaled
from .layers import FastGradConv2d

FLIPPED_INPUT_GRAD_BLOCKS = 3   # conv1-conv3: see layers.py for why not conv4 and conv5


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3, flipped_input_grad=False):
    """SequentialCell [Conv, BN, ReLU] * num_convs, so parameters are named ``<block>.0.weight``, ``<block>.1.gamma``...

    With ``flipped_input_grad`` the convolutions are FastGradConv2d (same parameters and outputs,
    input gradient as a flipped-kernel convolution); otherwise nn.Conv2d.
    """
    layers = []
    for i in range(num_convs):
        cin = in_channels if i == 0 else out_channels
        conv = (FastGradConv2d(cin, out_channels, kernel_size, input_grad="flipped") if flipped_input_grad
                else nn.Conv2d(cin, out_channels, kernel_size, weight_init="xavier_uniform"))
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.SequentialCell(layers)


def vgg16_bn_blocks(width=1.0, in_channels=3, impl="fast"):
    """The five blocks conv1..conv5 (pooling is separate), and the channel count of each.

    ``impl`` "fast" computes the input gradients of conv1-conv3 with flipped-kernel convolutions;
    "native" uses nn.Conv2d throughout.
    """
    blocks, channels = [], []
    for level, (out_channels, num_convs) in enumerate(VGG16_BLOCKS):
        out_channels = scaled(out_channels, width)
        flipped = impl == "fast" and level < FLIPPED_INPUT_GRAD_BLOCKS
        blocks.append(conv_bn_relu_block(in_channels, out_channels, num_convs, flipped_input_grad=flipped))
        channels.append(out_channels)
        in_channels = out_channels
    return blocks, channels
