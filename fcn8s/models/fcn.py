"""FCN-32s / FCN-16s / FCN-8s on VGG-16-BN (Long, Shelhamer, Darrell), with the tutorial's parameter names.

FCN-8s: score_fr -> upscore2 (x2) + score_pool4 -> upscore_pool4 (x2) + score_pool3 -> upscore8 (x8).
FCN-16s: score_fr -> upscore2 (x2) + score_pool4 -> upscore16 (x16).
FCN-32s: score_fr -> upscore32 (x32).
Convolutions use pad_mode 'same' and no bias. Inputs of any size are padded (bottom/right, with
zeros, i.e. the mean colour after normalisation) to a multiple of 32 and the logits cropped back.
"""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ..kernels import choose as choose_kernels, plan as kernels_plan
from ..architecture import ARCHS, FC_CHANNELS, STRIDE, head_layers, pool_channels, scaled
from .layers import MaxPool, make_upsample
from .vgg import conv_bn_relu_block, vgg16_bn_blocks


def bilinear_kernel(in_channels, out_channels, kernel_size):
    """Weights (in, out, k, k) that make a transposed convolution a bilinear upsampler (FCN paper).

    Channel i maps to channel i only; the other pairs are zero.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype=np.float32)
    for i in range(min(in_channels, out_channels)):
        weight[i, i] = filt
    return weight


def _upsample(num_classes, factor, init, impl):
    kernel = 2 * factor
    weight_init = (ms.Tensor(bilinear_kernel(num_classes, num_classes, kernel))
                   if init == "bilinear" else "xavier_uniform")
    return make_upsample(num_classes, factor, impl, weight_init)


def _score(in_channels, num_classes):
    return nn.Conv2d(in_channels, num_classes, 1, weight_init="xavier_uniform")


class FCN(nn.Cell):
    """The network. ``kernels``: a ``model.kernels`` setting other than auto, or a plan (fcn8s.kernels.choose)."""

    def __init__(self, arch="fcn8s", num_classes=21, width=1.0, deconv_init="bilinear", kernels="mindspore"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch = arch
        self.num_classes = num_classes
        self.kernel_plan = layer_plan = kernels if isinstance(kernels, dict) else kernels_plan(kernels)
        blocks, channels = vgg16_bn_blocks(layer_plan, width)
        self.conv1, self.conv2, self.conv3, self.conv4, self.conv5 = blocks
        self.pool = MaxPool(layer_plan["pool"])
        fc = scaled(FC_CHANNELS, width)
        self.conv6 = conv_bn_relu_block(channels[4], fc, kernel_size=7, impl=layer_plan["conv6"],
                                        batchnorm=layer_plan["batchnorm"])
        self.conv7 = conv_bn_relu_block(fc, fc, kernel_size=1, impl=layer_plan["conv7"],
                                        batchnorm=layer_plan["batchnorm"])
        self.score_fr = _score(fc, num_classes)
        self.head = head_layers(arch)
        for layer in self.head:
            setattr(self, layer.name, _upsample(num_classes, layer.factor, deconv_init, layer_plan["upsample"])
                    if layer.factor else _score(pool_channels(layer.pool, width), num_classes))

    def construct(self, x):
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (-h) % STRIDE, (-w) % STRIDE
        if pad_h or pad_w:
            x = ops.pad(x, (0, pad_w, 0, pad_h))
        p1 = self.pool(self.conv1(x))
        p2 = self.pool(self.conv2(p1))
        p3 = self.pool(self.conv3(p2))
        p4 = self.pool(self.conv4(p3))
        p5 = self.pool(self.conv5(p4))
        pools = (p1, p2, p3, p4, p5)
        out = self.score_fr(self.conv7(self.conv6(p5)))
        for layer in self.head:   # unrolled when compiled: the head is fixed at construction
            if layer.factor:
                out = getattr(self, layer.name)(out)
            else:
                out = out + getattr(self, layer.name)(pools[layer.pool - 1])
        if pad_h or pad_w:
            out = out[:, :, :h, :w]
        return out


def build_model(model_cfg, log=None, kernels=None):
    """The network described by the ``model`` config section; ``log`` gets one line on the kernels chosen.

    ``kernels`` replaces ``model_cfg.kernels`` (export builds with MindSpore's own kernels).
    """
    layer_plan, note = choose_kernels(kernels or model_cfg.kernels, model_cfg.width)
    if log is not None:
        log.info(note)
    return FCN(model_cfg.arch, model_cfg.num_classes, model_cfg.width, model_cfg.deconv_init, layer_plan)
