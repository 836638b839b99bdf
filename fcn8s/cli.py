"""Command line: parses arguments and dispatches to one job module per subcommand.

A user mistake (FCNError) prints ``fcn8s: error: ...`` and exits 2; ``--debug`` shows the traceback.
Jobs are imported only when run, so ``fcn8s --help`` does not load MindSpore.
"""
import argparse
import os
import signal
import sys

from . import __version__
from .config import CONFIG_DIR, KEYS, load_config
from .errors import FCNError

SHIPPED_CONFIGS = ", ".join(sorted(path.stem for path in CONFIG_DIR.glob("*.yaml")))


def _key_flag(parser, name, **extra):
    """Add config key ``name``'s own flag; its name, type, choices and help come from the key's declaration.

    The flag stores under the key's name (``args`` attribute ``device.target``), so build_config finds
    every such flag that was given; ``extra`` adds argparse options (``--resume``'s bare form).
    """
    key = KEYS[name]
    options = {"dest": name, "default": None, "help": f"{name}: {key.help}"}
    if key.type is bool:
        options["action"] = "store_true"
    else:
        options["type"] = key.item_type or key.type
        if key.item_type:
            options["nargs"] = "+"
        if key.choices:
            options["choices"] = key.choices
        else:
            options["metavar"] = key.flag.lstrip("-").upper().replace("-", "_")
    parser.add_argument(key.flag, **{**options, **extra})


def _config_options(parser, config_default=None):
    parser.add_argument("--config", "-c", default=config_default,
                        help=f"YAML config: a path, or the name of a shipped one ({SHIPPED_CONFIGS})"
                             + (f"; default {config_default}" if config_default else ""))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.01 (repeatable)")
    _key_flag(parser, "device.target")
    _key_flag(parser, "device.mode")


def _ckpt_options(parser, required=True, onnx=False):
    also = "; or a model from `fcn8s export --format ONNX` (.onnx), run by onnxruntime" if onnx else ""
    parser.add_argument("--ckpt", required=required, help=f"model checkpoint (FCN8s.ckpt or a training checkpoint){also}")


