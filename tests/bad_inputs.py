"""The bad-input corpus: what a user can get wrong, and the one line fcn8s answers with.

Each case is (name, setup) where setup(folder) writes whatever files the case needs into ``folder``
and returns the fcn8s command-line arguments. tests/test_bad_inputs.py runs every case and checks
that it exits non-zero with exactly one ``fcn8s: error:`` line, no traceback and no new file;
scripts/error_table.py writes the same runs as the table in docs/errors.md.
"""
import os
from pathlib import Path

TINY = ["--set", "model.width=0.0625", "--set", "model.num_classes=3", "--set", "device.target=CPU",
        "--set", "device.mode=pynative"]


def _file(folder, name, data):
    path = Path(folder) / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def _checkpoint(folder, name="w.ckpt", nan=False):
    """A checkpoint of the TINY network (with a NaN weight if ``nan``); its path."""
    from fcn8s.checkpoint import save_checkpoint
    from fcn8s.models import FCN
    net = FCN("fcn8s", 3, 0.0625, kernels="native")
    if nan:
        weight = net.conv1[0].weight
        weight.set_data(weight.value() * float("nan"))
    save_checkpoint(net.get_parameters(), Path(folder) / name)
    return str(Path(folder) / name)


_HELD_PORTS = []   # sockets kept open for the rest of the process: the ports the cases find taken


def _taken_port(port=8118):
    """``port`` on 127.0.0.1, listened on here (or already taken by another program: taken either way)."""
    import socket
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", port))
        held.listen()
        _HELD_PORTS.append(held)
    except OSError:
        held.close()
    return str(port)


def _nan_checkpoint(folder):
    return ["eval", "-c", "demo", "--ckpt", _checkpoint(folder, "nan.ckpt", nan=True), *TINY]


def _mindrecord(folder, name, rows=2, schema=None):
    """A MindRecord file ``name`` (and its .db) with ``rows`` rows of `fcn8s convert`'s columns, or of a one-int
    ``schema``; its path. The rows are not images: every case here is refused before one is decoded."""
    from mindspore.mindrecord import FileWriter
    from fcn8s.data.mindrecord import SCHEMA
    path = Path(folder) / name
    writer = FileWriter(str(path), shard_num=1, overwrite=True)
    writer.add_schema(schema or SCHEMA, "bad-input corpus")
    row = {column: 1 for column in schema} if schema else {"file_name": "a", "data": b"jpeg", "label": b"png"}
    if rows:
        writer.write_raw_data([row] * rows)
    writer.commit()
    return str(path)


def _damaged_mindrecord(folder, name, part, size=None):
    """MindRecord ``name`` whose data file (``part`` "") or .db index (".db") is cut to ``size`` bytes (a copy
    cut short, a disk that filled up), or removed with ``size`` None; the data file's path."""
    path = _mindrecord(folder, name)
    if size is None:
        os.remove(path + part)
    else:
        os.truncate(path + part, size)
    return path


def _renamed(folder):
    written = _mindrecord(folder, "a.mindrecord")
    for suffix in ("", ".db"):
        os.rename(written + suffix, Path(folder) / f"val.mindrecord{suffix}")
    return str(Path(folder) / "val.mindrecord")


def _train(folder, train, val=None):
    """fcn8s train on MindRecord files ``train`` and ``val`` (a good one if None)."""
    val = val or _mindrecord(folder, "val.mindrecord")
    return ["train", "-c", "demo", "--output-dir", str(Path(folder) / "run"), *TINY,
            "--set", f"data.train={train}", "--set", f"data.val={val}"]


def _eval(folder, data):
    """fcn8s eval of a TINY checkpoint on MindRecord file ``data``."""
    return ["eval", "-c", "demo", "--ckpt", _checkpoint(folder), "--data", data, *TINY]


def _earlier_run(folder):
    (Path(folder) / "run").mkdir()
    _file(Path(folder) / "run", "log.jsonl", '{"epoch": 1, "step": 1, "loss": 1.0}\n')
    return _train(folder, _mindrecord(folder, "train.mindrecord"))


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
    ("training data with other columns", lambda d: _train(d, _mindrecord(d, "train.mindrecord",
                                                                         schema={"x": {"type": "int32"}}))),
    ("training data cut short", lambda d: _train(d, _damaged_mindrecord(d, "train.mindrecord", "", 20_000_000))),
    ("training set smaller than one batch", lambda d: _train(d, _mindrecord(d, "train.mindrecord", rows=3))),
    ("validation set with no images", lambda d: _train(d, _mindrecord(d, "train.mindrecord"),
                                                       _mindrecord(d, "val.mindrecord", rows=0))),
    ("evaluation set with no images", lambda d: _eval(d, _mindrecord(d, "val.mindrecord", rows=0))),
    ("MindRecord without its .db index", lambda d: _eval(d, _damaged_mindrecord(d, "val.mindrecord", ".db"))),
    ("MindRecord with its .db index cut short", lambda d: _eval(d, _damaged_mindrecord(d, "val.mindrecord", ".db",
                                                                                       3000))),
    ("MindRecord renamed after it was written", lambda d: _eval(d, _renamed(d))),
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
    ("bench with no rounds", lambda d: ["bench", "--rounds", "0", "-o", str(Path(d) / "b.json")]),
    ("launch with no workers", lambda d: ["launch", "--workers", "0", "--", "-c", "demo"]),
    ("launch with an unknown train key", lambda d: ["launch", "--workers", "2", "--log-dir", str(Path(d) / "logs"),
                                                     "--", "-c", "demo", "--set", "train.epoch=3"]),
    ("launch on a port in use", lambda d: ["launch", "--workers", "2", "--master-port", _taken_port(), "--log-dir",
                                           str(Path(d) / "logs"), "--", "-c", "demo"]),
    ("launch node 0 with another machine's address", lambda d: [
        "launch", "--workers", "1", "--nodes", "2", "--node-rank", "0", "--master-addr", "203.0.113.7", "--log-dir",
        str(Path(d) / "logs"), "--", "-c", "demo"]),
]
