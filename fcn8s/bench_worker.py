"""What one ``fcn8s bench`` measurement runs in its own process: ``python -m fcn8s.bench_worker SPEC``.

SPEC is the JSON request the bench (``bench.py``) made; the worker builds the network as ``fcn8s train``
builds it (``model_and_step``), times its train steps or inference calls on ``random_batch`` (or the data
pipeline, or onnxruntime on the exported graph) and prints the result as one JSON line, which the bench
completes into a ``Row``: the documented schema of a results row.
"""
import json
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from .architecture import fcn_forward_gflop
from .host import kernel_environment, peak_rss_mib, timed

NUM_CLASSES = 21


@dataclass
class Row:
    """One entry of the JSON file's "models" list: the request, then what its subprocess measured.

    A request that was not measured is written as its request fields and ``error`` (one line) only.
    """
    kind: str             # "model"
    impl: str             # one of bench.MODEL_IMPLS
    what: str             # train | infer
    batch: int
    size: int             # square input side, pixels
    width: float          # model.width
    repeat: int           # timed calls per round, of which (all rounds pooled) median_s is the median
    warmup: int           # untimed calls before them
    mode: str             # MindSpore's execution mode, graph | pynative (PyTorch and onnxruntime run eagerly)
    framework: str        # mindspore | torch | onnxruntime
    version: str          # of that framework
    times_s: list         # seconds of each timed call, all rounds
    median_s: float
    peak_rss_mib: float   # of the measuring process (the largest over the rounds)
    gflop: float          # convolution GFLOP of one call (a train step counts 3x the forward)
    threads: int          # intra-op threads of the framework
    env: dict             # KERNEL_ENV name -> value, or None where unset, as the measuring process saw it
    first_call_s: float = None   # the first call (graph compilation, kernel set-up), timed apart (first round)
    rounds: int = 1              # processes that measured it, each in turn with the other rows' (bench --rounds)
    kernels: dict = None         # our MindSpore network: its kernel plan, layer -> how it is made (fcn8s.kernels)
    mindspore_isa: str = None    # MindSpore: how its oneDNN's ISA was set (kernels.onednn.cap_mindspore_isa)
    torch: dict = None           # PyTorch: mkldnn_available, mkldnn_enabled, parallel_backend, cpu_capability
    #                              (ATen's), onednn_isa and onednn_convolutions (oneDNN's, from one forward)


def model_and_step(impl, what, width, mode, steps):
    """(net, train-step cell or None) built as ``fcn8s train`` builds them, initial weights (runtime.load_model)."""
    from .config import load_config
    from .device import setup_device
    from .models.tutorial import TutorialFCN8s
    from .runtime import load_model
    from .schedule import lr_per_step
    from .train import build_train_step
    overrides = [("model.width", width), ("device.target", "CPU"), ("device.mode", mode)]
    if impl == "ms-kernels":
        overrides.append(("model.kernels", "mindspore"))
    cfg = load_config(None, overrides)
    setup = setup_device(cfg.device, announce=False)
    net = TutorialFCN8s(NUM_CLASSES) if impl == "seed" else load_model(cfg, announce=False).net
    if what != "train":
        net.set_train(False)
        return net, None
    step_fn, _ = build_train_step(net, cfg, setup, lr_per_step("constant", 0.01, steps), None)
    return net, step_fn


def _forever(iterator):
    """Batches across epochs: a MindSpore iterator stops at each epoch's end and resumes when iterated again."""
    while True:
        yield from iterator


