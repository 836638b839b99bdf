"""The bad-input corpus: what a user can get wrong, and the one line fcn8s answers with.

Each case is (name, setup) where setup(folder) writes whatever files the case needs into ``folder``
and returns the fcn8s command-line arguments. tests/test_bad_inputs.py runs every case and checks
that it exits non-zero with exactly one ``fcn8s: error:`` line, no traceback and no new file;
scripts/error_table.py writes the same runs as the table in docs/errors.md.
"""
from pathlib import Path

TINY = ["--set", "model.width=0.0625", "--set", "model.num_classes=3", "--set", "device.target=CPU",
        "--set", "device.mode=pynative"]


def _file(folder, name, data):
    path = Path(folder) / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def _nan_checkpoint(folder):
    from fcn8s.checkpoint import save_checkpoint
    from fcn8s.models import FCN
    net = FCN("fcn8s", 3, 0.0625, kernels="native")
    weight = net.conv1[0].weight
    weight.set_data(weight.value() * float("nan"))
    save_checkpoint(net.get_parameters(), Path(folder) / "nan.ckpt")
    return ["eval", "-c", "demo", "--ckpt", str(Path(folder) / "nan.ckpt"), *TINY]


def _earlier_run(folder):
    (Path(folder) / "run").mkdir()
    _file(Path(folder) / "run", "log.jsonl", '{"epoch": 1, "step": 1, "loss": 1.0}\n')
    data = [f"data.{split}={_file(folder, f'{split}.mindrecord', '')}" for split in ("train", "val")]
    return ["train", "-c", "demo", "--output-dir", str(Path(folder) / "run"), *TINY,
            *sum((["--set", d] for d in data), [])]


CASES = [
    ("unknown config key", lambda d: ["train", "-c", "demo", "--set", "train.lrr=0.1"]),
    ("value of the wrong type", lambda d: ["train", "-c", "demo", "--set", "train.epochs=many"]),
    ("value out of range", lambda d: ["train", "-c", "demo", "--num-classes", "0"]),
    ("config file missing", lambda d: ["train", "-c", str(Path(d) / "nope.yaml")]),
    ("config file is a list", lambda d: ["train", "-c", _file(d, "list.yaml", "- train\n- lr\n")]),
    ("config file with a key twice", lambda d: ["train", "-c", _file(d, "twice.yaml", "train:\n  lr: 0.1\n  lr: 0.2\n")]),
    ("config file that is not YAML", lambda d: ["train", "-c", _file(d, "bad.yaml", "train: [1,\n")]),
    ("training into an earlier run", _earlier_run),
    ("training data missing", lambda d: ["train", "-c", "demo", "--output-dir", str(Path(d) / "new"), *TINY,
                                         "--set", f"data.train={Path(d) / 'none.mindrecord'}"]),
    ("checkpoint missing", lambda d: ["eval", "-c", "demo", "--ckpt", str(Path(d) / "none.ckpt"), *TINY]),
    ("checkpoint truncated", lambda d: ["eval", "-c", "demo", "--ckpt", _file(d, "cut.ckpt", b"\n\x05" + bytes(64)),
                                        *TINY]),
    ("checkpoint with NaN weights", _nan_checkpoint),
    ("ONNX file that is not ONNX", lambda d: ["eval", "-c", "demo", "--ckpt", _file(d, "m.onnx", "text"), *TINY]),
    ("no images to segment", lambda d: ["infer", "-c", "demo", "--ckpt", "x.ckpt", str(Path(d) / "none*.jpg")]),
    ("export into a folder that cannot be made", lambda d: ["export", "-c", "demo", "--ckpt", "x.ckpt", "-o",
                                                            str(Path(_file(d, "f", "")) / "sub" / "m.mindir"), *TINY]),
    ("convert without a VOC folder", lambda d: ["convert", "--voc-root", str(Path(d) / "VOCdevkit"), "-o",
                                                      str(Path(d) / "mr")]),
    ("import-weights of a file that is no network", lambda d: ["import-weights", _file(d, "w.pth", "not a pickle"),
                                                               "-o", str(Path(d) / "out.ckpt")]),
    ("bench of an unknown measurement", lambda d: ["bench", "--what", "speed", "-o", str(Path(d) / "b.json")]),
    ("launch with no workers", lambda d: ["launch", "--workers", "0", "--", "-c", "demo"]),
]
