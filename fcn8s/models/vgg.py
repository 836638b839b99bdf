"""The VGG-16-BN body as the MindSpore tutorial names it: blocks conv1..conv5 of Conv-BN-ReLU."""
from mindspore import nn

from ..architecture import VGG16_BLOCKS, scaled
from .layers import FastGradConv2d

# The "fast" policy on MindSpore's kernels: conv1-conv3 take flipped-kernel input gradients, conv4 and
# conv5 the native ones (see layers.py for why).
FAST_BLOCK_IMPLS = ("flipped", "flipped", "flipped", "native", "native")


def make_conv(in_channels, out_channels, kernel_size, impl, weight_init="xavier_uniform"):
    """One convolution: nn.Conv2d for "native", FastGradConv2d (same parameters and outputs) for
    "flipped" (input gradient as a flipped-kernel convolution) and "onednn" (oneDNN kernels for the
    forward and both gradients)."""
    if impl == "onednn":
        return FastGradConv2d(in_channels, out_channels, kernel_size, kernels="onednn", weight_init=weight_init)
    if impl == "flipped":
        return FastGradConv2d(in_channels, out_channels, kernel_size, input_grad="flipped", weight_init=weight_init)
    return nn.Conv2d(in_channels, out_channels, kernel_size, weight_init=weight_init)


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3, impl="native"):
    """SequentialCell [Conv, BN, ReLU] * num_convs, so parameters are named ``<block>.0.weight``, ``<block>.1.gamma``...

    The convolutions are made by make_conv with ``impl``.
    """
    layers = []
    for i in range(num_convs):
        conv = make_conv(in_channels if i == 0 else out_channels, out_channels, kernel_size, impl)
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.SequentialCell(layers)


def block_impls(impl):
    """The five blocks' convolution impls for a backbone impl: "fast" (FAST_BLOCK_IMPLS), "onednn" or
    "native" for all, or already a per-block tuple (what ``auto`` measures, see kernel_probe)."""
    if isinstance(impl, (tuple, list)):
        return tuple(impl)
    return FAST_BLOCK_IMPLS if impl == "fast" else (impl,) * len(VGG16_BLOCKS)


def vgg16_bn_blocks(width=1.0, in_channels=3, impl="fast"):
    """The five blocks conv1..conv5 (pooling is separate), and the channel count of each; ``impl`` as block_impls."""
    blocks, channels = [], []
    for (out_channels, num_convs), block_impl in zip(VGG16_BLOCKS, block_impls(impl)):
        out_channels = scaled(out_channels, width)
        blocks.append(conv_bn_relu_block(in_channels, out_channels, num_convs, impl=block_impl))
        channels.append(out_channels)
        in_channels = out_channels
    return blocks, channels
