"""What a measurement ran on: CPU model, cores, matmul peaks and the variables that choose kernels.

CPUs differ enough to reverse which kernels are faster (a 2-core Xeon's NumPy sgemm measured about
300 GFLOP/s, a 2-core EPYC's about 130), so every result file written by ``fcn8s bench`` or a
script in ``benchmarks/`` carries ``host_record()``.
"""
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

# variables that change which CPU kernels run, or on how many threads
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "OPENBLAS_CORETYPE", "KMP_AFFINITY", "OMP_WAIT_POLICY")
SGEMM_N = 2048


def kernel_environment():
    """KERNEL_ENV as this process sees it: what decided its kernels, kept with its numbers."""
    return {name: os.environ.get(name) for name in KERNEL_ENV}


def omp_num_threads():
    """OMP_NUM_THREADS (its first level) as a positive int; None when it is unset or not one."""
    omp = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(omp) if omp.isdigit() and int(omp) > 0 else None


def thread_budget():
    """(threads, why): how many threads this process's compute may use: OMP_NUM_THREADS when set, else the
    CPUs it may run on (its affinity, which taskset and cgroup cpusets narrow, unlike os.cpu_count)."""
    omp = omp_num_threads()
    if omp:
        return omp, "OMP_NUM_THREADS"
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:   # macOS has no affinity
        cores = os.cpu_count() or 1
    return cores, f"{cores} cores"


def _cpuinfo(field):
    """The value of the first ``field`` line of /proc/cpuinfo, or "" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
    except OSError:
        pass
    return ""


def cpu_name():
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags():
    """The CPU's feature flags (Linux): what decides which kernels a compiled library may use."""
    return _cpuinfo("flags")


def cpu_isa(flags=None):
    """The widest vector ISA the CPU (or ``flags``) has, as oneDNN names it ('avx512_core', 'avx2', 'sse41'), or ''.

    Two CPUs of one model name can differ here (an "AMD EPYC" of 2026-12-02 had AVX-512, another the
    same day had AVX2 only), and it decides which convolution kernels oneDNN can run.
    """
    flags = set((cpu_flags() if flags is None else flags).split())
    for isa, needs in (("avx512_core", {"avx512f", "avx512bw", "avx512vl", "avx512dq"}), ("avx2", {"avx2", "fma"}),
                       ("sse41", {"sse4_1"})):
        if needs <= flags:
            return isa
    return ""


def cpu_kind():
    """One name per kind of CPU, for a folder of results: model name and ISA, e.g. 'amd-epyc-avx2'."""
    words = "".join(c if c.isalnum() else " " for c in f"{cpu_name()} {cpu_isa()}".lower().replace("_", ""))
    return "-".join(words.split())


def timed(call, repeat, warmup):
    """(seconds of the first call, seconds of each of ``repeat`` calls after ``warmup`` untimed ones in all).

    The first call is one of the warm-ups (it compiles graphs, builds kernels); it is timed apart.
    """
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, times


def sgemm_gflops():
    """GFLOP/s of a 2048x2048 fp32 matmul in NumPy (its BLAS, all cores): the host's practical peak."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((SGEMM_N, SGEMM_N)).astype(np.float32)
    return 2 * SGEMM_N ** 3 / statistics.median(timed(lambda: a @ a, 5, 2)[1]) / 1e9


def matmul_peak():
    """GFLOP/s of a 2048x2048 fp32 matmul in NumPy (sgemm_gflops) and in MindSpore (median of 5)."""
    import mindspore as ms
    import numpy as np
    from .kernels.onednn import cap_mindspore_isa
    cap_mindspore_isa()   # as fcn8s runs MindSpore: its oneDNN fixes its ISA at first use
    n = SGEMM_N
    ta = ms.Tensor(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32))
    _, times = timed(lambda: ms.ops.matmul(ta, ta).asnumpy(), 5, 2)
    return {"numpy": sgemm_gflops(), "mindspore": 2 * n ** 3 / statistics.median(times) / 1e9}


def host_record(sgemm=None):
    """The dict every result file starts with; ``sgemm`` when the caller measured it already."""
    from . import __version__
    from importlib.metadata import PackageNotFoundError, version
    try:
        mindspore = version("mindspore")
    except PackageNotFoundError:
        mindspore = None
    return {"date": date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(), "isa": cpu_isa(),
            "cpu_family_model": f"{_cpuinfo('cpu family')}/{_cpuinfo('model')}",
            "python": platform.python_version(), "mindspore": mindspore, "fcn8s": __version__,
            "numpy_sgemm_gflops": round(sgemm if sgemm is not None else sgemm_gflops(), 1),
            "env": kernel_environment()}


def peak_rss_mib():
    """This process's peak resident memory (Linux's VmHWM), MiB.

    Not getrusage's ru_maxrss: Linux carries that over from the parent through fork and exec, so each
    measuring subprocess would report at least the bench process's own size.
    """
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


# cgroup (v2, v1) memory limit and usage: a container's limit, which /proc/meminfo does not show
_CGROUP_MEMORY = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                  ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def available_memory():
    """Bytes a new allocation can take without swapping: /proc/meminfo's MemAvailable, or less where the
    process's cgroup (a container) has a lower limit; the free physical pages where there is no /proc."""
    candidates = []
    try:
        meminfo = Path("/proc/meminfo").read_text()
        candidates += [int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in _CGROUP_MEMORY:
        try:
            candidates.append(int(Path(limit).read_text()) - int(Path(usage).read_text()))
        except (OSError, ValueError):   # no such file, or "max": no limit
            pass
    return min(candidates) if candidates else os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


if __name__ == "__main__":   # benchmarks/run_all.sh: the results folder of this kind of CPU
    print(cpu_kind())
