"""conv6's fast path: a 'same' stride-1 convolution whose weight gradient is one matmul.

MindSpore 2.10's CPU Conv2DBackpropFilter is pathological for conv6 (512 -> 4096, 7x7 on a
small map): 45 s for forward + backward at 2x256x256 against 0.3 s for the forward. Here the
weight gradient is an im2col matmul (unfold x, multiply by dout) and the input gradient stays
the native Conv2DBackpropInput, which is fast. The parameter is the same ``weight`` of shape
(out, in, k, k) as nn.Conv2d, so checkpoints are interchangeable.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import initializer


class _ConvMatmulWeightGrad(nn.Cell):
    """Parameter-free conv(x, weight) with a custom bprop; the weight is an input so bprop returns its grad."""

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.kernel_size = kernel_size
        self.pad = kernel_size // 2
        self.conv = ops.Conv2D(out_channels, kernel_size, pad_mode="pad", pad=self.pad)
        self.conv_input_grad = ops.Conv2DBackpropInput(in_channels, kernel_size, pad_mode="pad", pad=self.pad)
        self.matmul_nt = ops.MatMul(transpose_b=True)

    def construct(self, x, weight):
        return self.conv(x, weight)

    def bprop(self, x, weight, out, dout):
        n, c, h, w = x.shape
        o = weight.shape[0]
        dx = self.conv_input_grad(dout, weight, x.shape)
        cols = ops.unfold(x, self.kernel_size, padding=self.pad)              # (n, c*k*k, h*w)
        cols = cols.transpose(1, 0, 2).reshape(c * self.kernel_size ** 2, n * h * w)
        grads = dout.reshape(n, o, h * w).transpose(1, 0, 2).reshape(o, n * h * w)
        dweight = self.matmul_nt(grads, cols).reshape(weight.shape)
        return dx, dweight


class MatmulGradConv2d(nn.Cell):
    """Drop-in for ``nn.Conv2d(in, out, k, pad_mode='same', has_bias=False)`` with odd ``k``, stride 1."""

    def __init__(self, in_channels, out_channels, kernel_size, weight_init="xavier_uniform"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"MatmulGradConv2d needs an odd kernel size, got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = ms.Parameter(initializer(weight_init, shape, ms.float32), name="weight")
        self.op = _ConvMatmulWeightGrad(in_channels, out_channels, kernel_size)

    def construct(self, x):
        # value(): one Load of the weight shared by the forward and the custom bprop. Passing the
        # Parameter itself loads it twice, and graph mode then copies each load (TensorMove):
        # 2 x 400 MB for the full conv6, and 0.1 s a step.
        return self.op(x, self.weight.value())
