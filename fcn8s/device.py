"""Device choice (Ascend, then GPU, then CPU), execution mode, and the precision policy per device."""
import ctypes
import os
from dataclasses import dataclass

from .errors import FCNError
from .log import get_logger, set_rank

FALLBACK_ORDER = ("Ascend", "GPU", "CPU")
M_MMAP_THRESHOLD = -3   # glibc's mallopt parameter (malloc.h)


@dataclass(frozen=True)
class DeviceSetup:
    target: str
    mode: str             # graph | pynative
    amp_level: str        # O0 .. O3
    loss_scale: str       # none | fixed | dynamic
    loss_scale_value: float

    def describe(self):
        scale = self.loss_scale if self.loss_scale == "none" else f"{self.loss_scale} {self.loss_scale_value:g}"
        return f"device {self.target}, {self.mode} mode, amp {self.amp_level}, loss scale {scale}"


def is_available(target):
    import mindspore as ms
    try:
        return bool(ms.hal.is_available(target))
    except (RuntimeError, ValueError):
        return False


def pick_target(requested):
    """``auto`` -> the first available of Ascend, GPU, CPU; a named device must be available."""
    if requested == "auto":
        return next(t for t in FALLBACK_ORDER if t == "CPU" or is_available(t))
    if requested != "CPU" and not is_available(requested):
        raise FCNError(f"device.target = {requested}: this MindSpore build or machine has no {requested} "
                       f"(use auto or CPU)")
    return requested


def precision_policy(target, amp_level="auto", loss_scale="auto"):
    """Resolve ``auto`` into (amp_level, loss_scale) for ``target``; refuse what the device cannot run.

    Ascend/GPU: O2 (fp16 compute, fp32 BatchNorm and weights) with a dynamic loss scale.
    CPU: fp32 (MindSpore's CPU kernels fail under O2) and no loss scale; a fixed scale without
    overflow-drop is the only manager the CPU backend supports.
    """
    accel = target in ("Ascend", "GPU")
    amp = amp_level if amp_level != "auto" else ("O2" if accel else "O0")
    scale = loss_scale if loss_scale != "auto" else ("dynamic" if accel and amp != "O0" else "none")
    if not accel and amp != "O0":
        raise FCNError(f"device.amp_level = {amp}: mixed precision needs Ascend or GPU; use O0 on CPU")
    if not accel and scale == "dynamic":
        raise FCNError("device.loss_scale = dynamic: not supported on CPU; use none or fixed")
    return amp, scale


def size_cpu_memory_pool():
    """Let MindSpore's CPU memory pool grow in blocks of an eighth of the machine's memory (at least 1 GB), unless
    the process has set its memory already (``mindspore.runtime.set_memory`` may be called once): its initial
    and increment sizes are a quarter of the memory each, and MindSpore 2.10 splits each size into two blocks.

    Why: the pool places a graph's tensors in blocks of 1 GB by default; a train step whose tensors need more
    (the full-width network at 1x512² needs just over 1 GB) spans two blocks, and the gaps the placement leaves
    in both are touched, so resident memory grows by a few hundred MB past the step's needs. A block is only
    reserved address space: the pages no tensor uses never become resident.
    """
    import mindspore as ms
    pool = max(2, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2 ** 30 // 4)
    try:
        ms.runtime.set_memory(init_size=f"{pool}GB", increase_size=f"{pool}GB")
    except RuntimeError:   # set before, by the user or an earlier call
        pass


def fix_mmap_threshold():
    """Fix glibc's mmap threshold at 1 MiB for this process (unless ``MALLOC_MMAP_THRESHOLD_`` is set, or the C
    library is not glibc): a buffer of 1 MiB or more is then mapped on allocation and returned on free.

    Why: glibc raises the threshold to the size of any mapped buffer freed (up to 32 MiB), after which the
    kernel library's oneDNN (its sgemm allocates packing buffers of 2-5 MiB per call) and MindSpore's
    runtime take such buffers from the heap, on whichever thread calls, and the heap grew by a few MiB every
    train step for as long as we ran one. With the threshold fixed it stays flat, at the same speed.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):   # not glibc
        pass


def setup_device(device_cfg, announce=True):
    """Set MindSpore's device and mode from the ``device`` config section; log one line.

    On CPU this first caps MindSpore's oneDNN at AVX2 (``kernels.onednn.cap_mindspore_isa``), which must
    happen before MindSpore runs its first CPU kernel, sizes its memory pool (``size_cpu_memory_pool``) and
    fixes the C library's mmap threshold (``fix_mmap_threshold``).
    """
    import mindspore as ms
    from .kernels.onednn import cap_mindspore_isa
    target = pick_target(device_cfg.target)
    amp, scale = precision_policy(target, device_cfg.amp_level, device_cfg.loss_scale)
    isa_note = cap_mindspore_isa() if target == "CPU" else None
    if target == "CPU":
        size_cpu_memory_pool()
        fix_mmap_threshold()
    ms.set_device(target)
    ms.set_context(mode=ms.GRAPH_MODE if device_cfg.mode == "graph" else ms.PYNATIVE_MODE)
    setup = DeviceSetup(target, device_cfg.mode, amp, scale, device_cfg.loss_scale_value)
    if announce:
        chosen = "" if device_cfg.target != "auto" else " (auto: Ascend > GPU > CPU)"
        extra = f"; {isa_note}" if isa_note else ""
        get_logger().info(f"{setup.describe()}{chosen}{extra}")
    return setup


def loss_scale_manager(setup):
    """The MindSpore loss-scale manager for ``setup``, or None for no scaling."""
    from mindspore import amp
    if setup.loss_scale == "fixed":
        return amp.FixedLossScaleManager(setup.loss_scale_value, drop_overflow_update=False)
    if setup.loss_scale == "dynamic":
        return amp.DynamicLossScaleManager(init_loss_scale=setup.loss_scale_value, scale_factor=2,
                                           scale_window=1000)
    return None


def init_distributed():
    """(rank, group size). Under msrun with several workers, initialise communication and data parallel."""
    workers = int(os.environ.get("MS_WORKER_NUM", "1") or 1)
    if workers <= 1:
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init
    init()
    rank, size = get_rank(), get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=size)
    set_rank(rank)
    get_logger().info(f"data parallel: {size} workers (this is rank {rank})")
    return rank, size
