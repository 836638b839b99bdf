import json
import shutil

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

import fcn8s.train as train_module
from fcn8s.checkpoint import read_checkpoint, training_state
from fcn8s.cli import main
from fcn8s.config import load_config
from fcn8s.data.mindrecord import convert_voc
from fcn8s.data.synth import make_synthetic_voc
from fcn8s.device import setup_device
from fcn8s.errors import FCNError
from fcn8s.models import build_model
from fcn8s.schedule import lr_per_step

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    voc = make_synthetic_voc(root, num_train=8, num_val=3, size=(64, 64), num_classes=NUM_CLASSES, seed=1)
    convert_voc(voc, root / "mr", num_classes=NUM_CLASSES)
    return root / "mr"


def tiny_config(data, output_dir, *overrides, mode="pynative"):
    return load_config("demo", [
        f"data.train={data / 'train.mindrecord'}", f"data.val={data / 'val.mindrecord'}",
        f"train.output_dir={output_dir}", f"model.num_classes={NUM_CLASSES}", "model.width=0.0625",
        "data.crop_size=64", "data.num_workers=1", "train.batch_size=2", "train.epochs=3",
        "train.eval_interval=1", "train.save_interval=1", "train.log_interval=1", "train.warmup_epochs=0",
        "eval.canvas=64", "device.target=CPU", f"device.mode={mode}", *overrides])


def test_lr_schedules_at_given_steps():
    cos = lr_per_step("cosine", 0.05, 100, min_lr=0.0005)
    assert cos[0] == pytest.approx(0.05) and cos[50] == pytest.approx(0.0005 + 0.0495 * 0.5)
    assert cos[99] == pytest.approx(0.0005 + 0.0495 * (1 + np.cos(np.pi * 0.99)) / 2)
    assert np.all(np.diff(cos) <= 0) and len(cos) == 100
    warm = lr_per_step("cosine", 0.1, 20, warmup_steps=4)
    np.testing.assert_allclose(warm[:4], [0.025, 0.05, 0.075, 0.1])
    assert warm[4] == pytest.approx(0.1) and warm[12] == pytest.approx(0.05)
    poly = lr_per_step("poly", 0.01, 10, power=0.9)
    assert poly[5] == pytest.approx(0.01 * 0.5 ** 0.9)
    np.testing.assert_allclose(lr_per_step("constant", 0.3, 5), [0.3] * 5)


def test_loss_decreases_on_a_fixed_batch(tmp_path, tiny_data, rng):
    cfg = tiny_config(tiny_data, tmp_path, "train.lr=0.02")
    setup = setup_device(cfg.device, announce=False)
    net = build_model(cfg.model)
    step_fn, _ = train_module.build_train_step(net, cfg, setup, lr_per_step("constant", 0.02, 40),
                                                train_module.get_logger())
    images = ms.Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    labels = np.zeros((2, 64, 64), np.int32)
    labels[:, 16:48, 16:48] = 2
    labels[:, :4] = 255
    losses = [float(step_fn(images, ms.Tensor(labels)).asnumpy()) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]


def _log(output_dir):
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


def test_training_writes_checkpoints_logs_and_plots(tmp_path, tiny_data, capsys):
    result = train_module.train(tiny_config(tiny_data, tmp_path / "run"))
    if shutil.which("g++"):   # backbone_impl auto: the oneDNN kernels, and the log says so
        assert "convolutions: oneDNN channels-last kernels (brg_conv_fwd:" in capsys.readouterr().out
    out = tmp_path / "run"
    ckpt = read_checkpoint(out / "last.ckpt")
    assert any(k.startswith("moments.conv1.0.weight") for k in ckpt) and "conv6.0.weight" in ckpt
    assert int(ckpt["global_step"].asnumpy().item()) == 12
    state = training_state(ckpt)
    assert state["epoch"] == 3 and state["step"] == 12  # 8 images / batch 2 = 4 steps per epoch
    log = _log(out)
    steps = [e for e in log if "loss" in e]
    vals = [e for e in log if "val" in e]
    assert [e["step"] for e in steps] == list(range(1, 13))
    assert all(set(e) >= {"epoch", "loss", "lr", "step_time", "images_per_s"} for e in steps)
    assert [e["epoch"] for e in vals] == [1, 2, 3]
    # best.ckpt holds the best validation, whichever epoch it came from
    best = max(vals, key=lambda e: e["val"]["mean_iou"])
    best_state = training_state(read_checkpoint(out / "best.ckpt"))
    assert best_state["best_miou"] == pytest.approx(best["val"]["mean_iou"])
    assert best_state["best_epoch"] == best["epoch"] == result["state"]["best_epoch"]
    assert sorted(p.name for p in out.glob("epoch_*.ckpt")) == ["epoch_0002.ckpt", "epoch_0003.ckpt"]  # keep 2
    assert load_config(out / "config.yaml").to_dict() == tiny_config(tiny_data, out).to_dict()
    for plot in ("loss.png", "miou.png"):
        with Image.open(out / plot) as image:
            assert image.format == "PNG" and image.width > 100