def random_batch(batch, size):
    """(images, labels) of one train batch: standard-normal images, random classes with 5% void (255)."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch, size, size)).astype(np.int32)
    labels[rng.random(labels.shape) < 0.05] = 255
    return images, labels


def measure_model(spec):
    """One train or infer measurement of a MindSpore network, as a result dict."""
    import mindspore as ms
    from .kernels.onednn import cap_mindspore_isa
    what, batch, size = spec["what"], spec["batch"], spec["size"]
    net, step_fn = model_and_step(spec["impl"], what, spec["width"], spec["mode"],
                                   spec["repeat"] + spec["warmup"] + 1)
    images, labels = (ms.Tensor(a) for a in random_batch(batch, size))
    call = (lambda: step_fn(images, labels).asnumpy()) if step_fn else (lambda: net(images).asnumpy())
    first, times = timed(call, spec["repeat"], spec["warmup"])
    gflop = fcn_forward_gflop("fcn8s", NUM_CLASSES, spec["width"], batch, size, size) * (3 if what == "train" else 1)
    return {**spec, "framework": "mindspore", "version": ms.__version__, "first_call_s": first, "times_s": times,
            "median_s": statistics.median(times), "peak_rss_mib": peak_rss_mib(), "gflop": gflop,
            "threads": ms.get_context("runtime_num_threads"), "env": kernel_environment(),
            "kernels": getattr(net, "kernel_plan", None), "mindspore_isa": cap_mindspore_isa()}


def measure_onnxruntime(spec):
    """Inference of our network exported by fcn8s.onnx_graph, run by onnxruntime (a deployment path).

    The weights come from a MindSpore network built in this process, so the peak RSS includes it.
    """
    import onnxruntime
    from .onnx_graph import build_onnx_model
    from .runtime import onnx_session
    net, _ = model_and_step("fcn8s", "infer", spec["width"], spec["mode"], 1)
    images, _ = random_batch(spec["batch"], spec["size"])
    model = build_onnx_model(net.parameters_dict(), "fcn8s", NUM_CLASSES).SerializeToString()
    del net
    session = onnx_session(model)
    first, times = timed(lambda: session.run(None, {"images": images}), spec["repeat"], spec["warmup"])
    return {**spec, "framework": "onnxruntime", "version": onnxruntime.__version__, "first_call_s": first,
            "times_s": times, "median_s": statistics.median(times), "peak_rss_mib": peak_rss_mib(),
            "gflop": fcn_forward_gflop("fcn8s", NUM_CLASSES, spec["width"], spec["batch"], spec["size"],
                                       spec["size"]),
            "threads": session.get_session_options().intra_op_num_threads, "env": kernel_environment()}


def measure_data(spec):
    """Pipeline images/s (ours or the tutorial's SegDataset), and for ours the train step fed by it."""
    import mindspore as ms
    import mindspore.dataset as ds
    from .config import load_config
    from .data.dataset import create_train_dataset
    from .data.tutorial import SegDataset
    cfg = load_config("voc", [("data.train", spec["data"]), ("data.num_workers", spec["workers"]),
                              ("data.crop_size", spec["crop"])])
    batch = 4
    if spec["impl"] == "seed":
        d = cfg.data
        dataset = SegDataset(d.mean, d.std, spec["data"], batch, d.crop_size, d.max_scale, d.min_scale,
                             num_readers=1, num_parallel_calls=spec["workers"]).get_dataset()
    else:
        dataset = create_train_dataset(cfg.data, batch)
    ds.config.set_seed(0)
    iterator = _forever(dataset.create_tuple_iterator(output_numpy=True))
    next(iterator)  # worker start-up
    start, images = time.perf_counter(), 0
    while images < spec["images"]:
        images += next(iterator)[0].shape[0]
    result = {**spec, "framework": "mindspore", "images_per_s": images / (time.perf_counter() - start),
              "peak_rss_mib": peak_rss_mib()}
    if spec.get("step_batch"):
        # the same train step fed by fixed tensors, then by the pipeline (crop = step size)
        net, step_fn = model_and_step("fcn8s", "train", spec["width"], "graph", 2 * spec["repeat"] + 4)
        cfg = load_config("voc", [("data.train", spec["data"]), ("data.num_workers", spec["workers"]),
                                  ("data.crop_size", spec["step_size"])])
        fixed = [ms.Tensor(a) for a in random_batch(spec["step_batch"], spec["step_size"])]
        _, synthetic = timed(lambda: step_fn(*fixed).asnumpy(), spec["repeat"], 1)
        batches = _forever(create_train_dataset(cfg.data, spec["step_batch"]).create_tuple_iterator())
        _, fed = timed(lambda: step_fn(*next(batches)).asnumpy(), spec["repeat"], 1)
        result.update(step_synthetic_s=statistics.median(synthetic), step_pipeline_s=statistics.median(fed))
    return result


def measure(spec):
    """The measurement ``spec`` asks for (a model's train or infer call, or the data pipeline), as a result dict."""
    if spec["kind"] == "data":
        return measure_data(spec)
    return measure_onnxruntime(spec) if spec["impl"] == "onnxruntime" else measure_model(spec)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