def get_args_parser():
    parser = argparse.ArgumentParser(prog="fcn8s", description="FCN-8s/16s/32s semantic segmentation on MindSpore.")
    parser.add_argument("--version", action="version", version=f"fcn8s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a config")
    _config_options(p, "voc")
    _key_flag(p, "train.output_dir")
    _key_flag(p, "train.resume", nargs="?", const="auto", metavar="CKPT")
    _key_flag(p, "train.pretrained", metavar="CKPT")
    _key_flag(p, "train.init", metavar="CKPT")
    _key_flag(p, "model.num_classes")
    p.add_argument("--force", action="store_true",
                   help="start a new run in an output folder that holds an earlier one (its files are removed)")

    p = sub.add_parser("eval", help="evaluate a checkpoint: PA, MPA, mIoU, FWIoU and per-class IoU")
    _config_options(p, "voc")
    _ckpt_options(p, onnx=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", help="MindRecord file to evaluate (default: data.val of the config)")
    source.add_argument("--voc-root", help="VOC root (VOCdevkit/VOC2012 or a folder containing it)")
    p.add_argument("--split", default="val", help="image-set list with --voc-root (default val)")
    for name in ("eval.scales", "eval.flip", "eval.window", "eval.stride"):
        _key_flag(p, name)
    p.add_argument("--output", help="folder for metrics.json and confusion_matrix.png")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--force", action="store_true", help="overwrite an earlier metrics.json and confusion matrix")

    p = sub.add_parser("infer", help="segment images: index PNG, colour mask and overlay for each")
    _config_options(p, "voc")
    _ckpt_options(p, onnx=True)
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", "-o", default="infer_out", help="output folder (default infer_out)")
    _key_flag(p, "infer.alpha")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")

    p = sub.add_parser("export", help="export a checkpoint to MINDIR (or ONNX, checked with onnxruntime)")
    _config_options(p, "voc")
    _ckpt_options(p)
    p.add_argument("--format", choices=("MINDIR", "ONNX"), default="MINDIR")
    p.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--output", "-o", required=True, help="output file (extension added if missing)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")

    p = sub.add_parser("convert", help="convert VOC 2012 (+ SBD) to MindRecord train/val files")
    p.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012, or a folder containing it")
    p.add_argument("--sbd-root", help="SBD benchmark_RELEASE (or its dataset/ folder): makes trainaug")
    p.add_argument("--output", "-o", required=True, help="output folder for train.mindrecord and val.mindrecord")
    p.add_argument("--shards", type=int, default=1, help="split each MindRecord into N files")
    p.add_argument("--num-classes", type=int, default=21, help="labels must be below this or 255")
    p.add_argument("--skip-bad", action="store_true", help="skip and report bad samples instead of stopping")
    p.add_argument("--force", action="store_true", help="overwrite existing MindRecord files")

    p = sub.add_parser("synth", help="write a small synthetic dataset in exact VOC 2012 layout")
    p.add_argument("--output", "-o", default="data/synth", help="folder that receives VOCdevkit/VOC2012")
    p.add_argument("--num-train", type=int, default=120)
    p.add_argument("--num-val", type=int, default=30)
    p.add_argument("--size", type=int, nargs=2, default=(160, 160), metavar=("H", "W"),
                   help="largest image size; images vary between 3/4 of it and it")
    p.add_argument("--num-classes", type=int, default=21, help="classes including background")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing dataset at --output")

    p = sub.add_parser("download", help="download datasets and published checkpoints (with checksums)")
    p.add_argument("names", nargs="*", default=["tutorial"],
                   help="what to fetch: tutorial (dataset + checkpoints), voc2012, sbd, checkpoints, all")
    p.add_argument("--cache-dir", default="data", help="where archives and checkpoints go (default data)")
    p.add_argument("--no-extract", action="store_true", help="keep archives packed")
    p.add_argument("--list", action="store_true", help="list known resources and exit")

    p = sub.add_parser("import-weights",
                       help="convert an ImageNet vgg16_bn of torchvision (.pth) or timm (.safetensors) to a backbone")
    p.add_argument("src", help="torchvision vgg16_bn state dict (vgg16_bn-6c64b313.pth) or timm model.safetensors")
    p.add_argument("--output", "-o", required=True, help="MindSpore checkpoint to write, for --pretrained")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")

    p = sub.add_parser("check-data", help="check a VOC root or MindRecord file for problems")
    p.add_argument("path", help="VOC root (VOCdevkit/VOC2012 or a folder containing it) or a .mindrecord file")
    p.add_argument("--num-classes", type=int, default=21)

    p = sub.add_parser("launch", help="fcn8s train as data-parallel worker processes (msrun), on one or more nodes",
                       description="Runs `fcn8s train TRAIN_ARGS` in --workers processes per node through msrun. "
                                   "Example: fcn8s launch --workers 2 -- -c demo --output-dir runs/dp")
    p.add_argument("--workers", type=int, required=True, help="worker processes on this node (one per device)")
    p.add_argument("--nodes", type=int, default=1, help="nodes in the job (default 1)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0 .. nodes-1 (default 0)")
    p.add_argument("--master-addr", default="127.0.0.1", help="address of node 0 (default 127.0.0.1)")
    p.add_argument("--master-port", type=int, help="scheduler port (default: a free one; 8118 with several nodes)")
    p.add_argument("--log-dir", default="msrun_logs", help="folder for worker_<rank>.log (default msrun_logs)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of fcn8s train")

    p = sub.add_parser("demo", help="synthetic data -> convert -> train -> eval -> infer, in one command")
    p.add_argument("--output-dir", default="demo_out", help="everything the demo makes goes here")
    p.add_argument("--config", "-c", default="demo", help="training config (default demo, the shipped demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="start over, replacing an earlier demo output")

    p = sub.add_parser("bench", help="measure train-step / inference / data-pipeline speed and memory")
    p.add_argument("--what", default="train,infer", help="comma list of train, infer, data")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0, help="model.width of the measured network")
    p.add_argument("--compare", default="",
                   help="comma list of torch, torch-channels-last (the PyTorch twin in NCHW / channels_last "
                        "memory), ms-kernels (our network on MindSpore's convolution kernels), "
                        "seed (the tutorial's definition), isa-default (oneDNN's own kernel choice), "
                        "onnxruntime (our ONNX export; inference only)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every implementation this many times, in turn with the others, each in a "
                        "fresh process; the rounds' times are pooled")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", choices=KEYS["device.mode"].choices, default=KEYS["device.mode"].default,
                   help="MindSpore execution mode of the measured network")
    p.add_argument("--data", help="MindRecord for the data benchmark (default: a synthetic one is made)")
    p.add_argument("--output", "-o", default="bench.json", help="JSON results file")
    p.add_argument("--force", action="store_true", help="overwrite an existing results file")
    return parser