class _Interrupt:
    """Wraps the train step: raises KeyboardInterrupt before step ``at`` (counted from 1)."""

    def __init__(self, at=None, nan_at=None):
        self.at, self.nan_at, self.calls = at, nan_at, 0
        self.real_build = train_module.build_train_step

    def __call__(self, *args, **kwargs):
        step_fn, optimizer = self.real_build(*args, **kwargs)

        def step(images, labels):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            out = step_fn(images, labels)
            return ms.Tensor(np.float32("nan")) if self.calls == self.nan_at else out
        step.get_parameters = step_fn.get_parameters
        return step, optimizer


def test_interrupt_and_resume_equals_an_uninterrupted_run(tmp_path, tiny_data, monkeypatch):
    straight = train_module.train(tiny_config(tiny_data, tmp_path / "a", mode="graph"))
    monkeypatch.setattr(train_module, "build_train_step", _Interrupt(at=7))  # during epoch 2
    with pytest.raises(KeyboardInterrupt):
        train_module.train(tiny_config(tiny_data, tmp_path / "b", mode="graph"))
    assert training_state(read_checkpoint(tmp_path / "b" / "last.ckpt"))["epoch"] == 1
    monkeypatch.undo()
    resumed = train_module.train(tiny_config(tiny_data, tmp_path / "b", "train.resume=auto", mode="graph"))
    assert resumed["state"]["step"] == straight["state"]["step"] == 12
    assert resumed["final_lr"] == pytest.approx(straight["final_lr"])
    log_a, log_b = _log(tmp_path / "a"), _log(tmp_path / "b")
    lrs_a = {e["step"]: e["lr"] for e in log_a if "lr" in e}
    lrs_b = {e["step"]: e["lr"] for e in log_b if "lr" in e}
    assert lrs_a == lrs_b  # the schedule continued from the same position
    ckpt = read_checkpoint(tmp_path / "b" / "last.ckpt")
    assert int(ckpt["global_step"].asnumpy().item()) == 12
    # a finished run resumed again does nothing
    again = train_module.train(tiny_config(tiny_data, tmp_path / "b", "train.resume=auto", mode="graph"))
    assert again["state"]["step"] == 12


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "build_train_step", _Interrupt(nan_at=6))
    with pytest.raises(FCNError, match=r"loss is nan at epoch 2, step 6 .*last good checkpoint is .*last.ckpt"):
        train_module.train(tiny_config(tiny_data, tmp_path))
    assert training_state(read_checkpoint(tmp_path / "last.ckpt"))["epoch"] == 1
    capsys.readouterr()
    monkeypatch.setattr(train_module, "build_train_step", _Interrupt(nan_at=2))
    code = main(["train", "-c", "demo", *sum((["--set", o] for o in _overrides(tiny_data, tmp_path / "cli")), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fcn8s: error: loss is nan at epoch 1, step 2") and "none saved yet" in err


def _overrides(data, output_dir):
    cfg = tiny_config(data, output_dir)
    base = load_config("demo")
    return [f"{section}.{key}={json.dumps(value)}" for section, values in cfg.items()
            for key, value in values.items() if base[section][key] != value]


def test_resume_needs_a_training_checkpoint(tmp_path, tiny_data):
    from fcn8s.checkpoint import save_checkpoint
    net = build_model(tiny_config(tiny_data, tmp_path).model)
    save_checkpoint(net.get_parameters(), tmp_path / "weights.ckpt")
    with pytest.raises(FCNError, match="weights.ckpt: not a training checkpoint"):
        train_module.train(tiny_config(tiny_data, tmp_path, f"train.resume={tmp_path / 'weights.ckpt'}"))
