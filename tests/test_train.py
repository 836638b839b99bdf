import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

import fcn8s.train as train_module
from fcn8s.checkpoint import HostCopies, read_checkpoint, save_checkpoint, training_state
from fcn8s.cli import main
from fcn8s.config import load_config
from fcn8s.data.mindrecord import convert_voc
from fcn8s.data.synth import make_synthetic_voc
from fcn8s.device import setup_device
from fcn8s.errors import FCNError
from fcn8s.kernels import onednn
from fcn8s.models import build_model
from fcn8s.rundir import RunDir
from fcn8s.schedule import lr_per_step
from fcn8s.visualize import plot_training_curves
from step_faults import InterruptedStep   # tests/ is on sys.path (pytest's rootdir-relative conftest import)

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
    said = capsys.readouterr().out   # model.kernels auto: the oneDNN kernels where they load, and the log says so
    if onednn.available()[0]:
        assert "convolutions: conv1 " in said and "(oneDNN kernels " in said   # the probe's per-block choice
    else:
        assert "convolutions: MindSpore's (oneDNN custom kernels not used: " in said
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


# Run in a subprocess: trains with tiny_config's overrides and dies by SIGKILL halfway through
# writing checkpoint NAME at EPOCH (the temporary file is left half-written, as a real kill leaves it).
_KILLED_WRITER = """
import json, os, signal, sys
import mindspore as ms
from fcn8s.config import load_config
from fcn8s.train import train
overrides, name, epoch = json.loads(sys.argv[1])
real_save = ms.save_checkpoint

def save_then_die(entries, path, append_dict=None, **kwargs):
    real_save(entries, path, append_dict=append_dict, **kwargs)
    if os.path.basename(path).startswith("." + name) and int(append_dict["train_state.epoch"]) == epoch:
        data = open(path, "rb").read()
        open(path, "wb").write(data[:len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

ms.save_checkpoint = save_then_die
train(load_config("demo", overrides))
"""


def _killed_during_write(data, output_dir, name, epoch, *overrides):
    cfg = tiny_config(data, output_dir, *overrides, mode="graph")
    args = json.dumps([_overrides_of(cfg), name, epoch])
    # env: os.environ, not the C environment, where importing MindSpore set OMP_NUM_THREADS=1: the child
    # must run the kernels on as many threads as this process, since the probe's verdict (which kernels
    # run, and so the numerics) is kept per thread count
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    return done.stdout + done.stderr


def _tensors(path):
    return {k: v.asnumpy() for k, v in read_checkpoint(path).items() if not isinstance(v, str)}


