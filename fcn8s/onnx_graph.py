"""FCN-8s/16s/32s as an ONNX graph, written from the network's weights.

MindSpore 2.10's own ONNX exporter fails on this network (its ConvTranspose nodes carry a
4-value output_shape that onnxruntime rejects, and BatchNorm fails in some paths), so the graph
is written here node by node with the same layers as ``fcn8s.models.FCN`` in inference mode:
Conv (no bias) -> BatchNormalization -> Relu blocks, 2x2 max pools, the 1x1 skip scores and the
transposed convolutions (kernel 2s, stride s, pads s/2: MindSpore's pad_mode='same' for k = 2s).
Batch, height and width are free: as in the network, the input is padded (bottom/right, zeros)
to a multiple of 32 inside the graph and the logits are cropped back. ``fcn8s export`` checks the
result against the network with onnxruntime.
"""
import numpy as np

from .architecture import STRIDE, VGG16_BLOCKS, head_layers

OPSET = 17
IR_VERSION = 8   # the IR version of opset 17; newer onnx packages write IRs older onnxruntimes refuse
BN_EPSILON = 1e-5   # nn.BatchNorm2d's default, as in the network


class _Graph:
    """Nodes and initializers of one ONNX graph, with unique tensor names."""

    def __init__(self, weights):
        self.weights = weights
        self.nodes, self.initializers = [], []

    def constant(self, name, array):
        from onnx import numpy_helper
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, name, **attrs):
        from onnx import helper
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def weight(self, name):
        """The named parameter as a float32 array (MindSpore Parameters are converted)."""
        value = self.weights[name]
        return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)

    def conv(self, x, name):
        weight = self.weight(f"{name}.weight")
        k = weight.shape[-1]
        return self.node("Conv", [x, self.constant(f"{name}.weight", weight)], name,
                         kernel_shape=[k, k], pads=[k // 2] * 4)

    def conv_bn_relu(self, x, block, index):
        """Layer ``index`` of a conv-BN-ReLU SequentialCell ``block`` (parameters ``block.3i`` and ``block.3i+1``)."""
        conv = self.conv(x, f"{block}.{3 * index}")
        bn = f"{block}.{3 * index + 1}"
        inputs = [conv] + [self.constant(f"{bn}.{leaf}", self.weight(f"{bn}.{leaf}"))
                           for leaf in ("gamma", "beta", "moving_mean", "moving_variance")]
        return self.node("Relu", [self.node("BatchNormalization", inputs, bn, epsilon=BN_EPSILON)], f"{bn}.relu")

    def pool(self, x, name):
        return self.node("MaxPool", [x], name, kernel_shape=[2, 2], strides=[2, 2])

    def upsample(self, x, name, factor):
        weight = self.weight(f"{name}.weight")
        return self.node("ConvTranspose", [x, self.constant(f"{name}.weight", weight)], name,
                         kernel_shape=[2 * factor] * 2, strides=[factor] * 2, pads=[factor // 2] * 4)


def build_onnx_model(weights, arch, num_classes):
    """ONNX ModelProto of the network with ``weights`` ({parameter name: array}, e.g. ``net.parameters_dict()``).

    Input ``images`` (N, 3, H, W) float32, normalised as in eval, any N, H, W; output ``logits``
    (N, classes, H, W).
    """
    from onnx import TensorProto, checker, helper
    g = _Graph(weights)
    # pad H, W up to a multiple of 32: pads = [0, 0, 0, 0, 0, 0, (-H) mod 32, (-W) mod 32]
    size = g.node("Shape", ["images"], "input_hw", start=2, end=4)
    stride = g.constant("stride", np.array([STRIDE], np.int64))
    missing = g.node("Mod", [g.node("Sub", [stride, g.node("Mod", [size, stride], "hw_mod")], "hw_gap"), stride],
                     "hw_pad")
    pads = g.node("Concat", [g.constant("pads_begin", np.zeros(6, np.int64)), missing], "pads", axis=0)
    x = g.node("Pad", ["images", pads], "pad_to_stride", mode="constant")
    pools = []
    for level, (_, num_convs) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(num_convs):
            x = g.conv_bn_relu(x, f"conv{level}", i)
        x = g.pool(x, f"pool{level}")
        pools.append(x)
    x = g.conv_bn_relu(x, "conv6", 0)
    x = g.conv_bn_relu(x, "conv7", 0)
    x = g.conv(x, "score_fr")
    for layer in head_layers(arch):
        if layer.factor:
            x = g.upsample(x, layer.name, layer.factor)
        else:
            x = g.node("Add", [x, g.conv(pools[layer.pool - 1], layer.name)], f"{layer.name}.fuse")
    x = g.node("Slice", [x, g.constant("crop_starts", np.zeros(2, np.int64)), size,
                         g.constant("crop_axes", np.array([2, 3], np.int64))], "crop_to_input")
    g.nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    graph = helper.make_graph(
        g.nodes, f"{arch}_vgg16bn", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes, "H", "W"])],
        initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fcn8s",
                              ir_version=IR_VERSION)
    checker.check_model(model)
    return model
