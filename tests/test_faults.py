"""Faults: kill -9 in the middle of convert, export, eval and infer; a full disk or a file size limit while
convert and export write; images of 1x1, 1x5000 and 10000x10000 pixels; a training set smaller than a batch
and damaged MindRecord files that the bad-input corpus (tests/bad_inputs.py) cannot hold."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
from collections import namedtuple

import cv2
import mindspore as ms
import numpy as np
import pytest
from PIL import Image

import fcn8s.infer as infer_module
import fcn8s.predict as predict_module
from bad_inputs import TINY   # tests/ is on sys.path (pytest's rootdir-relative conftest import)
from fcn8s.checkpoint import load_weights, save_checkpoint
from fcn8s.cli import main
from fcn8s.config import load_config
from fcn8s.data.mindrecord import check_mindrecord, convert_voc
from fcn8s.data.preprocess import Preprocessor
from fcn8s.data.synth import make_synthetic_voc
from fcn8s.errors import FCNError
from fcn8s.models import FCN, build_model
from fcn8s.predict import Predictor
from test_evaluate import normalised_by_hand

CANVAS = ["--set", "eval.canvas=64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic VOC folder (6 train, 2 val images of up to 48x48, 3 classes), its MindRecord files and a
    checkpoint of the TINY network."""
    root = tmp_path_factory.mktemp("faults")
    make_synthetic_voc(root, num_train=6, num_val=2, size=(48, 48), num_classes=3, seed=2)
    convert_voc(root / "VOCdevkit", root / "mr", num_classes=3)
    ms.set_seed(3)
    save_checkpoint(FCN("fcn8s", 3, 0.0625).get_parameters(), root / "w.ckpt")
    return root


def _val_images(root):
    voc = root / "VOCdevkit" / "VOC2012"
    return [str(voc / "JPEGImages" / f"{i}.jpg") for i in (voc / "ImageSets/Segmentation/val.txt").read_text().split()]


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fcn8s: error: ") and "Traceback" not in err, err
    return err


# Run in a subprocess: fcn8s ARGS, killed by SIGKILL (what `kill -9` sends) at the NTH call of TARGET whose
# second argument's file name matches PATTERN. A kill at os.replace comes halfway through a write: the
# temporary file it was about to rename is first cut to half.
_KILLED_AT = """
import fnmatch, importlib, os, signal, sys
from fcn8s.cli import main
target, pattern, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
module, _, name = target.rpartition(".")
owner = importlib.import_module(module)
real, calls = getattr(owner, name), []

def killed(*args, **kwargs):
    if fnmatch.fnmatch(os.path.basename(str(args[1])), pattern):
        calls.append(args)
        if len(calls) == nth:
            if name == "replace":
                os.truncate(args[0], os.path.getsize(args[0]) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(owner, name, killed)
sys.exit(main(sys.argv[4:]))
"""


