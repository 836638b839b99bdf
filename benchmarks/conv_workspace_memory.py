"""Where MindSpore's extra training memory goes: peak RSS of a train step of a plain conv stack.

A 3->64 convolution, then k-1 64->64 ones (3x3, BatchNorm, ReLU), a 1x1 head to 21 classes, at
256x256, three steps of nn.TrainOneStepCell; the 64->64 layers are nn.Conv2d ("native") or
FastGradConv2d with the flipped-kernel input gradient ("flipped"); each configuration in a fresh
process:
    python benchmarks/conv_workspace_memory.py [-o benchmarks/results/<cpu kind>/conv_workspace.json]
In graph mode every extra 64->64 layer costs far more than its activations: the gradient kernels
keep their im2col buffers (see RESULTS.md, "Memory that grows with the input").
"""
import argparse
import json
import resource
import subprocess
import sys

CONFIGS = [(2, 1, "graph", "native"), (4, 1, "graph", "native"), (2, 2, "graph", "native"),
           (4, 2, "graph", "native"), (6, 2, "graph", "native"), (4, 2, "pynative", "native"),
           (6, 2, "pynative", "native"), (2, 2, "graph", "flipped"), (4, 2, "graph", "flipped"),
           (6, 2, "graph", "flipped")]


def measure(convs, batch, mode, impl):
    import numpy as np
    import mindspore as ms
    from mindspore import nn
    from fcn8s.models.layers import FastGradConv2d
    from fcn8s.kernels.onednn import cap_mindspore_isa
    cap_mindspore_isa()   # MindSpore's kernels as every fcn8s run has them (before their first use)
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE, device_target="CPU")
    layers = [nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU()]
    for _ in range(convs - 1):
        conv = FastGradConv2d(64, 64, 3, input_grad="flipped") if impl == "flipped" else nn.Conv2d(64, 64, 3)
        layers += [conv, nn.BatchNorm2d(64), nn.ReLU()]
    net = nn.SequentialCell(layers + [nn.Conv2d(64, 21, 1)])
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.CrossEntropyLoss()),
                               nn.Momentum(net.trainable_params(), 0.01, 0.9))
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((batch, 3, 256, 256)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, 21, (batch, 256, 256)).astype(np.int32))
    for _ in range(3):
        step(images, labels).asnumpy()
    return {"convs": convs, "batch": batch, "mode": mode, "impl": impl,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="JSON file for the results")
    parser.add_argument("--one", nargs=4, metavar=("CONVS", "BATCH", "MODE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), int(args.one[1]), *args.one[2:])))
        return
    rows = []
    print(f"{'convolutions':>12}{'batch':>7}  {'mode':<9}{'64->64 layers':<14}{'peak RSS MiB':>13}")
    for convs, batch, mode, impl in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--one", str(convs), str(batch), mode, impl],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        print(f"{convs:>12}{batch:>7}  {mode:<9}{impl:<14}{row['peak_rss_mib']:>13}", flush=True)
    if args.output:
        from fcn8s.fileio import atomic_write_text
        atomic_write_text(args.output, json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
