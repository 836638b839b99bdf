"""Convolutions with the same forward and parameters as nn.Conv2d and cheaper gradients on CPU.

MindSpore 2.10's CPU gradient kernels are slow or memory-hungry for some of FCN's layers:
- conv6 (512 -> 4096, 7x7 on a small map): Conv2DBackpropFilter takes 45 s for forward + backward
  at 2x256x256 against 0.3 s for the forward. Its weight gradient is computed here as one im2col
  matmul (unfold x, multiply by dout).
- the 3x3 layers of blocks conv1-conv3 (64-256 channels, high resolution): in graph mode every
  convolution kernel keeps its own im2col buffer, and Conv2DBackpropInput's is the largest. The input
  gradient is computed here as a forward convolution of dout with the flipped, transposed kernel:
  at 2x256x256 the full network's step is as fast or faster and its peak memory 640 MB lower. For
  the 512-channel blocks the native input gradient is faster, so they keep it.
With ``kernels="onednn"`` the forward and both gradients run in oneDNN's channels-last kernels
instead (``fcn8s/kernels/onednn_conv.cc``, CPU only): 1.4-2.7x MindSpore's convolution speed at AVX-512,
and no im2col buffers kept across the step; ``kernels="onednn-any"`` lets oneDNN choose the activations'
layout inside (its blocked kernels at AVX2, whose weight gradient is 2-3x faster there than NHWC's).
With ``kernels="gemm"`` (conv6, conv7) they are matrix products on the same library's sgemm.
The parameter is the same ``weight`` of shape (out, in, k, k) as nn.Conv2d, so checkpoints are
interchangeable, and the outputs and gradients are tested equal to nn.Conv2d's. ``make_conv`` is
the one place a convolution of the network is made, from the name the kernel plan gives its layer
(``fcn8s.kernels``); ``MaxPool`` and ``make_upsample`` make the max pooling and the head's transposed
convolutions (TransposedConv: the library's, with nn.Conv2dTranspose's ``weight``) the same way, and
LibraryBatchNormReLU is the library's training BatchNorm + ReLU that ``vgg.ConvBNReLUBlock`` runs.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import initializer
from mindspore.ops import signature as sig
from mindspore.ops.operations import _grad_ops

from ..kernels import ONEDNN_LAYOUTS, onednn

INPUT_GRADS = ("native", "flipped")
WEIGHT_GRADS = ("native", "matmul")
KERNELS = ("mindspore", *ONEDNN_LAYOUTS, "gemm")


class _ConvCustomGrad(nn.Cell):
    """Parameter-free conv(x, weight) with a custom bprop; the weight is an input so bprop returns its grad."""

    def __init__(self, in_channels, out_channels, kernel_size, input_grad, weight_grad):
        super().__init__()
        self.kernel_size = kernel_size
        self.pad = kernel_size // 2
        self.input_grad = input_grad
        self.weight_grad = weight_grad
        self.conv = ops.Conv2D(out_channels, kernel_size, pad_mode="pad", pad=self.pad)
        if input_grad == "flipped":
            self.conv_flipped = ops.Conv2D(in_channels, kernel_size, pad_mode="pad", pad=self.pad)
        else:
            self.conv_input_grad = ops.Conv2DBackpropInput(in_channels, kernel_size, pad_mode="pad", pad=self.pad)
        if weight_grad == "matmul":
            self.matmul_nt = ops.MatMul(transpose_b=True)
        else:
            self.conv_weight_grad = _grad_ops.Conv2DBackpropFilter(out_channels, kernel_size, pad_mode="pad",
                                                                   pad=self.pad, pad_list=(self.pad,) * 4)

    def construct(self, x, weight):
        return self.conv(x, weight)

    def bprop(self, x, weight, out, dout):
        n, c, h, w = x.shape
        o, k = weight.shape[0], self.kernel_size
        if self.input_grad == "flipped":
            # dx = dout correlated with the kernel turned by 180 degrees, in and out channels swapped
            flipped = weight.reshape(o, c, k * k)[:, :, ::-1].reshape(o, c, k, k).transpose(1, 0, 2, 3)
            dx = self.conv_flipped(dout, flipped)
        else:
            dx = self.conv_input_grad(dout, weight, x.shape)
        if self.weight_grad == "matmul":
            cols = ops.unfold(x, k, padding=self.pad)              # (n, c*k*k, h*w)
            cols = cols.transpose(1, 0, 2).reshape(c * k * k, n * h * w)
            grads = dout.reshape(n, o, h * w).transpose(1, 0, 2).reshape(o, n * h * w)
            dweight = self.matmul_nt(grads, cols).reshape(weight.shape)
        else:
            dweight = self.conv_weight_grad(dout, x, weight.shape)
        return dx, dweight


def _library_op(function, out_shape):
    """A float32 op of the kernel library (fcn8s/kernels/onednn_conv.cc, CPU only) whose one output has the
    first input's dtype and the shape ``out_shape`` gives."""
    return ops.Custom(f"{onednn.load()}:{function}", out_shape=out_shape, out_dtype=lambda first, *rest: first,
                      func_type="aot")


