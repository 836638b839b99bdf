"""FCN-8s/16s/32s in PyTorch with exactly fcn8s.models.FCN's layers and parameter names (optional extra).

`fcn8s bench --compare torch,torch-channels-last` runs this module in a fresh subprocess, so that
neither framework's threads or memory colour the other's numbers:

    python -m fcn8s.torch_twin --what train|infer --batch 2 --size 256 [--width 1.0]
        [--repeat 5] [--warmup 2] [--threads N] [--channels-last]

and reads the one JSON line it prints on stdout (logs go to stderr). Before timing, the bench checks
that this twin gives our logits: ``--check CKPT --check-input NPY --check-output NPY [--width W]
[--channels-last]`` loads one of our MindSpore checkpoints, runs it on the saved images and saves the
logits. PyTorch is not a dependency of fcn8s: install it by hand (`pip install torch==2.13.0`) to use
this module. It ships in the package so that an installed fcn8s can run it, but nothing in fcn8s
imports it: torch is loaded only where this module runs. torch is imported before anything of ours but
the package's ``__init__`` (a version string), as a user's script would; only fcn8s.architecture and
fcn8s.host's helpers follow (no MindSpore) unless asked to load a MindSpore checkpoint, so the peak
RSS it reports is PyTorch's alone.

Transposed convolutions: MindSpore's ``nn.Conv2dTranspose(k, stride=s, pad_mode='same')``
gives an output of exactly ``s`` times the input and, for our k = 2s, equals PyTorch's
``ConvTranspose2d(k, stride=s, padding=s // 2)`` (= k/2 - s/2) to float rounding, with no
output_padding or cropping: checked numerically for s = 2, 8, 16, 32 (relative difference
< 2e-7). Both store the weight as (in, out, k, k), so checkpoint tensors copy over unchanged.
"""
# PyTorch first, as a user's script imports it: nothing of ours runs before it
import torch
from torch import nn
import torch.nn.functional as F

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile

import numpy as np

# framework-free: the same layout, width rule and FLOP count as the MindSpore network, and what the
# bench records of every measuring process
from fcn8s.architecture import ARCHS, FC_CHANNELS, STRIDE, VGG16_BLOCKS, fcn_forward_gflop, head_layers, scaled
from fcn8s.host import kernel_environment, peak_rss_mib, thread_budget, timed

NUM_CLASSES = 21    # PASCAL VOC, the bench's class count
IGNORE_INDEX = 255
# MindSpore BatchNorm parameter name -> PyTorch state_dict name
BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}

log = logging.getLogger("torch_twin")


def conv_bn_relu_block(in_channels, out_channels, num_convs=1, kernel_size=3):
    """Sequential [Conv, BN, ReLU] * num_convs: parameters ``<block>.0.weight``, ``<block>.1.weight``..."""
    layers = []
    for i in range(num_convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                      padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-5),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def upsample(num_classes, factor):
    """x``factor`` transposed convolution, aligned as MindSpore's pad_mode='same' (see the module docstring)."""
    return nn.ConvTranspose2d(num_classes, num_classes, 2 * factor, stride=factor, padding=factor // 2, bias=False)


class TorchFCN(nn.Module):
    def __init__(self, arch="fcn8s", num_classes=21, width=1.0):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.arch = arch
        channels, in_channels = [], 3
        for i, (out_channels, num_convs) in enumerate(VGG16_BLOCKS, start=1):
            out_channels = scaled(out_channels, width)
            setattr(self, f"conv{i}", conv_bn_relu_block(in_channels, out_channels, num_convs))
            channels.append(out_channels)
            in_channels = out_channels
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        fc = scaled(FC_CHANNELS, width)
        self.conv6 = conv_bn_relu_block(channels[4], fc, kernel_size=7)
        self.conv7 = conv_bn_relu_block(fc, fc, kernel_size=1)
        self.score_fr = nn.Conv2d(fc, num_classes, 1, bias=False)
        self.head = head_layers(arch)
        for layer in self.head:
            setattr(self, layer.name, upsample(num_classes, layer.factor) if layer.factor
                    else nn.Conv2d(channels[layer.pool - 1], num_classes, 1, bias=False))

    def forward(self, x):
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = (-h) % STRIDE, (-w) % STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        pools = []
        for block in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = self.pool(block(x))
            pools.append(x)
        out = self.score_fr(self.conv7(self.conv6(x)))
        for layer in self.head:
            if layer.factor:
                out = getattr(self, layer.name)(out)
            else:
                out = out + getattr(self, layer.name)(pools[layer.pool - 1])
        if pad_h or pad_w:
            out = out[:, :, :h, :w]
        return out


def torch_name(mindspore_name):
    """The state_dict key of a MindSpore parameter name (``conv1.1.gamma`` -> ``conv1.1.weight``)."""
    prefix, _, leaf = mindspore_name.rpartition(".")
    return f"{prefix}.{BN_NAMES.get(leaf, leaf)}"


def load_mindspore_checkpoint(model, ckpt_path):
    """Copy the weights of one of our MindSpore checkpoints into ``model`` (a TorchFCN); returns ``model``.

    Entries the model has no tensor for (optimizer ``moments.*``, ``learning_rate``,
    ``global_step``, ``momentum``, ``train_state.*``) are ignored; every parameter and BN
    statistic of the model must be in the file with the right shape (BN's
    ``num_batches_tracked`` is PyTorch-only and is left as it is).
    """
    import mindspore as ms
    wanted = model.state_dict()
    state = {}
    for name, value in ms.load_checkpoint(str(ckpt_path)).items():
        key = torch_name(name)
        if key in wanted:
            state[key] = torch.from_numpy(value.asnumpy())
    missing = [k for k in wanted if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{ckpt_path}: {len(missing)} tensors of the {model.arch} model are missing: "
                         + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    model.load_state_dict(state, strict=False)   # a shape mismatch still raises
    return model


def onednn_report(model, images):
    """(oneDNN's ISA line, sorted names of the convolution kernels it ran) for one forward of ``model``.

    Which kernels PyTorch actually ran (``brg_conv_fwd:avx512_core``, ...), whatever the environment
    capped; (None, []) where it ran no oneDNN convolution. oneDNN's verbose lines go to C's stdout,
    so fd 1 points at a file meanwhile and the JSON line stays alone on stdout.
    """
    sys.stdout.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1)
        os.dup2(sink.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), torch.inference_mode():
                model(images)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        sink.seek(0)
        lines = sink.read().decode(errors="replace").splitlines()
    isa = next((line.partition(",isa:")[2] for line in lines if ",isa:" in line), None)
    fields = [line.split(",") for line in lines]
    kernels = {f[f.index("convolution") + 1] for f in fields if "exec" in f and "convolution" in f}
    return isa, sorted(kernels)


def torch_setup(model, images):
    """What decides PyTorch's CPU kernels in this process; ``model`` runs once on ``images`` to see them."""
    parallel = torch.__config__.parallel_info().splitlines()
    isa, kernels = onednn_report(model, images)
    return {
        "mkldnn_available": torch.backends.mkldnn.is_available(), "mkldnn_enabled": torch.backends.mkldnn.enabled,
        "parallel_backend": next((line.partition(":")[2].strip() for line in parallel
                                  if line.startswith("ATen parallel backend")), None),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "onednn_isa": isa, "onednn_convolutions": kernels,
    }


def to_channels_last(model, images):
    """``model`` and ``images`` in NHWC memory, the layout PyTorch's oneDNN convolutions run natively on CPU."""
    return model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)


