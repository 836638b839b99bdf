import os
import sys

import mindspore as ms
import numpy as np
import pytest

from fcn8s.checkpoint import save_checkpoint
from fcn8s.cli import main
from fcn8s.errors import FCNError
from fcn8s.models import FCN
from fcn8s.runtime import OnnxModel

TINY = ["--set", "model.num_classes=3", "--set", "model.width=0.0625", "--set", "device.target=CPU"]


@pytest.fixture
def tiny_ckpt(tmp_path):
    save_checkpoint(FCN("fcn8s", 3, 0.0625).get_parameters(), tmp_path / "w.ckpt")
    return tmp_path / "w.ckpt"


def test_mindir_export_is_verified_and_not_overwritten(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", "--ckpt", str(tiny_ckpt), "-o", str(out), "--size", "64", "96", *TINY]) == 0
    assert (tmp_path / "model.mindir").is_file()
    assert "verified against the network" in capsys.readouterr().out
    before = (tmp_path / "model.mindir").stat().st_mtime_ns
    assert main(["export", "--ckpt", str(tiny_ckpt), "-o", str(out), *TINY]) == 2
    assert "model.mindir: already exists (use --force to overwrite)" in capsys.readouterr().err
    assert (tmp_path / "model.mindir").stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.mindir", "w.ckpt"]
    blocked = tmp_path / "w.ckpt" / "sub" / "model"      # a folder that cannot be made: under a file
    assert main(["export", "--ckpt", str(tiny_ckpt), "-o", str(blocked), *TINY]) == 2
    assert capsys.readouterr().err.strip() == (f"fcn8s: error: {blocked.parent}: cannot create the output folder "
                                               f"(Not a directory)")


@pytest.mark.parametrize("arch", ["fcn8s", "fcn16s", "fcn32s"])
def test_onnx_export_gives_the_network_logits(arch, tmp_path, randomise_bn_statistics, rng, capsys):
    """Our own ONNX graph: BN in inference mode, 'same' transposed convolutions, pad to 32 and crop back, any shape."""
    onnxruntime = pytest.importorskip("onnxruntime")
    net = FCN(arch, 3, 0.0625)
    randomise_bn_statistics(net)
    save_checkpoint(net.get_parameters(), tmp_path / "w.ckpt")
    out = tmp_path / "m.onnx"
    assert main(["export", "--ckpt", str(tmp_path / "w.ckpt"), "-o", str(out), "--format", "ONNX",
                 "--batch", "2", "--size", "50", "70", *TINY, "--set", f"model.arch={arch}"]) == 0
    assert "verified against the network" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    net.set_train(False)
    for shape in [(2, 3, 50, 70), (1, 3, 97, 33), (1, 3, 64, 32)]:   # any batch and size, not only the export's
        images = rng.standard_normal(shape).astype(np.float32)
        got = session.run(None, {"images": images})[0]
        expected = net(ms.Tensor(images)).asnumpy()
        assert got.shape == expected.shape == (shape[0], 3, *shape[2:])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_onnx_models_run_on_the_thread_budget(tmp_path, monkeypatch):
    """`fcn8s eval/infer` of a .onnx and `fcn8s bench`'s onnxruntime row share one session setup: OMP_NUM_THREADS
    when set, else the CPUs the process may run on (onnxruntime's own default counts physical cores)."""
    pytest.importorskip("onnxruntime")
    from fcn8s.onnx_graph import build_onnx_model
    path = tmp_path / "m.onnx"
    path.write_bytes(build_onnx_model(FCN("fcn8s", 3, 0.0625).parameters_dict(), "fcn8s", 3).SerializeToString())
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert OnnxModel(path, 3).session.get_session_options().intra_op_num_threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 4, 6, 8})
    assert OnnxModel(path, 3).session.get_session_options().intra_op_num_threads == 5


def test_an_onnx_model_without_onnxruntime_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import onnxruntime raises ImportError
    with pytest.raises(FCNError) as err:
        OnnxModel(tmp_path / "m.onnx", 3)
    assert str(err.value) == f"{tmp_path / 'm.onnx'}: running an ONNX model needs onnxruntime: pip install 'fcn8s[onnx]'"


def test_onnx_export_that_disagrees_is_not_written(tiny_ckpt, tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr("fcn8s.onnx_graph.BN_EPSILON", 0.5)   # a wrong graph: export must refuse it
    code = main(["export", "--ckpt", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--format", "ONNX",
                 "--size", "64", "64", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fcn8s: error: the exported ONNX file gives different logits")
    assert "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ckpt"]


def test_onnx_export_without_onnx_installed_says_what_to_install(tiny_ckpt, tmp_path, capsys, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real_find_spec(name, *a))
    code = main(["export", "--ckpt", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--format", "ONNX", *TINY])
    assert code == 2 and "pip install 'fcn8s[onnx]'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ckpt"]