class OneDNNConv(nn.Cell):
    """Parameter-free conv(x, weight) whose forward and gradients are oneDNN custom ops (fcn8s/kernels/onednn.py),
    made ``way`` (kernels.ONEDNN_LAYOUTS): the activations channels-last inside them, or in the layout oneDNN
    prefers."""

    def __init__(self, kernel_size, way="onednn"):
        super().__init__()
        self.forward = _library_op(onednn.conv_function("forward", way), lambda x, w: (x[0], w[0], x[2], x[3]))
        self.input_grad = _library_op(onednn.conv_function("input_grad", way),
                                      lambda dout, w: (dout[0], w[1], dout[2], dout[3]))
        self.weight_grad = _library_op(onednn.conv_function("weight_grad", way),
                                       lambda x, dout: (dout[1], x[1], kernel_size, kernel_size))
        self.forward_bn_relu = _library_op(onednn.conv_function("forward_bn_relu", way),
                                           lambda x, w, scale, shift: (x[0], w[0], x[2], x[3]))

    def construct(self, x, weight):
        return self.forward(x, weight)

    def bprop(self, x, weight, out, dout):
        return self.input_grad(dout, weight), self.weight_grad(x, dout)


class GemmConv(nn.Cell):
    """Parameter-free conv(x, weight) as matrix products on the oneDNN library's sgemm (``gemm_*`` in
    fcn8s/kernels/onednn_conv.cc, CPU only): the forward multiplies the weight, read as an (out, in*k*k)
    matrix, by the input's k x k patches (ops.unfold; the input itself when k = 1), the input gradient
    folds the weight's transpose times dout back onto the image (ops.fold), the weight gradient is dout
    times the patches. For conv6 and conv7 (thousands of channels on a map of a few hundred pixels) this
    is a plain matrix product, which the library's sgemm runs at the CPU's best ISA with no weight
    reorder; MindSpore's oneDNN convolutions there run at AVX2 (see onednn.cap_mindspore_isa)."""

    def __init__(self, kernel_size, weight_shape):
        super().__init__()
        self.kernel_size = kernel_size
        self.pad = kernel_size // 2
        out_channels, in_channels = weight_shape[:2]
        patch_rows = in_channels * kernel_size * kernel_size
        self.forward = _library_op("gemm_forward", lambda w, cols: (cols[0], out_channels, cols[2]))
        self.input_grad = _library_op("gemm_input_grad", lambda w, dout: (dout[0], patch_rows, dout[2]))
        self.weight_grad = _library_op("gemm_weight_grad", lambda dout, cols: tuple(weight_shape))

    def patches(self, x):
        n, c, h, w = x.shape
        if self.kernel_size == 1:
            return x.reshape(n, c, h * w)
        return ops.unfold(x, self.kernel_size, padding=self.pad)

    def construct(self, x, weight):
        n, _, h, w = x.shape
        return self.forward(weight, self.patches(x)).reshape(n, weight.shape[0], h, w)

    def bprop(self, x, weight, out, dout):
        n, c, h, w = x.shape
        dout = dout.reshape(n, weight.shape[0], h * w)
        dcols = self.input_grad(weight, dout)
        if self.kernel_size == 1:
            dx = dcols.reshape(x.shape)
        else:
            dx = ops.fold(dcols, ms.Tensor([h, w], ms.int32), self.kernel_size, padding=self.pad)
        return dx, self.weight_grad(dout, self.patches(x))


