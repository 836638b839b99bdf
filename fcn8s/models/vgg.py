"""The VGG-16-BN body as the MindSpore tutorial names it: blocks conv1..conv5 of Conv-BN-ReLU."""
from mindspore import nn

from ..architecture import VGG16_BLOCKS, scaled
from ..kernels import BACKBONE
from .layers import FastGradConv2d, LibraryBatchNormReLU, make_conv


class ConvBNReLUBlock(nn.SequentialCell):
    """[Conv, BN, ReLU] * n in a SequentialCell, so parameters are named ``<block>.0.weight``, ``<block>.1.gamma``...

    In inference, where the convolutions are the kernel library's oneDNN ones, each triple runs as one oneDNN
    convolution with the BatchNorm (as a per-channel scale and shift) and the ReLU fused: as separate ops they
    are two more passes over each activation. In training, with ``batchnorm="custom"`` (the kernel plan's
    ``batchnorm``), each BatchNorm and its ReLU run as the library's fused op (LibraryBatchNormReLU), and the
    BatchNorm's moving statistics are updated as nn.BatchNorm2d updates them.
    """

    def __init__(self, layers, batchnorm="native"):
        super().__init__(layers)
        if batchnorm not in ("native", "custom"):
            raise ValueError(f"BatchNorm and ReLU are made native or custom; got {batchnorm!r}")
        convs = layers[::3]
        self.folded = all(isinstance(conv, FastGradConv2d) and conv.folds_bn_relu for conv in convs)
        self.fused_training = batchnorm == "custom"
        if self.fused_training:   # after SequentialCell's set-up: not one of its cell_list
            # nn.BatchNorm2d keeps 1 - its momentum argument: the batch's weight in the moving statistics
            self.bn_relu = LibraryBatchNormReLU(layers[1].eps, layers[1].momentum)

    def construct(self, x):
        if self.training and self.fused_training:
            for i in range(0, len(self.cell_list), 3):
                x = self._bn_relu_training(self.cell_list[i](x), self.cell_list[i + 1])
            return x
        if self.training or not self.folded:
            for cell in self.cell_list:
                x = cell(x)
            return x
        for i in range(0, len(self.cell_list), 3):
            x = self.cell_list[i].bn_relu_folded(x, self.cell_list[i + 1])
        return x

    def _bn_relu_training(self, x, bn):
        return self.bn_relu(x, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)[0]


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3, impl="native", batchnorm="native"):
    """ConvBNReLUBlock [Conv, BN, ReLU] * num_convs; the convolutions are made by make_conv with ``impl``, the
    BatchNorms and ReLUs in training as ``batchnorm`` says (ConvBNReLUBlock)."""
    layers = []
    for i in range(num_convs):
        conv = make_conv(in_channels if i == 0 else out_channels, out_channels, kernel_size, impl)
        layers += [conv, nn.BatchNorm2d(out_channels), nn.ReLU()]
    return ConvBNReLUBlock(layers, batchnorm)


def vgg16_bn_blocks(layer_plan, width=1.0, in_channels=3):
    """The five blocks conv1..conv5 (pooling is separate), each made as ``layer_plan`` (fcn8s.kernels) says,
    and the channel count of each."""
    blocks, channels = [], []
    for (out_channels, num_convs), block in zip(VGG16_BLOCKS, BACKBONE):
        out_channels = scaled(out_channels, width)
        blocks.append(conv_bn_relu_block(in_channels, out_channels, num_convs, impl=layer_plan[block],
                                         batchnorm=layer_plan["batchnorm"]))
        channels.append(out_channels)
        in_channels = out_channels
    return blocks, channels
