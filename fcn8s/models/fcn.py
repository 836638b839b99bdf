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

from ..architecture import ARCHS, FC_CHANNELS, STRIDE, scaled
from ..errors import FCNError
from . import kernel_probe, onednn
from .layers import FastGradConv2d
from .vgg import conv_bn_relu_block, vgg16_bn_blocks

BACKBONE_PREFIXES = ("conv1.", "conv2.", "conv3.", "conv4.", "conv5.")


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


def _upsample(num_classes, factor, init):
    kernel = 2 * factor
    weight_init = (ms.Tensor(bilinear_kernel(num_classes, num_classes, kernel))
                   if init == "bilinear" else "xavier_uniform")
    return nn.Conv2dTranspose(num_classes, num_classes, kernel, stride=factor, weight_init=weight_init)


def _score(in_channels, num_classes):
    return nn.Conv2d(in_channels, num_classes, 1, weight_init="xavier_uniform")


class FCN(nn.Cell):
    def __init__(self, arch="fcn8s", num_classes=21, width=1.0, deconv_init="bilinear", conv6_impl="fast",
                 backbone_impl="fast"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch = arch
        self.num_classes = num_classes
        self.backbone_impl = backbone_impl
        blocks, channels = vgg16_bn_blocks(width, impl=backbone_impl)
        self.conv1, self.conv2, self.conv3, self.conv4, self.conv5 = blocks
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        fc = scaled(FC_CHANNELS, width)
        conv6 = (FastGradConv2d(channels[4], fc, 7, weight_grad="matmul") if conv6_impl == "fast"
                 else nn.Conv2d(channels[4], fc, 7, weight_init="xavier_uniform"))
        self.conv6 = nn.SequentialCell([conv6, nn.BatchNorm2d(fc), nn.ReLU()])
        self.conv7 = conv_bn_relu_block(fc, fc, kernel_size=1)
        self.score_fr = _score(fc, num_classes)
        if arch == "fcn32s":
            self.upscore32 = _upsample(num_classes, 32, deconv_init)
        else:
            self.upscore2 = _upsample(num_classes, 2, deconv_init)
            self.score_pool4 = _score(channels[3], num_classes)
            if arch == "fcn16s":
                self.upscore16 = _upsample(num_classes, 16, deconv_init)
            else:
                self.upscore_pool4 = _upsample(num_classes, 2, deconv_init)
                self.score_pool3 = _score(channels[2], num_classes)
                self.upscore8 = _upsample(num_classes, 8, deconv_init)

    def construct(self, x):
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (-h) % STRIDE, (-w) % STRIDE
        if pad_h or pad_w:
            x = ops.pad(x, (0, pad_w, 0, pad_h))
        p3 = self.pool(self.conv3(self.pool(self.conv2(self.pool(self.conv1(x))))))
        p4 = self.pool(self.conv4(p3))
        p5 = self.pool(self.conv5(p4))
        score = self.score_fr(self.conv7(self.conv6(p5)))
        if self.arch == "fcn32s":
            out = self.upscore32(score)
        elif self.arch == "fcn16s":
            out = self.upscore16(self.upscore2(score) + self.score_pool4(p4))
        else:
            fuse4 = self.upscore2(score) + self.score_pool4(p4)
            out = self.upscore8(self.upscore_pool4(fuse4) + self.score_pool3(p3))
        if pad_h or pad_w:
            out = out[:, :, :h, :w]
        return out


def resolve_backbone_impl(impl, width=1.0):
    """(impl, note): what ``model.backbone_impl`` means here; the note says what was chosen and why, for the log.

    "auto" on CPU where the oneDNN kernels build and load: per block, whichever kernels measured faster
    on this host for this width (kernel_probe; a tuple of block impls); elsewhere "fast". An explicit
    "onednn" that cannot load is an FCNError.
    """
    target = ms.get_context("device_target")
    if impl in ("auto", "onednn"):
        usable, why = (False, f"CPU only, the device is {target}") if target != "CPU" else onednn.available()
        if usable:
            kernel = onednn.kernel_name("forward", 1, 64, 64, 64, 64, 3)
            if impl == "onednn":
                return "onednn", f"convolutions: oneDNN channels-last kernels ({kernel})"
            impls, measured = kernel_probe.choose_block_impls(width)
            chosen = ", ".join(f"conv{i + 1} {'oneDNN' if b == 'onednn' else 'MindSpore'}" for i, b in enumerate(impls))
            return impls, f"convolutions: {chosen} (oneDNN kernels {kernel}; {measured})"
        if impl == "onednn":
            raise FCNError(f"model.backbone_impl onednn: {why}")
        return "fast", f"convolutions: MindSpore's (oneDNN custom kernels not used: {why})"
    return impl, f"convolutions: MindSpore's ({impl})"


def build_model(model_cfg, log=None, backbone_impl=None):
    """The network described by the ``model`` config section; ``log`` gets one line on the kernels chosen.

    ``backbone_impl`` replaces ``model_cfg.backbone_impl`` (export builds with MindSpore's own kernels).
    """
    backbone_impl, note = resolve_backbone_impl(backbone_impl or model_cfg.backbone_impl, model_cfg.width)
    if log is not None:
        log.info(note)
    return FCN(model_cfg.arch, model_cfg.num_classes, model_cfg.width, model_cfg.deconv_init, model_cfg.conv6_impl,
               backbone_impl)
