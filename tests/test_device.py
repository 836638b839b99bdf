import pytest

from fcn8s.config import load_config
from fcn8s.device import loss_scale_manager, pick_target, precision_policy, setup_device
from fcn8s.errors import FCNError


def test_precision_policy_per_device():
    assert precision_policy("CPU") == ("O0", "none")
    assert precision_policy("GPU") == ("O2", "dynamic")
    assert precision_policy("Ascend") == ("O2", "dynamic")
    assert precision_policy("GPU", "O0") == ("O0", "none")
    assert precision_policy("CPU", "O0", "fixed") == ("O0", "fixed")


@pytest.mark.parametrize("amp, scale, message", [("O2", "auto", "mixed precision needs Ascend or GPU"),
                                                 ("O0", "dynamic", "not supported on CPU")])
def test_cpu_refuses_what_it_cannot_run(amp, scale, message):
    with pytest.raises(FCNError, match=message):
        precision_policy("CPU", amp, scale)


def test_auto_falls_back_to_cpu_here_and_named_devices_must_exist():
    assert pick_target("auto") in ("Ascend", "GPU", "CPU")
    assert pick_target("CPU") == "CPU"
    import mindspore as ms
    if not ms.hal.is_available("GPU"):
        with pytest.raises(FCNError, match="no GPU"):
            pick_target("GPU")


def test_setup_logs_one_line_and_builds_the_manager(capsys):
    import mindspore as ms
    cfg = load_config(None, ["device.target=CPU", "device.mode=pynative", "device.loss_scale=fixed"])
    setup = setup_device(cfg.device)
    line = capsys.readouterr().out.strip()
    assert line.startswith("[fcn8s] device CPU, pynative mode, amp O0, loss scale fixed 1024")
    assert "ONEDNN_MAX_CPU_ISA=" in line
    manager = loss_scale_manager(setup)
    assert manager.get_loss_scale() == 1024 and manager.get_drop_overflow_update() is False
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