def build_config(args):
    """The validated config for a job: YAML (--config), then --set, then the keys' own flags (see _key_flag)."""
    flags = [(name, value) for name, value in vars(args).items() if name in KEYS and value is not None]
    if getattr(args, "model.num_classes", None) is not None and getattr(args, "train.init", None):
        flags.append(("train.reinit_head", True))
    return load_config(args.config, list(args.overrides) + flags)


def _run(args):
    command = args.command
    cfg = build_config(args) if command in ("train", "eval", "infer", "export") else None
    if command == "train":
        from .train import train
        return train(cfg, force=args.force)
    if command == "eval":
        from .evaluate import evaluate
        return evaluate(cfg, args.ckpt, data=args.data, voc_root=args.voc_root, split=args.split,
                        output=args.output, limit=args.limit, force=args.force)
    if command == "infer":
        from .infer import infer
        return infer(cfg, args.ckpt, args.inputs, args.output, force=args.force)
    if command == "export":
        from .export import export
        return export(cfg, args.ckpt, args.output, fmt=args.format, batch=args.batch,
                      size=tuple(args.size), force=args.force)
    if command == "convert":
        from .data.mindrecord import convert_voc
        return convert_voc(args.voc_root, args.output, sbd_root=args.sbd_root, shards=args.shards,
                           num_classes=args.num_classes, skip_bad=args.skip_bad, force=args.force)
    if command == "synth":
        from .data.synth import make_synthetic_voc
        return make_synthetic_voc(args.output, num_train=args.num_train, num_val=args.num_val,
                                  size=tuple(args.size), num_classes=args.num_classes, seed=args.seed,
                                  force=args.force)
    if command == "download":
        from .data.download import download_resources
        return download_resources(args.names, args.cache_dir, extract=not args.no_extract, list_only=args.list)
    if command == "import-weights":
        from .weights_import import import_weights_file
        return import_weights_file(args.src, args.output, force=args.force)
    if command == "check-data":
        from .data.check import check_data
        return check_data(args.path, num_classes=args.num_classes)
    if command == "demo":
        from .demo import demo
        return demo(args.output_dir, config=args.config, overrides=args.overrides, force=args.force)
    if command == "launch":
        from .launch import launch
        train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
        # checked here, once, rather than failing in every worker
        train_cfg = build_config(get_args_parser().parse_args(["train", *train_args]))
        return launch(args.workers, train_args, train_cfg.train.output_dir, args.nodes, args.node_rank,
                      args.master_addr, args.master_port, args.log_dir)
    if command == "bench":
        from .bench import bench
        return bench(args)
    raise AssertionError(command)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    # MindSpore's INFO/WARNING chatter (missing Ascend libraries on CPU hosts, ...) buries our one-line
    # logs; errors still print, and GLOG_v=1 or 2 in the environment brings it back. MindSpore reads it
    # when it loads, so it is set here, before any job imports MindSpore, for this program and the
    # processes it starts (msrun workers, data loaders), not by `import fcn8s`.
    os.environ.setdefault("GLOG_v", "3")
    # past the file size limit (ulimit -f) a write then fails with EFBIG, reported in one line naming the
    # file, instead of SIGXFSZ killing the process
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # MindSpore answers Ctrl-C during a graph run by sending its own process SIGTERM (the C++ handler it
    # puts over Python's for SIGINT at every run), which would end the process on the spot: SIGTERM is
    # made a KeyboardInterrupt, so Ctrl-C (or a scheduler's SIGTERM) ends a job after the step it is in,
    # with the one line below and exit code 130
    signal.signal(signal.SIGTERM, _interrupted)
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = _run(args)
    except FCNError as exc:
        if args.debug:
            raise
        print(f"fcn8s: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:   # a job may say what it leaves (train: the checkpoint to resume from)
        print(f"fcn8s: {exc.args[0] if exc.args else 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
        return 0
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
