import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from fcn8s.checkpoint import load_weights, read_checkpoint, save_checkpoint, training_state
from fcn8s.errors import FCNError
from fcn8s.models import FCN


def _narrow(num_classes=4, arch="fcn8s"):
    return FCN(arch, num_classes=num_classes, width=0.125)


def _values(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def test_training_checkpoint_loads_model_only_and_keeps_state(tmp_path):
    net = _narrow()
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
    path = tmp_path / "last.ckpt"
    save_checkpoint(list(net.get_parameters()) + [opt.global_step, opt.learning_rate] + list(opt.moments), path, state={"epoch": 3, "step": 120, "best_miou": 0.5})
    ckpt = read_checkpoint(path)
    assert any(k.startswith("moments.") for k in ckpt) and "global_step" in ckpt
    assert training_state(ckpt) == {"epoch": 3, "step": 120, "best_miou": 0.5}
    fresh = _narrow()
    report = load_weights(fresh, path)
    assert len(report.loaded) == 81 and len(report.skipped) == len(ckpt) - 81
    for name, value in _values(net).items():
        np.testing.assert_array_equal(value, _values(fresh)[name])
    assert not [f for f in os.listdir(tmp_path) if f != "last.ckpt"]  # no temporary files left


def test_backbone_only_load(tmp_path):
    src = _narrow()
    save_checkpoint([p for p in src.get_parameters() if p.name.startswith(("conv1.", "conv2.", "conv3.",
                                                                          "conv4.", "conv5."))],
                    tmp_path / "vgg.ckpt")
    dst = _narrow(num_classes=7)
    before = _values(dst)
    report = load_weights(dst, tmp_path / "vgg.ckpt", backbone_only=True)
    after = _values(dst)
    assert len(report.loaded) == 13 * 5
    np.testing.assert_array_equal(after["conv5.6.weight"], _values(src)["conv5.6.weight"])
    np.testing.assert_array_equal(after["conv6.0.weight"], before["conv6.0.weight"])


def test_class_count_mismatch_names_keys_and_shapes(tmp_path):
    save_checkpoint(_narrow(num_classes=19).get_parameters(), tmp_path / "c19.ckpt")
    with pytest.raises(FCNError) as err:
        load_weights(_narrow(num_classes=21), tmp_path / "c19.ckpt")
    msg = str(err.value)
    assert "c19.ckpt" in msg and "mis-shaped" in msg
    assert "score_fr.weight: checkpoint (19, 512, 1, 1), model (21, 512, 1, 1)" in msg
    assert "reinit_head" in msg


def test_reinit_head_for_another_class_count(tmp_path):
    src = _narrow(num_classes=19)
    save_checkpoint(src.get_parameters(), tmp_path / "c19.ckpt")
    dst = _narrow(num_classes=5)
    head_before = dst.score_fr.weight.asnumpy().copy()
    report = load_weights(dst, tmp_path / "c19.ckpt", reinit_head=True)
    assert set(report.reinitialised) == {"score_fr.weight", "upscore2.weight", "score_pool4.weight",
                                         "upscore_pool4.weight", "score_pool3.weight", "upscore8.weight"}
    np.testing.assert_array_equal(dst.score_fr.weight.asnumpy(), head_before)
    np.testing.assert_array_equal(dst.conv7[0].weight.asnumpy(), src.conv7[0].weight.asnumpy())


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    save_checkpoint(_narrow(arch="fcn32s").get_parameters(), tmp_path / "fcn32s.ckpt")
    with pytest.raises(FCNError, match=r"missing \(.*score_pool4.weight.*unexpected \(upscore32.weight\)"):
        load_weights(_narrow(arch="fcn8s"), tmp_path / "fcn32s.ckpt")


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint" * 4)
    with pytest.raises(FCNError, match="bad.ckpt: not a readable MindSpore checkpoint"):
        load_weights(_narrow(), bad)
    with pytest.raises(FCNError, match="nope.ckpt: checkpoint not found"):
        load_weights(_narrow(), tmp_path / "nope.ckpt")


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint(_narrow().get_parameters(), path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ms, "save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_narrow().get_parameters(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]


# Run in a subprocess: a 200 kB file size limit (RLIMIT_FSIZE, SIGXFSZ ignored so write() fails with
# EFBIG as on a full disk), then a 1.2 MB checkpoint saved over a small good one.
_SIZE_LIMITED_SAVE = """
import resource, signal, sys
import numpy as np, mindspore as ms
from fcn8s.checkpoint import save_checkpoint
from fcn8s.errors import FCNError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    save_checkpoint([ms.Parameter(ms.Tensor(np.ones(300_000, np.float32)), name="w")], sys.argv[1])
except FCNError as exc:
    print(exc)
"""


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_file(tmp_path):
    good = tmp_path / "last.ckpt"
    save_checkpoint([ms.Parameter(ms.Tensor(np.arange(10, dtype=np.float32)), name="w")], good)
    done = subprocess.run([sys.executable, "-c", _SIZE_LIMITED_SAVE, str(good)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{good}: cannot write the checkpoint (File too large)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]            # no temporary file left
    np.testing.assert_array_equal(read_checkpoint(good)["w"].asnumpy(), np.arange(10, dtype=np.float32))
