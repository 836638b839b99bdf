"""The VGG-16-BN body as the MindSpore tutorial names it: blocks conv1..conv5 of Conv-BN-ReLU."""
from mindspore import nn

from ..architecture import VGG16_BLOCKS, scaled


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3):
    """SequentialCell [Conv, BN, ReLU] * num_convs, so parameters are named ``<block>.0.weight``, ``<block>.1.gamma``..."""
    layers = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                      weight_init="xavier_uniform"),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
    return nn.SequentialCell(layers)


def vgg16_bn_blocks(width=1.0, in_channels=3):
    """The five blocks conv1..conv5 (pooling is separate), and the channel count of each."""
    blocks, channels = [], []
    for out_channels, num_convs in VGG16_BLOCKS:
        out_channels = scaled(out_channels, width)
        blocks.append(conv_bn_relu_block(in_channels, out_channels, num_convs))
        channels.append(out_channels)
        in_channels = out_channels
    return blocks, channels
