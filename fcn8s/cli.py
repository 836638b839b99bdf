"""Command line: parses arguments and dispatches to one job module per subcommand.

A user mistake (FCNError) prints ``fcn8s: error: ...`` and exits 2; ``--debug`` shows the traceback.
Jobs are imported only when run, so ``fcn8s --help`` does not load MindSpore.
"""
import argparse
import sys

from . import __version__
from .errors import FCNError


def _config_options(parser, config_default=None):
    parser.add_argument("--config", "-c", default=config_default,
                        help="YAML config (a path, or a name from configs/ such as voc)"
                             + (f"; default {config_default}" if config_default else ""))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.lr=0.01 (repeatable)")
    parser.add_argument("--device", choices=("auto", "Ascend", "GPU", "CPU"),
                        help="device.target: auto tries Ascend, then GPU, then CPU")
    parser.add_argument("--mode", choices=("graph", "pynative"), help="device.mode")


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
    p.add_argument("--output-dir", help="train.output_dir: where checkpoints, logs and plots go")
    p.add_argument("--resume", nargs="?", const="auto", metavar="CKPT",
                   help="continue from CKPT, or from the run's last.ckpt when no path is given")
    p.add_argument("--pretrained", help="backbone checkpoint (fcn8s_vgg16_pretrain.ckpt format)")
    p.add_argument("--init", help="full model checkpoint to start from")
    p.add_argument("--num-classes", type=int, help="model.num_classes; with --init re-initialises the head")

    p = sub.add_parser("eval", help="evaluate a checkpoint: PA, MPA, mIoU, FWIoU and per-class IoU")
    _config_options(p, "voc")
    _ckpt_options(p, onnx=True)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", help="MindRecord file to evaluate (default: data.val of the config)")
    source.add_argument("--voc-root", help="VOC root (VOCdevkit/VOC2012 or a folder containing it)")
    p.add_argument("--split", default="val", help="image-set list with --voc-root (default val)")
    p.add_argument("--scales", type=float, nargs="+", help="eval.scales: test-time scales, e.g. 0.75 1 1.25")
    p.add_argument("--flip", action="store_true", default=None, help="eval.flip: add horizontally flipped logits")
    p.add_argument("--window", type=int, help="eval.window: sliding-window size in pixels")
    p.add_argument("--stride", type=int, help="eval.stride: sliding-window stride")
    p.add_argument("--output", help="folder for metrics.json and confusion_matrix.png")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")

    p = sub.add_parser("infer", help="segment images: index PNG, colour mask and overlay for each")
    _config_options(p, "voc")
    _ckpt_options(p, onnx=True)
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", "-o", default="infer_out", help="output folder (default infer_out)")
    p.add_argument("--alpha", type=float, help="infer.alpha: overlay opacity of the mask")
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

    p = sub.add_parser("check-data", help="check a VOC root or MindRecord file for problems")
    p.add_argument("path", help="VOC root (VOCdevkit/VOC2012 or a folder containing it) or a .mindrecord file")
    p.add_argument("--num-classes", type=int, default=21)

    p = sub.add_parser("demo", help="synthetic data -> convert -> train -> eval -> infer, in one command")
    p.add_argument("--output-dir", default="demo_out", help="everything the demo makes goes here")
    p.add_argument("--config", "-c", default="demo", help="training config (default configs/demo.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--force", action="store_true", help="start over, replacing an earlier demo output")

    p = sub.add_parser("bench", help="measure train-step / inference / data-pipeline speed and memory")
    p.add_argument("--what", default="train,infer", help="comma list of train, infer, data")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--width", type=float, default=1.0, help="model.width of the measured network")
    p.add_argument("--compare", default="",
                   help="comma list of torch, ms-kernels (our network on MindSpore's convolution kernels), "
                        "seed (the tutorial's definition), isa-default (oneDNN's own kernel choice), "
                        "onnxruntime (our ONNX export; inference only)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    p.add_argument("--data", help="MindRecord for the data benchmark (default: a synthetic one is made)")
    p.add_argument("--output", "-o", default="bench.json", help="JSON results file")
    return parser


def build_config(args):
    """The validated config for a job: YAML (--config), then --set, then the dedicated flags."""
    from .config import load_config
    overrides = list(args.overrides)
    flag_keys = {
        "device": "device.target", "mode": "device.mode", "output_dir": "train.output_dir",
        "resume": "train.resume", "pretrained": "train.pretrained", "init": "train.init",
        "num_classes": "model.num_classes", "scales": "eval.scales", "flip": "eval.flip",
        "window": "eval.window", "stride": "eval.stride", "alpha": "infer.alpha",
    }
    for attr, key in flag_keys.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append((key, list(value) if isinstance(value, (list, tuple)) else value))
    if getattr(args, "num_classes", None) is not None and getattr(args, "init", None):
        overrides.append(("train.reinit_head", True))
    return load_config(args.config, overrides)


def _run(args):
    command = args.command
    cfg = build_config(args) if command in ("train", "eval", "infer", "export") else None
    if command == "train":
        from .train import train
        return train(cfg)
    if command == "eval":
        from .evaluate import evaluate
        return evaluate(cfg, args.ckpt, data=args.data, voc_root=args.voc_root, split=args.split,
                        output=args.output, limit=args.limit)
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
    if command == "check-data":
        from .data.check import check_data
        return check_data(args.path, num_classes=args.num_classes)
    if command == "demo":
        from .demo import demo
        return demo(args.output_dir, config=args.config, overrides=args.overrides, force=args.force)
    if command == "bench":
        from .bench import bench
        return bench(args)
    raise AssertionError(command)


def main(argv=None):
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
    except KeyboardInterrupt:
        print("fcn8s: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
        return 0
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
