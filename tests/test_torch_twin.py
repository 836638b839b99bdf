"""The PyTorch twin fcn8s/torch_twin.py: same logits as our FCN for the same checkpoint, and a
FLOP count that agrees with one taken from the layers as they run. Skipped where torch is not installed."""
import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

from fcn8s.bench import twin_mismatch  # noqa: E402
from fcn8s.host import KERNEL_ENV  # noqa: E402
from fcn8s.checkpoint import save_checkpoint  # noqa: E402
from fcn8s import torch_twin as twin  # noqa: E402
from fcn8s.models import FCN  # noqa: E402


def test_fcn8s_imports_torch_only_where_the_twin_runs():
    proc = subprocess.run([sys.executable, "-c", "import sys, fcn8s.bench, fcn8s.cli, fcn8s.models\n"
                           "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("arch, height, width", [
    ("fcn8s", 64, 96), ("fcn16s", 64, 96), ("fcn32s", 64, 96),
    ("fcn8s", 50, 70),    # not a multiple of 32: padded and cropped back inside both nets
])
def test_mindspore_checkpoint_gives_the_same_logits_in_torch(tmp_path, rng, randomise_bn_statistics, arch, height,
                                                            width):
    net = FCN(arch, num_classes=5, width=0.125)
    randomise_bn_statistics(net)
    path = tmp_path / f"{arch}.ckpt"
    save_checkpoint(net.get_parameters(), path, state={"epoch": 3})   # train_state.* must be ignored
    model = twin.load_mindspore_checkpoint(twin.TorchFCN(arch, 5, 0.125), path).eval()
    net.set_train(False)
    x = rng.standard_normal((1, 3, height, width)).astype(np.float32)
    expected = net(ms.Tensor(x)).asnumpy()
    with torch.inference_mode():
        got = model(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (1, 5, height, width)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_checkpoint_of_another_arch_is_refused(tmp_path):
    path = tmp_path / "fcn32s.ckpt"
    save_checkpoint(FCN("fcn32s", num_classes=5, width=0.125).get_parameters(), path)
    with pytest.raises(ValueError, match="upscore2.weight"):
        twin.load_mindspore_checkpoint(twin.TorchFCN("fcn8s", 5, 0.125), path)


def test_bench_check_catches_a_perturbed_checkpoint(tmp_path, rng):
    net = FCN("fcn8s", num_classes=21, width=0.125)
    net.set_train(False)
    images = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = net(ms.Tensor(images)).asnumpy()
    path = tmp_path / "fcn8s.ckpt"
    save_checkpoint(net.get_parameters(), path)
    assert twin_mismatch("torch-channels-last", 0.125, path, images, expected) is None
    last = net.upscore8.weight
    last.set_data(last * 1.01)   # every logit 1% off: ten times the tolerance
    save_checkpoint(net.get_parameters(), path)
    assert "logits differ from ours" in twin_mismatch("torch", 0.125, path, images, expected)


def _hooked_gflop(model, x):
    """2 x MACs of every Conv2d / ConvTranspose2d, from the shapes seen as the model runs.

    A convolution output pixel costs in_channels x kh x kw MACs; a transposed-convolution output
    pixel receives in_channels x (kh / sh) x (kw / sw) of them (k = 2s here, so 4 input pixels).
    """
    macs = []

    def count(layer, inputs, output):
        kh, kw = layer.kernel_size
        per_pixel = layer.in_channels // layer.groups * kh * kw
        if isinstance(layer, torch.nn.ConvTranspose2d):
            per_pixel //= layer.stride[0] * layer.stride[1]
        macs.append(output.numel() * per_pixel)

    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            layer.register_forward_hook(count)
    with torch.inference_mode():
        model(x)
    return 2 * sum(macs) / 1e9


@pytest.mark.parametrize("arch", ["fcn8s", "fcn16s", "fcn32s"])
def test_analytic_gflop_matches_the_hooked_layers(arch):
    with torch.device("meta"):    # shapes only: no 134M-parameter allocation, no arithmetic
        model = twin.TorchFCN(arch, 21, 1.0).eval()
        x = torch.empty(1, 3, 256, 256)
    expected = _hooked_gflop(model, x)
    assert twin.fcn_forward_gflop(arch, 21, 1.0, 1, 256, 256) == pytest.approx(expected, rel=1e-3)


def test_gflop_counts_the_padded_input_and_the_batch():
    assert twin.fcn_forward_gflop("fcn8s", 21, 0.5, 3, 250, 260) == pytest.approx(
        3 * twin.fcn_forward_gflop("fcn8s", 21, 0.5, 1, 256, 288))


def test_cli_prints_one_json_line():
    run = subprocess.run(
        [sys.executable, "-m", "fcn8s.torch_twin", "--what", "train", "--batch", "1", "--size", "64", "--width", "0.125",
         "--repeat", "2", "--warmup", "1", "--threads", "1"],
        capture_output=True, text=True, check=True, timeout=300)
    lines = run.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["framework"] == "torch" and result["what"] == "train" and result["threads"] == 1
    assert set(result["env"]) == set(KERNEL_ENV) and result["torch"]["onednn_convolutions"]   # verbose kept off stdout
    assert len(result["times_s"]) == 2 and result["median_s"] > 0 and result["peak_rss_mib"] > 0
    assert result["gflop"] == pytest.approx(3 * twin.fcn_forward_gflop("fcn8s", 21, 0.125, 1, 64, 64))
