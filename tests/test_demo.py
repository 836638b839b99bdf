import json

from PIL import Image

import fcn8s.train as train_module
from fcn8s.cli import main
from step_faults import InterruptedStep   # tests/ is on sys.path (pytest's rootdir-relative conftest import)

TINY = ["model.num_classes=4", "model.width=0.0625", "data.crop_size=64", "data.num_workers=1",
        "train.batch_size=2", "train.epochs=2", "train.eval_interval=1", "train.log_interval=1", "eval.canvas=64",
        "demo.num_train=4", "demo.num_val=2", "demo.image_size=[64, 64]", "demo.infer_images=2",
        "device.target=CPU"]


def _demo(out, *extra):
    return main(["demo", "--output-dir", str(out), *sum((["--set", o] for o in TINY), []), *extra])


def test_demo_runs_end_to_end_resumes_and_restarts(tmp_path, capsys):
    out = tmp_path / "demo"
    assert _demo(out) == 0
    log = capsys.readouterr().out
    assert "[1/5] synthetic VOC dataset" in log and "[5/5] segment 2 val images" in log
    assert "demo finished in" in log and "val mIoU" in log and "class_3" in log
    for path in ("VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", "mindrecord/train.mindrecord",
                 "run/best.ckpt", "run/last.ckpt", "run/loss.png", "eval/metrics.json", "eval/confusion_matrix.png"):
        assert (out / path).is_file(), path
    overlays = sorted((out / "infer").glob("*_overlay.png"))
    assert len(overlays) == 2 and Image.open(overlays[0]).format == "PNG"
    steps = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]

    assert _demo(out) == 0  # again: reuses the data, training is already finished
    log = capsys.readouterr().out
    assert "[1/5]" not in log and "[2/5]" not in log and "nothing to do: already trained 2 of 2 epochs" in log
    assert len((out / "run" / "log.jsonl").read_text().splitlines()) == len(steps)

    assert _demo(out, "--force") == 0  # starts over
    assert "[1/5] synthetic VOC dataset" in capsys.readouterr().out
    assert len((out / "run" / "log.jsonl").read_text().splitlines()) == len(steps)


def test_a_ctrl_c_in_the_demo_says_that_running_it_again_continues(tmp_path, monkeypatch, capsys):
    # 4 images in batches of 2: the third step is epoch 2's first
    monkeypatch.setattr(train_module, "build_train_step", InterruptedStep(at=3))
    out = tmp_path / "demo"
    assert _demo(out) == 130
    assert capsys.readouterr().err.strip() == (f"fcn8s: interrupted; running the demo again continues from "
                                               f"{out / 'run' / 'last.ckpt'} (end of epoch 1)")
    assert _demo(out) == 0
    assert "resumed from" in capsys.readouterr().out
