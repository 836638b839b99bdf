"""Config + weights file + runtime -> a ready model: how every job gets a network to run.

Like mmsegmentation's ``init_model(config, checkpoint, device)``: train's validation, eval, infer,
export, bench and the Python API (``fcn8s.Segmenter``) all load here. The file decides the runtime:
``.onnx`` is run by onnxruntime on the CPU, ``.mindir`` by MindSpore (``nn.GraphCell``), anything else
is a MindSpore checkpoint (model-only or training) loaded into the network the config describes, on
the device the config names. Every model has ``forward(batch)``: (N, 3, H, W) float32, normalised and
padded by ``data.preprocess.Preprocessor``, to (N, classes, H, W) logits as numpy; and ``input_size``:
the (H, W) a fixed-shape model (MINDIR) takes, else None.
"""
from pathlib import Path

import numpy as np

from .errors import FCNError
from .host import thread_budget
from .log import get_logger


class MindSporeModel:
    """A MindSpore network (``net``), run in inference mode."""
    input_size = None

    def __init__(self, net):
        self.net = net

    def forward(self, batch):
        import mindspore as ms
        self.net.set_train(False)
        return self.net(ms.Tensor(batch)).asnumpy()


def onnx_session(model):
    """An onnxruntime CPU session of ``model`` (a path, or the serialised model) on this process's thread budget
    (``host.thread_budget``): what `fcn8s eval` / `infer` run and what `fcn8s bench` measures."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = thread_budget()[0]
    return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                        providers=["CPUExecutionProvider"])


class OnnxModel:
    """A model exported by ``fcn8s export --format ONNX``, run by onnxruntime on the CPU (any batch and size)."""
    input_size = None

    def __init__(self, path, num_classes):
        try:
            self.session = onnx_session(path)
        except ImportError:
            raise FCNError(f"{path}: running an ONNX model needs onnxruntime: pip install 'fcn8s[onnx]'") from None
        except Exception as exc:  # onnxruntime's own error types: any of them means the file is unusable
            raise FCNError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        classes = self.session.get_outputs()[0].shape[1]
        if classes != num_classes:
            raise FCNError(f"{path}: the model has {classes} classes, the config model.num_classes {num_classes}")
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]


def _mindir_input_shape(path):
    """The (N, 3, H, W) a MINDIR file was exported with, read from its graph (nn.GraphCell does not say)."""
    from mindspore.train import mind_ir_pb2
    model = mind_ir_pb2.ModelProto()
    model.ParseFromString(Path(path).read_bytes())
    return tuple(model.graph.input[0].tensor[0].dims)


class MindirModel:
    """A MINDIR file from ``fcn8s export``, fixed to the (batch, 3, H, W) it was exported with.

    Batches run in chunks of that batch size (the last one filled up with zero images); the spatial
    size is the predictor's to meet (see ``input_size``).
    """

    def __init__(self, path, num_classes):
        import mindspore as ms
        try:
            self.cell = ms.nn.GraphCell(ms.load(str(path)))
            self.batch_size, _, height, width = _mindir_input_shape(path)
        except (RuntimeError, ValueError) as exc:
            raise FCNError(f"{path}: not a loadable MINDIR file ({str(exc).strip().splitlines()[0]})") from None
        self.path, self.num_classes, self.input_size = path, num_classes, (height, width)

    def forward(self, batch):
        import mindspore as ms
        count = len(batch)
        filled = np.concatenate([batch, np.zeros((-count % self.batch_size, *batch.shape[1:]), np.float32)])
        logits = np.concatenate([self.cell(ms.Tensor(filled[i:i + self.batch_size])).asnumpy()
                                 for i in range(0, len(filled), self.batch_size)])
        if logits.shape[1] != self.num_classes:
            raise FCNError(f"{self.path}: the model has {logits.shape[1]} classes, "
                           f"the config model.num_classes {self.num_classes}")
        return logits[:count]


def load_model(cfg, path=None, mindspore_kernels_only=False, announce=True):
    """The model ``cfg`` describes with the weights in ``path``, ready to run (see the module's docstring).

    ``path`` None: the network with its initial weights (benchmarks). ``mindspore_kernels_only``: build
    the network with MindSpore's own convolutions, not fcn8s's oneDNN kernels, as a network that is
    exported must be (a MINDIR file must not call a library in this host's cache). ``announce``: log
    the device, the kernels and the loading report.
    """
    log = get_logger()
    suffix = Path(path).suffix.lower() if path else ""
    if suffix == ".onnx":
        if announce:
            log.info(f"running {path} with onnxruntime (CPU)")
        return OnnxModel(path, cfg.model.num_classes)
    from .device import setup_device
    setup_device(cfg.device, announce)
    if suffix == ".mindir":
        model = MindirModel(path, cfg.model.num_classes)
        if announce:
            log.info(f"running {path} with MindSpore (fixed input: batch {model.batch_size}, "
                     f"{model.input_size[0]}x{model.input_size[1]})")
        return model
    from .models import build_model
    net = build_model(cfg.model, log if announce else None,
                      kernels="native" if mindspore_kernels_only else None)
    if path:
        from .checkpoint import load_weights
        report = load_weights(net, path)
        if announce:
            log.info(report.summary(path))
    return MindSporeModel(net)
