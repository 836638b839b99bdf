"""The FCN family's shape, framework-free: VGG-16 block layout, width scaling, head layers, FLOPs.

Shared by the MindSpore network (models/), the PyTorch twin (torch_twin.py) and the benchmark's
GFLOP/s figures. Importing it loads neither MindSpore nor PyTorch.
"""
STRIDE = 32          # total downsampling: inputs are padded to a multiple of this
ARCHS = ("fcn8s", "fcn16s", "fcn32s")
# (output channels, 3x3 convolutions) of VGG-16's five blocks conv1..conv5
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
FC_CHANNELS = 4096   # conv6 (7x7) and conv7 (1x1), the paper's fc6/fc7


def scaled(channels, width):
    """Channel count under the width multiplier (1.0 = the paper's network)."""
    return max(1, int(round(channels * width)))


def head_layers(arch):
    """(layer name, upsampling factor, or None for a 1x1 skip score) of ``arch``'s head after score_fr."""
    if arch == "fcn32s":
        return [("upscore32", 32)]
    if arch == "fcn16s":
        return [("upscore2", 2), ("score_pool4", None), ("upscore16", 16)]
    return [("upscore2", 2), ("score_pool4", None), ("upscore_pool4", 2), ("score_pool3", None), ("upscore8", 8)]


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
    pool_channels = {"score_pool4": scaled(512, width), "score_pool3": scaled(256, width)}
    stride = STRIDE    # of the score map that enters the next head layer
    for name, factor in head_layers(arch):
        pixels = (h // stride) * (w // stride)
        if factor:
            macs += pixels * num_classes * num_classes * (2 * factor) ** 2
            stride //= factor
        else:
            macs += pixels * pool_channels[name] * num_classes
    return 2 * batch * macs / 1e9