class FastGradConv2d(nn.Cell):
    """Drop-in for ``nn.Conv2d(in, out, k, pad_mode='same', has_bias=False)`` with odd ``k``, stride 1.

    ``input_grad``: "native" (Conv2DBackpropInput) or "flipped" (a forward convolution);
    ``weight_grad``: "native" (Conv2DBackpropFilter) or "matmul" (im2col matmul);
    ``kernels``: "mindspore" (the above), "onednn" (forward and both gradients in oneDNN's convolutions,
    channels-last inside), "onednn-any" (the same in the layout oneDNN prefers) or "gemm" (as matrix products
    on oneDNN's sgemm); the two options above apply to "mindspore" only.
    """

    def __init__(self, in_channels, out_channels, kernel_size, input_grad="native", weight_grad="native",
                 kernels="mindspore", weight_init="xavier_uniform"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"FastGradConv2d needs an odd kernel size, got {kernel_size}")
        if input_grad not in INPUT_GRADS or weight_grad not in WEIGHT_GRADS:
            raise ValueError(f"input_grad must be one of {INPUT_GRADS} and weight_grad one of {WEIGHT_GRADS}, "
                             f"got {input_grad!r}, {weight_grad!r}")
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = ms.Parameter(initializer(weight_init, shape, ms.float32), name="weight")
        if kernels in ONEDNN_LAYOUTS:
            self.op = OneDNNConv(kernel_size, kernels)
        elif kernels == "gemm":
            self.op = GemmConv(kernel_size, shape)
        else:
            self.op = _ConvCustomGrad(in_channels, out_channels, kernel_size, input_grad, weight_grad)

    def construct(self, x):
        # value(): one Load of the weight shared by the forward and the custom bprop. Passing the
        # Parameter itself loads it twice, and graph mode then copies each load (TensorMove):
        # 2 x 400 MB for the full conv6, and 0.1 s a step.
        return self.op(x, self.weight.value())

    def bn_relu_folded(self, x, bn):
        """relu(bn(self(x))) for inference (``bn`` with its moving statistics) as one of the library's oneDNN
        convolutions (``folds_bn_relu``): the BatchNorm as a per-channel scale and shift and the ReLU, applied by
        oneDNN to the output on its way out. The weight goes in as it is: scaling it instead made a copy of
        every weight per call, which graph mode kept (peak memory of a 1x512² prediction 1554 MiB against
        1387 now, in the AVX2 sittings of benchmarks/RESULTS.md)."""
        scale = bn.gamma / ops.sqrt(bn.moving_variance + bn.eps)
        return self.op.forward_bn_relu(x, self.weight.value(), scale, bn.beta - bn.moving_mean * scale)

    @property
    def folds_bn_relu(self):
        """Whether ``bn_relu_folded`` can run: the convolution is one of the library's oneDNN ones."""
        return isinstance(self.op, OneDNNConv)