def _killed(args, target, pattern="*", nth=1):
    done = subprocess.run([sys.executable, "-c", _KILLED_AT, target, pattern, str(nth), *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_convert_killed_midway_leaves_only_its_staging_folder_and_reruns_without_force(data, tmp_path):
    out = tmp_path / "mr"
    args = ["convert", "--voc-root", data / "VOCdevkit", "-o", out, "--num-classes", "3"]
    _killed(args, "fcn8s.data.mindrecord.load_sample", nth=7)   # the first val image, after 6 train images
    left = list(out.iterdir())
    assert len(left) == 1 and re.fullmatch(r"\.convert\.fcn8s-\d+\.\w{8}", left[0].name), left
    assert _names(left[0]) == ["train.mindrecord", "train.mindrecord.db", "train_ids.txt"]   # staged, not in place
    # a convert that is still running (its pid alive) keeps its staging folder
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = out / f".convert.fcn8s-{running.pid}.abcdefgh"
        live.mkdir()
        assert main([str(a) for a in args]) == 0                  # no --force: nothing of a final name was there
        assert _names(out) == sorted([live.name, "train.mindrecord", "train.mindrecord.db", "train_ids.txt",
                                      "val.mindrecord", "val.mindrecord.db", "val_ids.txt"])
    finally:
        running.kill()
        running.wait()
    assert (out / "train_ids.txt").read_text().split() == (data / "mr" / "train_ids.txt").read_text().split()
    check_mindrecord(out / "train.mindrecord")


def test_export_killed_while_writing_leaves_no_model_and_reruns(data, tmp_path):
    out = tmp_path / "m.mindir"
    args = ["export", "--ckpt", data / "w.ckpt", "-o", out, "--size", "64", "64", *TINY]
    _killed(args, "os.replace", "m.mindir")
    assert not out.exists()
    assert [name.startswith(".m.mindir.fcn8s-") for name in _names(tmp_path)] == [True]   # its staging folder
    assert main([str(a) for a in args]) == 0                      # verified against the network, as always
    assert _names(tmp_path) == ["m.mindir"]                       # the killed run's staging folder is gone


def test_eval_killed_while_writing_its_report_leaves_none_and_reruns(data, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", "-c", "demo", "--ckpt", data / "w.ckpt", "--data", data / "mr" / "val.mindrecord", "--output",
            out, *TINY, *CANVAS]
    _killed(args, "os.replace", "metrics.json")
    assert [re.fullmatch(r"\.metrics\.json\.fcn8s-\d+\.\w{8}\.tmp\.json", name) is not None
            for name in _names(out)] == [True]                    # half of it, under its temporary name
    assert main([str(a) for a in args]) == 0                      # no --force: there was no report
    assert _names(out) == ["confusion_matrix.png", "metrics.json"]
    assert json.loads((out / "metrics.json").read_text())["images"] == 2


def test_infer_killed_between_pictures_leaves_whole_files_only(data, tmp_path, capsys):
    out = tmp_path / "out"
    images = _val_images(data)
    args = ["infer", "-c", "demo", "--ckpt", data / "w.ckpt", *images, "-o", out, *TINY, *CANVAS]
    _killed(args, "os.replace", "*_overlay.png")                  # the first image's third picture
    stem = os.path.basename(images[0])[:-4]
    finals = [name for name in _names(out) if not name.startswith(".")]
    assert finals == [f"{stem}_color.png", f"{stem}_label.png"]
    for name in finals:
        with Image.open(out / name) as picture:
            picture.load()                                        # whole: decodes to its end
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2                      # the pictures already there are not replaced
    assert _one_error_line(capsys) == f"fcn8s: error: {out / f'{stem}_label.png'}: already exists " \
                                      f"(use --force to overwrite)"
    assert main([str(a) for a in args] + ["--force"]) == 0
    assert _names(out) == sorted(f"{os.path.basename(i)[:-4]}_{kind}.png" for i in images
                                 for kind in ("label", "color", "overlay"))   # the half picture's temp is gone


# Run in a subprocess: fcn8s ARGS under a file size limit of LIMIT bytes, as `ulimit -f` sets it (fcn8s's
# main ignores SIGXFSZ, so that write() fails with EFBIG, as it fails with ENOSPC on a full disk, instead of
# the signal killing the process).
_SIZE_LIMITED = """
import resource, sys
from fcn8s.cli import main
import mindspore.mindrecord  # noqa: F401 (loaded before the limit, as in a program that runs)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(main(sys.argv[2:]))
"""


def _size_limited(limit, args):
    done = subprocess.run([sys.executable, "-c", _SIZE_LIMITED, str(limit), *map(str, args)], capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fcn8s: error: "), done.stderr[-3000:]
    return lines[0]


def _earlier(folder, *names):
    """Files standing for the outputs of an earlier run; {name: bytes}."""
    for name in names:
        (folder / name).write_bytes(f"earlier {name}".encode())
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_convert_past_the_file_size_limit_is_one_line_and_keeps_the_earlier_files(data, tmp_path):
    before = _earlier(tmp_path, "train.mindrecord", "train.mindrecord.db", "train_ids.txt")
    line = _size_limited(1_000_000, ["convert", "--voc-root", data / "VOCdevkit", "-o", tmp_path, "--num-classes",
                                     "3", "--force"])
    assert line.startswith(f"fcn8s: error: {tmp_path / 'train.mindrecord'}: cannot write (File too large")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before   # no staging folder, nothing replaced


def test_convert_onto_a_full_disk_names_the_file_and_the_reason(data, tmp_path, monkeypatch):
    """MindSpore's writer says only 'Failed to seekp file' when the disk is full: the free space says why."""
    from mindspore.mindrecord import FileWriter
    import fcn8s.fileio as fileio

    def disk_full(self):
        raise RuntimeError("Exception thrown from dataset pipeline.\n[ERROR] [Internal ERROR] Failed to seekp file.")

    monkeypatch.setattr(FileWriter, "commit", disk_full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(FCNError) as error:
        convert_voc(data / "VOCdevkit", tmp_path, num_classes=3)
    assert str(error.value) == f"{tmp_path / 'train.mindrecord'}: cannot write (No space left on device: 1.0 MB free)"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda path: usage(10**9, 0, 10**9))   # room, another cause
    with pytest.raises(FCNError, match=r"train.mindrecord: cannot write \(\[Internal ERROR\] Failed to seekp file.\)"):
        convert_voc(data / "VOCdevkit", tmp_path, num_classes=3)


@pytest.mark.parametrize("fmt", ["MINDIR", "ONNX"])
def test_export_past_the_file_size_limit_is_one_line_and_keeps_the_earlier_model(fmt, data, tmp_path):
    if fmt == "ONNX":
        pytest.importorskip("onnxruntime")
    name = f"m.{fmt.lower()}"
    before = _earlier(tmp_path, name)
    line = _size_limited(500_000, ["export", "--ckpt", data / "w.ckpt", "-o", tmp_path / name, "--format", fmt,
                                   "--size", "64", "64", "--force", *TINY])   # the model is about 2 MB
    assert line == f"fcn8s: error: {tmp_path / name}: cannot write (File too large)"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_export_onto_a_full_disk_names_the_file_and_keeps_the_earlier_model(data, tmp_path, monkeypatch, capsys):
    def disk_full(net, *inputs, file_name, file_format):
        with open(file_name + ".mindir", "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ms, "export", disk_full)
    before = _earlier(tmp_path, "m.mindir")
    assert main(["export", "--ckpt", str(data / "w.ckpt"), "-o", str(tmp_path / "m.mindir"), "--size", "64", "64",
                 "--force", *TINY]) == 2
    assert _one_error_line(capsys) == f"fcn8s: error: {tmp_path / 'm.mindir'}: cannot write (No space left on device)"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _tiny_config(*overrides):
    return load_config("demo", ["model.width=0.0625", "model.num_classes=3", "eval.canvas=64", "device.target=CPU",
                                "device.mode=pynative", *overrides])


def test_a_1x1_image_and_a_1x5000_strip_are_segmented_like_the_padded_network(data, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(4)
    shapes = {"dot": (1, 1), "strip": (1, 5000)}
    for name, (h, w) in shapes.items():
        cv2.imwrite(str(src / f"{name}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    assert main(["infer", "-c", "demo", "--ckpt", str(data / "w.ckpt"), str(src), "-o", str(tmp_path / "out"),
                 *TINY, *CANVAS]) == 0
    net = build_model(_tiny_config().model)
    load_weights(net, data / "w.ckpt")
    net.set_train(False)
    for name, (h, w) in shapes.items():
        # by hand: normalised, padded at the bottom/right onto the 64 canvas, grown to a multiple of 32
        padded = np.zeros((1, 3, 64, -(-max(w, 64) // 32) * 32), np.float32)
        padded[0, :, :h, :w] = normalised_by_hand(cv2.imread(str(src / f"{name}.png")))
        expected = net(ms.Tensor(padded)).asnumpy()[0, :, :h, :w].argmax(0)
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "out" / f"{name}_label.png")), expected)


class _Recording:
    """A model without spatial context that records the input shapes it is given."""
    input_size = None

    def __init__(self):
        self.shapes = []

    def forward(self, batch):
        self.shapes.append(batch.shape)
        return np.repeat(batch[:, :1], 3, axis=1)


def test_an_image_past_max_pixels_is_segmented_in_windows_of_the_canvas(rng):
    image = rng.integers(0, 256, (70, 300, 3), dtype=np.uint8)
    model = _Recording()
    Predictor(model, 3, Preprocessor((0, 0, 0), (1, 1, 1)), canvas=64, max_pixels=96 * 320).logits(image)
    assert model.shapes == [(1, 3, 96, 320)]                      # padded whole: just within the limit
    model.shapes.clear()
    Predictor(model, 3, Preprocessor((0, 0, 0), (1, 1, 1)), canvas=64, max_pixels=96 * 320 - 1).logits(image)
    assert len(model.shapes) == 2 * 7 and set(model.shapes) == {(1, 3, 64, 64)}   # windows of the canvas


def test_automatic_windows_give_the_pixels_of_an_explicit_window(data, tmp_path):
    cv2.imwrite(str(tmp_path / "wide.png"), np.random.default_rng(5).integers(0, 256, (70, 300, 3), dtype=np.uint8))
    run = ["infer", "-c", "demo", "--ckpt", str(data / "w.ckpt"), str(tmp_path / "wide.png"), *TINY, *CANVAS]
    assert main([*run, "-o", str(tmp_path / "auto"), "--set", "eval.max_pixels=8192"]) == 0
    assert main([*run, "-o", str(tmp_path / "window"), "--set", "eval.window=64"]) == 0
    auto, window = (np.array(Image.open(tmp_path / kind / "wide_label.png")) for kind in ("auto", "window"))
    assert auto.shape == (70, 300)
    np.testing.assert_array_equal(auto, window)


def test_a_10000x10000_image_is_refused_before_it_is_decoded_with_the_memory_it_needs(data, tmp_path, monkeypatch,
                                                                                      logs):
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(cv2.imencode(".jpg", np.zeros((10000, 10000, 3), np.uint8))[1].tobytes())
    monkeypatch.setattr(infer_module, "open_fully", lambda *args: pytest.fail("the image was decoded"))
    run = ["infer", "-c", "demo", "--ckpt", str(data / "w.ckpt"), str(huge), "-o", str(tmp_path / "out"), *TINY]
    # (90 + 4 x 3 classes) bytes a pixel: about 10.1 GB, more than 1 GB
    assert main([*run, "--set", "eval.max_memory=1"]) == 1
    assert f"skipped {huge}: a 10000x10000 image needs about 10.1 GB of memory to segment, more than the 1.0 GB " \
           f"eval.max_memory allows" in logs
    monkeypatch.setattr(predict_module, "available_memory", lambda: 8e9)   # no limit set: what the system has
    logs.clear()
    assert main(run) == 1
    assert f"skipped {huge}: a 10000x10000 image needs about 10.1 GB of memory to segment, more than the 8.0 GB " \
           f"available" in logs
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_eval_names_an_image_too_large_for_the_memory_allowed(data, tmp_path, capsys):
    assert main(["eval", "-c", "demo", "--ckpt", str(data / "w.ckpt"), "--data", str(data / "mr" / "val.mindrecord"),
                 "--output", str(tmp_path / "ev"), *TINY, *CANVAS, "--set", "eval.max_memory=0.0001"]) == 2
    assert re.fullmatch(r"fcn8s: error: \S+: a \d+x\d+ image needs about [\d.]+ MB of memory to segment, "
                        r"more than the 0\.1 MB eval\.max_memory allows", _one_error_line(capsys))
    assert not (tmp_path / "ev").exists()


def test_a_training_set_smaller_than_one_batch_is_one_line(data, tmp_path, capsys):
    train = data / "mr" / "train.mindrecord"   # 6 images
    assert main(["train", "-c", "demo", "--output-dir", str(tmp_path / "run"), *TINY, "--set", f"data.train={train}",
                 "--set", f"data.val={data / 'mr' / 'val.mindrecord'}", "--set", "train.batch_size=8"]) == 2
    assert _one_error_line(capsys) == f"fcn8s: error: {train}: fewer images than one batch of 8 (train.batch_size)"
    assert not (tmp_path / "run").exists()   # named before the run's folder is made


def test_a_missing_or_cut_shard_is_named(data, tmp_path):
    convert_voc(data / "VOCdevkit", tmp_path, num_classes=3, shards=2)
    check_mindrecord(tmp_path / "train.mindrecord0")
    os.truncate(tmp_path / "train.mindrecord1", 17_000_000)
    with pytest.raises(FCNError, match=rf"^{tmp_path / 'train.mindrecord1'}: truncated \(17000000 bytes; its pages "
                                       rf"need \d+\)$"):
        check_mindrecord(tmp_path / "train.mindrecord0")
    (tmp_path / "train.mindrecord1").unlink()
    with pytest.raises(FCNError, match=rf"^{tmp_path / 'train.mindrecord1'}: missing \(a shard of "
                                       rf"{tmp_path / 'train.mindrecord0'}\)$"):
        check_mindrecord(tmp_path / "train.mindrecord0")


def test_a_cut_mindrecord_is_one_line_on_stderr_without_mindspores_stack(data, tmp_path):
    """In-process runs (the corpus) cannot see what MindSpore's C++ prints: a real process, whole stderr."""
    cut = tmp_path / "train.mindrecord"
    cut.write_bytes((data / "mr" / "train.mindrecord").read_bytes()[:20_000_000])
    (tmp_path / "train.mindrecord.db").write_bytes((data / "mr" / "train.mindrecord.db").read_bytes())
    done = subprocess.run([sys.executable, "-m", "fcn8s", "train", "-c", "demo", "--output-dir", str(tmp_path / "run"),
                           *TINY, "--set", f"data.train={cut}", "--set", f"data.val={data / 'mr' / 'val.mindrecord'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == f"fcn8s: error: {cut}: truncated (20000000 bytes; its pages need " \
                                  f"{(data / 'mr' / 'train.mindrecord').stat().st_size})"