def make_step(what, batch, size, width, channels_last):
    """(step, model, images): one train step (SGD with momentum 0.9 and weight decay, as ours) or inference forward
    of FCN-8s on random inputs, as a PyTorch user writes it."""
    torch.manual_seed(0)
    model = TorchFCN("fcn8s", NUM_CLASSES, width)
    images = torch.randn(batch, 3, size, size)
    if channels_last:
        model, images = to_channels_last(model, images)
    if what == "train":
        labels = torch.randint(0, NUM_CLASSES, (batch, size, size), dtype=torch.int64)
        labels[torch.rand(batch, size, size) < 0.05] = IGNORE_INDEX   # unlabelled borders, as in VOC
        criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(images)
    return step, model, images


def bench(what, batch, size, width, repeat, warmup, threads, channels_last):
    """Time train steps or inference forwards of FCN-8s; the result as a dict (the JSON line)."""
    torch.set_num_threads(threads)
    step, model, images = make_step(what, batch, size, width, channels_last)
    first, times = timed(step, repeat, warmup)
    log.info("steps: %s s", ", ".join(f"{t:.3f}" for t in times))
    gflop = fcn_forward_gflop("fcn8s", NUM_CLASSES, width, batch, size, size) * (3 if what == "train" else 1)
    return {
        "framework": "torch", "version": torch.__version__, "what": what, "batch": batch, "size": size,
        "width": width, "threads": torch.get_num_threads(), "first_call_s": first, "times_s": times, "median_s": statistics.median(times),
        "peak_rss_mib": peak_rss_mib(), "gflop": gflop,
        "env": kernel_environment(), "torch": torch_setup(model, images),
    }


def save_logits(ckpt_path, images_path, logits_path, width, channels_last):
    """Run the twin loaded with one of our checkpoints on saved images and save its logits (the bench's check)."""
    model = load_mindspore_checkpoint(TorchFCN("fcn8s", NUM_CLASSES, width), ckpt_path).eval()
    images = torch.from_numpy(np.load(images_path))
    if channels_last:
        model, images = to_channels_last(model, images)
    with torch.inference_mode():
        np.save(logits_path, model(images).contiguous().numpy())


def get_args_parser():
    parser = argparse.ArgumentParser(description="Time PyTorch FCN-8s train steps or inference on CPU; "
                                                 "prints one JSON line.")
    parser.add_argument("--what", choices=("train", "infer"), help="required unless --check")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=256, help="square input side in pixels")
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--repeat", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=thread_budget()[0],
                        help="torch.set_num_threads (default: host.thread_budget, as our side)")
    parser.add_argument("--channels-last", action="store_true",
                        help="model and inputs in torch.channels_last memory format")
    parser.add_argument("--check", metavar="CKPT",
                        help="instead of timing: load this MindSpore checkpoint, save the logits of --check-input")
    parser.add_argument("--check-input", metavar="NPY", help="images (N, 3, H, W) float32 for --check")
    parser.add_argument("--check-output", metavar="NPY", help="where --check saves the logits")
    return parser


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.check:
        if not (args.check_input and args.check_output):
            parser.error("--check needs --check-input and --check-output")
        save_logits(args.check, args.check_input, args.check_output, args.width, args.channels_last)
        return
    if not args.what:
        parser.error("--what is required")
    if min(args.batch, args.size, args.repeat, args.threads) < 1 or args.warmup < 0 or args.width <= 0:
        parser.error("--batch, --size, --repeat, --threads and --width must be positive, --warmup >= 0")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="torch_twin: %(message)s")
    result = bench(args.what, args.batch, args.size, args.width, args.repeat, args.warmup, args.threads,
                   args.channels_last)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