class LibraryUpsample(nn.Cell):
    """Parameter-free upsample(x, weight): ``nn.Conv2dTranspose(c, o, 2 factor, stride=factor)``'s forward and
    gradients in the kernel library (``upsample_*`` in fcn8s/kernels/onednn_conv.cc, CPU only), for a factor
    that is a multiple of ``onednn.UPSAMPLE_FACTOR_MULTIPLE``. The op is linear, so the gradients need no
    forward values: the input gradient from dout and the weight, the weight gradient from x and dout."""

    def __init__(self, factor):
        super().__init__()
        self.forward = _library_op("upsample_forward", lambda x, w: (x[0], w[1], x[2] * factor, x[3] * factor))
        self.input_grad = _library_op("upsample_input_grad",
                                      lambda dout, w: (dout[0], w[0], dout[2] // factor, dout[3] // factor))
        self.weight_grad = _library_op("upsample_weight_grad",
                                       lambda x, dout: (x[1], dout[1], 2 * factor, 2 * factor))

    def construct(self, x, weight):
        return self.forward(x, weight)

    def bprop(self, x, weight, out, dout):
        return self.input_grad(dout, weight), self.weight_grad(x, dout)


class TransposedConv(nn.Cell):
    """Drop-in for ``nn.Conv2dTranspose(in_channels, out_channels, 2 factor, stride=factor)`` (pad_mode 'same',
    no bias) on the kernel library's upsampling (LibraryUpsample): the same parameter ``weight`` (in, out, k, k),
    so checkpoints are interchangeable, and outputs and gradients tested equal to nn.Conv2dTranspose's."""

    def __init__(self, in_channels, out_channels, factor, weight_init="xavier_uniform"):
        super().__init__()
        shape = (in_channels, out_channels, 2 * factor, 2 * factor)
        self.weight = ms.Parameter(initializer(weight_init, shape, ms.float32), name="weight")
        self.op = LibraryUpsample(factor)

    def construct(self, x):
        return self.op(x, self.weight.value())   # one Load for the forward and bprop (see FastGradConv2d)


def in_place_library_op(function, inputs, written, out_shape, out_dtype):
    """A float32 op of the kernel library (CPU only) that writes its inputs named in ``written`` (of ``inputs``,
    in order) in place, declared as MindSpore's own BatchNorm and ApplyMomentum declare theirs (read-write
    inputs, a memory side effect), so that graph mode hands it the Parameters themselves, in order with their
    other uses."""
    class InPlace(ops.Custom):
        __mindspore_signature__ = tuple(sig.make_sig(name, sig.sig_rw.RW_WRITE) if name in written
                                        else sig.make_sig(name) for name in inputs)

    op = InPlace(f"{onednn.load()}:{function}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")
    op.add_prim_attr("side_effect_mem", True)
    return op


class LibraryBatchNormReLU(nn.Cell):
    """relu(bn(x)) on the batch's statistics for training, ``bn`` an nn.BatchNorm2d whose moving statistics it
    updates as nn.BatchNorm2d does, in the kernel library (``batch_norm_relu_*`` in fcn8s/kernels/onednn_conv.cc,
    CPU only): MindSpore's four ops (BatchNorm, ReLU and their gradients) as two. Parameter-free: ``bn``'s
    parameters are passed in by the caller (``construct(x, gamma, beta, moving_mean, moving_variance)``)."""

    def __init__(self, eps, momentum):
        super().__init__()
        self.eps = ms.Tensor([eps], ms.float32)
        self.momentum = ms.Tensor([momentum], ms.float32)   # the batch's weight in the moving statistics
        self.forward = in_place_library_op(
            "batch_norm_relu_forward", ("x", "gamma", "beta", "eps", "moving_mean", "moving_variance", "momentum"),
            written=("moving_mean", "moving_variance"), out_shape=lambda x, *rest: (x, (2, x[1])),
            out_dtype=lambda x, *rest: (x, x))
        self.grad = ops.Custom(f"{onednn.load()}:batch_norm_relu_grad", func_type="aot",
                               out_shape=lambda dy, y, x, gamma, stats: (x, (2, x[1])),
                               out_dtype=lambda dy, *rest: (dy, dy))

    def construct(self, x, gamma, beta, moving_mean, moving_variance):
        return self.forward(x, gamma, beta, self.eps, moving_mean, moving_variance, self.momentum)

    def bprop(self, x, gamma, beta, moving_mean, moving_variance, out, dout):
        # stats (the batch's mean and 1 / sqrt(var + eps)) feed only the gradient: dout[1] is not used
        dx, dparams = self.grad(dout[0], out[0], x, gamma, out[1])
        return dx, dparams[0], dparams[1], ops.zeros_like(moving_mean), ops.zeros_like(moving_variance)


class MaxPool2x2(nn.Cell):
    """``nn.MaxPool2d(2, 2)`` whose forward also keeps each window's winner and whose gradient scatters
    to it (``max_pool2x2_*`` in fcn8s/kernels/onednn_conv.cc, CPU only)."""

    def __init__(self):
        super().__init__()
        library = onednn.load()
        self.forward = ops.Custom(f"{library}:max_pool2x2_forward", func_type="aot",
                                  out_shape=lambda x: ((x[0], x[1], x[2] // 2, x[3] // 2),) * 2,
                                  out_dtype=lambda x: (x, ms.uint8))
        self.grad = ops.Custom(f"{library}:max_pool2x2_grad", func_type="aot",
                               out_shape=lambda dout, winner, x: x, out_dtype=lambda dout, winner, x: dout)

    def construct(self, x):
        return self.forward(x)

    def bprop(self, x, out, dout):
        return (self.grad(dout[0], out[1], x),)


class MaxPool(nn.Cell):
    """2x2, stride-2 max pooling made as a kernel plan names it: "native" nn.MaxPool2d or "custom" MaxPool2x2."""

    def __init__(self, impl):
        super().__init__()
        if impl not in ("native", "custom"):
            raise ValueError(f"max pooling is made native or custom; got {impl!r}")
        self.custom = impl == "custom"
        self.pool = MaxPool2x2() if self.custom else nn.MaxPool2d(kernel_size=2, stride=2)

    def construct(self, x):
        if self.custom:
            return self.pool(x)[0]
        return self.pool(x)


def make_conv(in_channels, out_channels, kernel_size, impl, weight_init="xavier_uniform"):
    """One convolution, made as a kernel plan names it (``fcn8s.kernels``): "native" nn.Conv2d, or a
    FastGradConv2d (same parameters and outputs) with a "flipped" input gradient, a "matmul" weight
    gradient, or the kernel library's "onednn" / "onednn-any" convolutions or "gemm" matrix products for
    the forward and both gradients."""
    if impl == "native":
        return nn.Conv2d(in_channels, out_channels, kernel_size, weight_init=weight_init)
    options = {"flipped": {"input_grad": "flipped"}, "matmul": {"weight_grad": "matmul"},
               **{kernels: {"kernels": kernels} for kernels in KERNELS[1:]}}
    if impl not in options:
        raise ValueError(f"a convolution is made native, {', '.join(options)}; got {impl!r}")
    return FastGradConv2d(in_channels, out_channels, kernel_size, weight_init=weight_init, **options[impl])


def make_upsample(channels, factor, impl, weight_init="xavier_uniform"):
    """FCN's upsampling by ``factor`` (a transposed convolution, kernel 2 factor), made as a kernel plan names
    it (``fcn8s.kernels``): "native" nn.Conv2dTranspose, or "custom": the kernel library's TransposedConv where
    the factor is a multiple of ``onednn.UPSAMPLE_FACTOR_MULTIPLE`` (FCN-8s's upscore8, FCN-16s's upscore16,
    FCN-32s's upscore32), nn.Conv2dTranspose for the others (the x2 layers: a few ms a step)."""
    if impl not in ("native", "custom"):
        raise ValueError(f"upsampling is made native or custom; got {impl!r}")
    if impl == "custom" and factor % onednn.UPSAMPLE_FACTOR_MULTIPLE == 0:
        return TransposedConv(channels, channels, factor, weight_init)
    return nn.Conv2dTranspose(channels, channels, 2 * factor, stride=factor, weight_init=weight_init)