def test_killed_and_corrupted_runs_resume_to_the_uninterrupted_result(tmp_path, tiny_data, capsys):
    """Kill -9 while best.ckpt is written (epoch 1), kill -9 while last.ckpt is written (epoch 3), then
    last.ckpt corrupted on disk: the resumed run ends with the uninterrupted run's weights, optimizer
    moments, losses and log, bit for bit (CPU kernels in one process layout are deterministic)."""
    straight = tmp_path / "straight"
    train_module.train(tiny_config(tiny_data, straight, mode="graph"))
    run = tmp_path / "killed"
    _killed_during_write(tiny_data, run, "best.ckpt", 1)
    assert (run / "last.ckpt").is_file() and not (run / "best.ckpt").exists()
    out = _killed_during_write(tiny_data, run, "last.ckpt", 3, "train.resume=auto")
    assert "best.ckpt: not the best epoch 1 that the resumed checkpoint records; rewriting it" in out
    assert training_state(read_checkpoint(run / "last.ckpt"))["epoch"] == 2   # the epoch-3 write never landed
    assert any(e["epoch"] == 3 for e in _log(run))                           # but its steps were logged
    corrupt = bytearray((run / "last.ckpt").read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    (run / "last.ckpt").write_bytes(bytes(corrupt))
    capsys.readouterr()
    train_module.train(tiny_config(tiny_data, run, "train.resume=auto", mode="graph"))
    said = capsys.readouterr().out
    assert f"{run / 'last.ckpt'}: not a readable MindSpore checkpoint (truncated or corrupt); " \
           f"resuming from {run / 'epoch_0002.ckpt'} instead" in said
    assert not list(run.glob(".*.tmp*"))

    for name in ("last.ckpt", "best.ckpt"):
        want, got = _tensors(straight / name), _tensors(run / name)
        assert want.keys() == got.keys() and any(k.startswith("moments.") for k in got) == (name == "last.ckpt")
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")
    steps = [(e["step"], e["loss"], e["lr"]) for e in _log(run) if "loss" in e]
    assert [s for s, _, _ in steps] == list(range(1, 13))   # each step logged once
    assert steps == [(e["step"], e["loss"], e["lr"]) for e in _log(straight) if "loss" in e]
    assert [e["epoch"] for e in _log(run) if "val" in e] == [1, 2, 3]
    # a finished run resumed again does nothing
    assert train_module.train(tiny_config(tiny_data, run, "train.resume=auto"))["state"]["step"] == 12


def test_ctrl_c_exits_130_naming_the_checkpoint_to_resume_from(tmp_path, tiny_data, monkeypatch, capsys):
    args = ["train", "-c", "demo", *sum((["--set", o] for o in _overrides(tiny_data, tmp_path / "run")), [])]
    monkeypatch.setattr(train_module, "build_train_step", InterruptedStep(at=2))   # epoch 1, nothing saved yet
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == ("fcn8s: interrupted before the first epoch ended; no checkpoint "
                                               "was written")
    monkeypatch.setattr(train_module, "build_train_step", InterruptedStep(at=7))   # epoch 2
    assert main([*args, "--resume"]) == 130
    assert capsys.readouterr().err.strip() == (f"fcn8s: interrupted; --resume continues from "
                                               f"{tmp_path / 'run' / 'last.ckpt'} (end of epoch 1)")


def test_a_real_ctrl_c_during_graph_training_exits_130_naming_the_checkpoint(tmp_path, tiny_data):
    """MindSpore answers SIGINT during a graph run with SIGTERM to its own process; the CLI makes that a
    KeyboardInterrupt, so a real Ctrl-C ends as one between steps does, not with 'Terminated'."""
    run = tmp_path / "run"
    overrides = _overrides_of(tiny_config(tiny_data, run, "train.epochs=500", "train.eval_interval=0",
                                          mode="graph"))
    # env: as in _killed_during_write, the kernels on as many threads as this process
    child = subprocess.Popen([sys.executable, "-m", "fcn8s", "train", "-c", "demo",
                              *sum((["--set", o] for o in overrides), [])],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 240
        while not (run / "last.ckpt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)   # into a later epoch's graph steps
        child.send_signal(signal.SIGINT)
        err = child.communicate(timeout=120)[1]
    finally:
        child.kill()
    assert child.returncode == 130, err[-2000:]
    epoch = training_state(read_checkpoint(run / "last.ckpt"))["epoch"]
    assert 1 <= epoch < 500
    assert err.strip().splitlines()[-1] == (f"fcn8s: interrupted; --resume continues from {run / 'last.ckpt'} "
                                            f"(end of epoch {epoch})")


def test_resume_refuses_a_corrupt_checkpoint_it_was_given(tmp_path, tiny_data):
    bad = tmp_path / "given.ckpt"
    bad.write_bytes(b"\x0a\x05" + bytes(100))
    with pytest.raises(FCNError, match="given.ckpt: not a readable MindSpore checkpoint"):
        train_module.train(tiny_config(tiny_data, tmp_path / "run", f"train.resume={bad}"))


def test_an_earlier_run_is_refused_unless_resumed_or_forced(tmp_path, tiny_data, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"epoch": 1, "step": 1, "loss": 1.0}\n')
    (run / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    args = ["train", "-c", "demo", *sum((["--set", o] for o in _overrides(tiny_data, run)), [])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fcn8s: error: {run}: holds an earlier run (log.jsonl); use --resume to continue it " \
                  f"or --force to start a new one there"
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before   # nothing changed, nothing added
    assert main([*args, "--set", "train.epochs=1", "--force"]) == 0
    assert [e["epoch"] for e in _log(run)] == [1] * 5                   # 4 steps + val, the old line gone
    assert (run / "notes.txt").read_text() == "mine"                    # not ours: kept


def test_a_second_training_into_a_locked_folder_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    first = RunDir(tmp_path).open(resume=None, force=False)
    with pytest.raises(FCNError, match=rf"{tmp_path}: another training \(pid {os.getpid()}\) is writing"):
        RunDir(tmp_path).open(resume="auto", force=False)
    first.close()
    # a run killed with -9 leaves its pid in the lock file but no lock: the next run takes it over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")
    RunDir(tmp_path).open(resume=None, force=False).close()
    assert f"took over the lock of pid {dead.pid}" in capsys.readouterr().out


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "build_train_step", InterruptedStep(nan_at=6))
    with pytest.raises(FCNError, match=r"loss is nan at epoch 2, step 6 .*last good checkpoint is .*last.ckpt"):
        train_module.train(tiny_config(tiny_data, tmp_path))
    assert training_state(read_checkpoint(tmp_path / "last.ckpt"))["epoch"] == 1
    capsys.readouterr()
    monkeypatch.setattr(train_module, "build_train_step", InterruptedStep(nan_at=2))
    code = main(["train", "-c", "demo", *sum((["--set", o] for o in _overrides(tiny_data, tmp_path / "cli")), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fcn8s: error: loss is nan at epoch 1, step 2") and "none saved yet" in err


def test_an_epochs_files_are_written_behind_from_its_own_weights(tmp_path):
    """The writer thread saves the weights as they were at the epoch's end, though training has moved on."""
    weight = ms.Parameter(ms.Tensor(np.arange(6, dtype=np.float32)), name="w")
    copies = HostCopies().of([weight])
    started, proceed = threading.Event(), threading.Event()

    def job():
        started.set()
        proceed.wait(30)
        save_checkpoint(copies, tmp_path / "last.ckpt", {"epoch": 1})

    run = RunDir(tmp_path).open(resume=None, force=False)
    run.write_behind(job)
    assert started.wait(30)
    ms.ops.assign(weight, ms.Tensor(np.full(6, -1, np.float32)))   # the next epoch's first update, in place
    proceed.set()
    run.wait()
    np.testing.assert_array_equal(_tensors(tmp_path / "last.ckpt")["w"], np.arange(6))
    run.close()


def test_host_copies_take_the_values_of_the_moment_each_time_into_the_same_buffers(tmp_path):
    weight = ms.Parameter(ms.Tensor(np.arange(6, dtype=np.float32)), name="w")
    host = HostCopies()
    first = host.of([weight])["w"].asnumpy()
    ms.ops.assign(weight, ms.Tensor(np.full(6, 7, np.float32)))
    np.testing.assert_array_equal(first, np.arange(6))   # a copy, not the weight's memory
    second = host.of([weight])
    np.testing.assert_array_equal(second["w"].asnumpy(), np.full(6, 7))
    assert np.shares_memory(first, second["w"].asnumpy())   # no fresh buffer per epoch
    save_checkpoint(second, tmp_path / "last.ckpt", {"epoch": 2})
    np.testing.assert_array_equal(_tensors(tmp_path / "last.ckpt")["w"], np.full(6, 7))


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def test_ctrl_c_while_waiting_for_the_writer_leaves_its_job_to_be_waited_for(tmp_path):
    run = RunDir(tmp_path).open(resume=None, force=False)
    release = threading.Event()
    run.write_behind(lambda: release.wait(30) and (tmp_path / "written").write_text("the epoch's files"))
    # a Ctrl-C as the CLI sees it, by SIGUSR1 here: MindSpore's handler turns a SIGINT into SIGTERM once a
    # graph has run in this process (test_a_real_ctrl_c_...), and pytest would not survive that
    previous = signal.signal(signal.SIGUSR1, _raise_keyboard_interrupt)
    try:
        threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1)).start()
        with pytest.raises(KeyboardInterrupt):
            run.wait()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    release.set()
    run.wait()   # what train does on Ctrl-C before naming the checkpoint to resume from
    assert (tmp_path / "written").read_text() == "the epoch's files"
    run.close()


def test_a_checkpoint_that_cannot_be_written_behind_stops_the_run_naming_it(tmp_path, tiny_data, monkeypatch,
                                                                            capsys):
    real_save = ms.save_checkpoint

    def disk_full(entries, path, append_dict=None, **kwargs):
        if os.path.basename(path).startswith(".last.ckpt") and append_dict["train_state.epoch"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(entries, path, append_dict=append_dict, **kwargs)

    monkeypatch.setattr(ms, "save_checkpoint", disk_full)
    run = tmp_path / "run"
    args = ["train", "-c", "demo", *sum((["--set", o] for o in _overrides(tiny_data, run)), [])]
    assert main(args) == 2   # raised at the next wait: the end of training here (epoch 3)
    assert capsys.readouterr().err.strip() == (f"fcn8s: error: {run / 'last.ckpt'}: cannot write the checkpoint "
                                               f"(No space left on device)")
    assert training_state(read_checkpoint(run / "last.ckpt"))["epoch"] == 1   # the one before stays
    assert not list(run.glob(".*.tmp*"))


def test_training_curves_are_drawn_from_the_complete_lines_of_a_log_being_written(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 1, "step": 1, "loss": 2.0}\n{"epoch": 1, "step": 2, "loss": 1.0}\n'
                   '{"epoch": 1, "step": 2, "val": {"mean_iou": 0.25}}\n{"epoch": 2, "st')   # the last: half written
    plot_training_curves(log, tmp_path)
    for plot in ("loss.png", "miou.png"):
        with Image.open(tmp_path / plot) as image:
            assert image.format == "PNG" and image.width > 100


def test_training_curves_are_redrawn_after_validations_and_the_last_epoch_not_after_every_epoch(
        tmp_path, tiny_data, monkeypatch):
    """Within a minute of the last drawing an epoch that did not validate leaves the curves as they are."""
    drawn, writing, make_writer = [], [], train_module._epoch_writer

    def writer(*args):   # the epoch whose files the job writes (one job at a time), for the drawing below
        job = make_writer(*args)
        return lambda: (writing.append(args[3]["epoch"]), job())
    monkeypatch.setattr(train_module, "_epoch_writer", writer)
    monkeypatch.setattr(train_module, "plot_training_curves", lambda *_: drawn.append(writing[-1]))
    train_module.train(tiny_config(tiny_data, tmp_path / "val2", "train.epochs=4", "train.eval_interval=2"))
    assert drawn == [1, 2, 4]     # the first epoch (none drawn yet), then the validated ones
    drawn.clear()
    train_module.train(tiny_config(tiny_data, tmp_path / "noval", "train.eval_interval=0"))
    assert drawn == [1, 3]        # no validation: the first and the last epoch


def _overrides(data, output_dir):
    return _overrides_of(tiny_config(data, output_dir))


def _overrides_of(cfg):
    base = load_config("demo")
    return [f"{section}.{key}={json.dumps(value)}" for section, values in cfg.items()
            for key, value in values.items() if base[section][key] != value]


def test_resume_needs_a_training_checkpoint(tmp_path, tiny_data):
    net = build_model(tiny_config(tiny_data, tmp_path).model)
    save_checkpoint(net.get_parameters(), tmp_path / "weights.ckpt")
    with pytest.raises(FCNError, match="weights.ckpt: not a training checkpoint"):
        train_module.train(tiny_config(tiny_data, tmp_path, f"train.resume={tmp_path / 'weights.ckpt'}"))
