import os
import subprocess
import sys

import pytest

from fcn8s import device
from fcn8s.config import load_config
from fcn8s.device import loss_scale_manager, pick_target, precision_policy, setup_device
from fcn8s.errors import FCNError
from fcn8s.kernels.onednn import cap_mindspore_isa


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


def test_auto_picks_the_first_device_this_host_has_and_named_devices_must_exist():
    import mindspore as ms

    def present(target):
        try:
            return ms.hal.is_available(target)
        except (RuntimeError, ValueError):
            return False
    assert pick_target("auto") == next((t for t in ("Ascend", "GPU") if present(t)), "CPU")
    assert pick_target("CPU") == "CPU"
    if not present("GPU"):
        with pytest.raises(FCNError, match="no GPU"):
            pick_target("GPU")


@pytest.mark.parametrize("present, chosen", [({"Ascend", "GPU", "CPU"}, "Ascend"), ({"GPU", "CPU"}, "GPU"),
                                             ({"Ascend"}, "Ascend"), ({"CPU"}, "CPU"), (set(), "CPU")])
def test_auto_prefers_ascend_then_gpu_then_cpu(monkeypatch, present, chosen):
    monkeypatch.setattr(device, "is_available", lambda target: target in present)
    assert pick_target("auto") == chosen


def test_setup_logs_one_line_and_builds_the_manager(capsys):
    import mindspore as ms
    cfg = load_config(None, ["device.target=CPU", "device.mode=pynative", "device.loss_scale=fixed"])
    setup = setup_device(cfg.device)
    line = capsys.readouterr().out.strip()
    assert line.startswith("[fcn8s] device CPU, pynative mode, amp O0, loss scale fixed 1024")
    assert line.endswith(f"; {cap_mindspore_isa()}") and line.count("\n") == 0
    manager = loss_scale_manager(setup)
    assert manager.get_loss_scale() == 1024 and manager.get_drop_overflow_update() is False
    assert ms.get_context("mode") == ms.PYNATIVE_MODE


SIZED_POOL = """
import mindspore as ms
from fcn8s.config import load_config
from fcn8s.device import setup_device
{before}
setup_device(load_config(None, ["device.target=CPU"]).device, announce=False)
try:
    ms.runtime.set_memory(init_size="1GB", increase_size="1GB")
    print("pool left to be sized")
except RuntimeError as e:
    print("pool sized:", e)
"""


@pytest.mark.parametrize("before, expected", [
    ("", "pool sized: The 'set_memory' can not be set repeatedly."),        # sized by setup_device
    ("ms.runtime.set_memory(init_size='1GB', increase_size='1GB')",         # the user's own sizing is kept
     "pool sized: The 'set_memory' can not be set repeatedly."),
])
def test_setup_sizes_the_cpu_memory_pool_once_and_keeps_a_users_sizing(before, expected):
    # a fresh process: MindSpore's memory settings may be made once per process
    done = subprocess.run([sys.executable, "-c", SIZED_POOL.format(before=before)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected


MAPPED_AFTER_SETUP = """
import ctypes
from fcn8s.config import load_config
from fcn8s.device import setup_device


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
{setup}
libc.free(libc.malloc(20 << 20))   # glibc's own rule raises the threshold to 20 MiB when this is freed
mapped = libc.mallinfo2().hblks
buffer = libc.malloc(2 << 20)
print(libc.mallinfo2().hblks - mapped)
"""


@pytest.mark.parametrize("setup, mapped", [
    ("", 0),   # glibc's own rule: after the free above, a 2 MiB buffer comes from the heap
    ("setup_device(load_config(None, ['device.target=CPU']).device, announce=False)", 1),
])
def test_setup_fixes_the_mmap_threshold_so_large_buffers_go_back_to_the_system(setup, mapped):
    done = subprocess.run([sys.executable, "-c", MAPPED_AFTER_SETUP.format(setup=setup)], capture_output=True,
                          text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                       if k != "MALLOC_MMAP_THRESHOLD_"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip().splitlines()[-1]) == mapped
