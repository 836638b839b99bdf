import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from fcn8s import bench, kernels
from fcn8s.bench_worker import Row, model_and_step
from fcn8s.cli import main
from fcn8s.host import KERNEL_ENV, cpu_isa, kernel_environment, peak_rss_mib

ROOT = Path(__file__).resolve().parent.parent


def test_bench_measures_and_writes_json(tmp_path, capsys, monkeypatch):
    mismatch = "the PyTorch twin's logits differ from ours"
    monkeypatch.setattr(bench, "twin_mismatch", lambda *args: mismatch)   # a twin that fails its check
    out = tmp_path / "bench.json"
    code = main(["bench", "--what", "train,infer", "--batch", "1", "--size", "32", "--width", "0.0625",
                 "--repeat", "1", "--warmup", "1", "--mode", "pynative", "--compare", "onnxruntime,ms-kernels,torch",
                 "-o", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "train fcn8s" in table and "infer fcn8s" in table
    report = json.loads(out.read_text())
    assert report["machine"]["matmul_peak_gflops"]["mindspore"] > 0
    rows = {r["what"]: r for r in report["models"] if r["impl"] == "fcn8s"}
    for what in ("train", "infer"):
        assert "error" not in rows[what], rows[what]
        assert rows[what]["median_s"] > 0 and rows[what]["peak_rss_mib"] > 100
        assert rows[what]["env"] == kernel_environment() and rows[what]["threads"] >= 1
        # auto: the probe's per-block verdict (cached by the measuring process) where the oneDNN kernels load
        assert rows[what]["kernels"] == kernels.choose("auto", 0.0625)[0]
    assert all(r["kernels"] == kernels.MINDSPORE_PLAN for r in report["models"] if r["impl"] == "ms-kernels")
    assert rows["train"]["gflop"] == 3 * rows["infer"]["gflop"]
    onnx_rows = {r["what"]: r for r in report["models"] if r["impl"] == "onnxruntime"}
    assert "inference only" in onnx_rows["train"]["error"]
    assert onnx_rows["infer"]["median_s"] > 0 and onnx_rows["infer"]["framework"] == "onnxruntime"
    assert "infer onnxruntime" in table
    assert [r["error"] for r in report["models"] if r["impl"] == "torch"] == [mismatch, mismatch]
    assert f"skipped: {mismatch}" in table
    assert all(set(r) == set(Row.__dataclass_fields__) for r in report["models"] if "error" not in r)
    assert set(report["machine"]["env"]) == set(KERNEL_ENV)


def test_rounds_measure_the_implementations_in_turn_and_pool_their_times(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_worker(spec):   # fcn8s takes 1, 2, 3 s in its three rounds, ms-kernels 10, 20, 30 s
        calls.append(spec["impl"])
        seconds = calls.count(spec["impl"]) * (1 if spec["impl"] == "fcn8s" else 10)
        row = {**spec, "framework": "mindspore", "version": "x", "times_s": [seconds, seconds + 0.5],
               "median_s": seconds + 0.25, "peak_rss_mib": 100.0 * seconds, "gflop": 1.0, "threads": 1, "env": {}}
        return asdict(Row(**row))
    monkeypatch.setattr(bench, "_run_worker", fake_worker)
    monkeypatch.setattr(bench, "matmul_peak", lambda: {"numpy": 1.0, "mindspore": 1.0})
    out = tmp_path / "bench.json"
    assert main(["bench", "--what", "infer", "--compare", "ms-kernels", "--rounds", "3", "-o", str(out)]) == 0
    assert calls == ["fcn8s", "ms-kernels"] * 3
    rows = {r["impl"]: r for r in json.loads(out.read_text())["models"]}
    assert rows["fcn8s"]["times_s"] == [1, 1.5, 2, 2.5, 3, 3.5] and rows["fcn8s"]["median_s"] == 2.25
    assert rows["ms-kernels"]["median_s"] == 20.25 and rows["ms-kernels"]["peak_rss_mib"] == 3000
    assert rows["fcn8s"]["rounds"] == rows["ms-kernels"]["rounds"] == 3
    assert "fcn8s time = 0.11 x ms-kernels" in capsys.readouterr().out


def test_pytorch_rows_run_in_the_users_environment(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    for name in KERNEL_ENV:   # the user set no ISA cap, thread count or affinity
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "bench.json"
    assert main(["bench", "--what", "infer", "--batch", "1", "--size", "64", "--width", "0.125", "--repeat", "1",
                 "--warmup", "0", "--mode", "pynative", "--compare", "torch-channels-last", "-o", str(out)]) == 0
    table = capsys.readouterr().out
    row = next(r for r in json.loads(out.read_text())["models"] if r["impl"] == "torch-channels-last")
    assert "error" not in row, row
    cpus = len(os.sched_getaffinity(0))   # as many threads as our side: the CPUs this process may run on
    assert row["env"] == dict.fromkeys(KERNEL_ENV) and row["threads"] == cpus
    assert row["torch"]["mkldnn_enabled"] and row["torch"]["onednn_convolutions"]
    if row["torch"]["cpu_capability"] == "AVX512":    # an AVX-512 CPU: oneDNN uses it unless capped
        assert "AVX-512" in row["torch"]["onednn_isa"]
    assert f"(torch-channels-last ran in PyTorch's default environment, {cpus} threads)" in table


def test_peak_rss_is_the_measuring_process_own():
    ballast = np.ones(2 ** 29 // 8)    # 512 MiB resident here, which ru_maxrss would pass on to the child
    assert peak_rss_mib() > 512
    child = subprocess.run([sys.executable, "-c", "from fcn8s.host import peak_rss_mib; print(peak_rss_mib())"],
                           capture_output=True, text=True, check=True)
    del ballast
    assert float(child.stdout) < 256


def test_the_cpu_isa_is_the_widest_whose_flags_are_all_there():
    # two "AMD EPYC"s of one day: Zen 4 with AVX-512, Zen 3 without; results are kept per kind
    zen3 = "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 vaes"
    assert cpu_isa(zen3) == "avx2"
    assert cpu_isa(zen3 + " avx512f avx512dq avx512bw avx512vl avx512_bf16") == "avx512_core"
    assert cpu_isa(zen3 + " avx512f") == "avx2"            # AVX-512 Foundation alone is not oneDNN's avx512_core
    assert cpu_isa("fpu sse sse2 sse4_1 avx2") == "sse41"  # AVX2 without FMA: oneDNN's avx2 needs both
    assert cpu_isa("fpu sse sse2") == ""


def test_bench_rejects_bad_requests(capsys, tmp_path):
    assert main(["bench", "--what", "speed"]) == 2
    assert main(["bench", "--compare", "seed", "--width", "0.5"]) == 2
    earlier = tmp_path / "bench.json"
    earlier.write_text("{}")
    assert main(["bench", "-o", str(earlier)]) == 2
    err = capsys.readouterr().err
    assert "--what speed: choose from train, infer, data" in err and "use --width 1" in err
    assert f"fcn8s: error: {earlier}: already exists (use --force to overwrite)" in err
    assert earlier.read_text() == "{}"


def test_the_tutorials_definition_gets_a_train_step_with_mindspores_loss():
    """Its network has no kernel plan: the step takes MindSpore's loss (a sitting's tutorial rows once failed here)."""
    net, step = model_and_step("seed", "train", 1.0, "pynative", 1)
    assert not hasattr(net, "kernel_plan")
    assert not step.network._loss_fn.custom


def test_the_profile_puts_each_op_in_the_part_of_the_network_its_scope_names():
    """Op names as MindSpore's profiler writes them, from a step on each kernel path: the before/after table
    of benchmarks/RESULTS.md compares the two paths part by part."""
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "benchmarks" / "profile_step.py")
    profile_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(profile_step)
    net = "Default/network-WithLossCell/_backbone-FCN"
    grads = "Gradients/Default/network-WithLossCell/_backbone-FCN"
    expected = {
        f"{net}/conv1-ConvBNReLUBlock/0-FastGradConv2d/op-OneDNNConv/Custom-op1": "blocks conv1-conv5",
        f"{grads}/conv5-ConvBNReLUBlock/0-Conv2d/Grad_Conv2D/Conv2DBackpropFilter-op3": "blocks conv1-conv5",
        f"{net}/conv6-ConvBNReLUBlock/0-FastGradConv2d/op-GemmConv/Custom-op2": "conv6",
        f"{net}/conv6-ConvBNReLUBlock/0-FastGradConv2d/op-_ConvCustomGrad/MatMul-op0": "conv6",
        f"{net}/conv6-ConvBNReLUBlock/1-BatchNorm2d/BatchNorm-op14": "BatchNorm + ReLU",
        f"{grads}/conv7-ConvBNReLUBlock/1-BatchNorm2d/Grad_BatchNorm/BatchNormGrad-op9": "BatchNorm + ReLU",
        f"{grads}/conv7-ConvBNReLUBlock/2-ReLU/Grad_ReLU/ReluGrad-op4": "BatchNorm + ReLU",
        f"{net}/conv4-ConvBNReLUBlock/bn_relu-LibraryBatchNormReLU/Custom-op0": "BatchNorm + ReLU",
        f"{net}/conv7-ConvBNReLUBlock/0-FastGradConv2d/op-GemmConv/Custom-op1": "conv7",
        f"{grads}/score_fr-Conv2d/Grad_Conv2D/Conv2DBackpropInput-op2": "score heads (score_fr, score_pool*)",
        f"{net}/pool-MaxPool/pool-MaxPool2x2/Custom-op6": "max pooling",
        f"{grads}/pool-MaxPool/pool-MaxPool2d/Grad_MaxPool/MaxPoolGrad-op1": "max pooling",
        f"{net}/upscore8-TransposedConv/op-LibraryUpsample/Custom-op0": "upsampling (upscore*)",
        f"{grads}/upscore2-Conv2dTranspose/Grad_Conv2DTranspose/Conv2DBackpropFilter-op0": "upsampling (upscore*)",
        "Default/network-WithLossCell/_loss_fn-PixelCrossEntropy/SoftmaxCrossEntropyWithLogits-op0": "loss",
        "Default/optimizer-Momentum/ApplyMomentum-op12": "optimizer update",
        f"{net}/Add-op0": "other",
    }
    assert {name: profile_step.part(name) for name in expected} == expected
