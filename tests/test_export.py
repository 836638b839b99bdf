import pytest

from fcn8s.checkpoint import save_checkpoint
from fcn8s.cli import main
from fcn8s.models import FCN

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


def test_onnx_export_failure_is_one_line_and_leaves_nothing(tiny_ckpt, tmp_path, capsys):
    """MindSpore 2.10's ONNX exporter fails on this network: the user gets one line, no file."""
    code = main(["export", "--ckpt", str(tiny_ckpt), "-o", str(tmp_path / "m.onnx"), "--format", "ONNX",
                 "--size", "64", "64", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fcn8s: error: MindSpore 2.10.0 cannot export this network to ONNX")
    assert "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.ckpt"]
