"""MindSpore's oneDNN on CPU: the AVX2 cap its own kernels need, and fcn8s's oneDNN convolution kernels.

``cap_mindspore_isa()`` caps the oneDNN instance MindSpore runs its CPU kernels on at AVX2.

The kernels (``onednn_conv.cc`` beside this file) are MindSpore AOT custom ops. They are compiled with the
host's C++ compiler on first use into a cache folder (``$FCN8S_CACHE``, default ``~/.cache/fcn8s``),
keyed by everything that changes the binary (``cache_key``). Each cached file is written under a
temporary name then renamed, and its sha256 is recorded beside it afterwards, so that no process loads a
half-written file, and a truncated or corrupt one (which would kill the process with SIGBUS when loaded) is
rebuilt instead. Processes that start together (msrun workers) take turns (``build.lock``): the first builds,
the others wait and load what it built. A cache another user can write is refused: loading
code from it would run theirs. The kernels run on a private copy of the libdnnl.so.3 that MindSpore
ships: a second instance of the library, left at the best ISA the CPU has. Everything here is CPU-only;
``available()`` says why the kernels cannot be used, and the network then falls back to MindSpore's
kernels.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
from pathlib import Path

from ..fileio import atomic_path, atomic_write_text, taking_turns
from ..host import cpu_flags, omp_num_threads, thread_budget
from ..log import get_logger
from . import ONEDNN_LAYOUTS

SOURCE = Path(__file__).resolve().parent / "onednn_conv.cc"
# -O3 -fno-trapping-math: GCC vectorizes the loss kernels' class loops only with both (a float comparison that
# may trap is control flow to it); nothing here uses floating-point exceptions. -ffp-contract=fast: the
# upsampling's multiply-adds become FMA instructions in its AVX2 + FMA build (-std=c++17 turns contraction off)
CXXFLAGS = ("-O3", "-fno-trapping-math", "-ffp-contract=fast", "-std=c++17", "-fPIC", "-shared", "-pthread")
UPSAMPLE_FACTOR_MULTIPLE = 8   # kLanes in onednn_conv.cc: the library upsamples by multiples of 8 only
TRAIN_OPS = ("forward", "input_grad", "weight_grad")
OPS = (*TRAIN_OPS, "forward_bn_relu")   # Op in onednn_conv.cc; the last is inference's, BatchNorm and ReLU fused
CONV_SUFFIXES = ("", "_any_layout")   # the entry points' suffix per Layout in onednn_conv.cc
ISA_AVX2 = 0x7        # dnnl_cpu_isa_avx2 in oneDNN 3.x's dnnl_types.h
CACHE_FILE_MODE = 0o644   # whatever the umask: build() refuses cached files that others can write


class OneDNNUnavailable(RuntimeError):
    """The kernels cannot be built or loaded here; the message says why."""


def _require_x86_64_linux():
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise OneDNNUnavailable(f"x86-64 Linux only, this is {platform.system()} {platform.machine()}")


def _mindspore_dnnl():
    """The libdnnl.so.3 MindSpore links; loading this file gives MindSpore's own oneDNN instance."""
    import mindspore
    path = Path(mindspore.__file__).parent / "lib" / "libdnnl.so.3"
    if not path.is_file():
        raise OneDNNUnavailable(f"{path} not found (this MindSpore build has no oneDNN)")
    return path


@functools.lru_cache(maxsize=None)
def cap_mindspore_isa():
    """Cap MindSpore's own oneDNN at AVX2; a one-line note of what was done, for the device log line.

    Why: on AVX-512 hosts MindSpore 2.10's oneDNN runs its NCHW convolutions in a reference-grade kernel
    (under 1 GFLOP/s); capped at AVX2 it picks gemm:jit, about 100x faster. The cap is set through
    oneDNN's API on the file MindSpore links (the dynamic linker keeps one instance per file, so this is
    MindSpore's instance), not through ONEDNN_MAX_CPU_ISA, which PyTorch's oneDNN reads too and child
    processes inherit. oneDNN fixes its ISA at first use, so this must run before MindSpore's first CPU
    kernel; later calls return the first call's note. A user's own ONEDNN_MAX_CPU_ISA is left to oneDNN.
    """
    if "ONEDNN_MAX_CPU_ISA" in os.environ:
        return f"oneDNN ISA: ONEDNN_MAX_CPU_ISA={os.environ['ONEDNN_MAX_CPU_ISA']} (set by the user)"
    try:
        _require_x86_64_linux()
        dnnl = _mindspore_dnnl()
        status = ctypes.CDLL(str(dnnl)).dnnl_set_max_cpu_isa(ISA_AVX2)
    except (OneDNNUnavailable, OSError) as e:
        return f"oneDNN ISA: MindSpore's left as it is ({e})"
    if status != 0:
        note = (f"oneDNN ISA: could not cap MindSpore's at AVX2 (status {status}; oneDNN refuses once it has run "
                f"a kernel), so its convolutions may run the slow reference kernel")
        get_logger().warning(note)
        return note
    return "oneDNN ISA: MindSpore's capped at AVX2 (fast NCHW convolutions)"


def kernel_threads():
    """(threads of the kernels' pool, why): the same budget MindSpore's CPU kernels get.

    OMP_NUM_THREADS wins; msrun's workers always have it (``fcn8s launch`` gives each its share of the
    node's cores, see launch.worker_threads; a bare msrun passes on the 1 that importing MindSpore sets).
    Otherwise MindSpore's runtime_num_threads (a value set through device_context.cpu.op_tuning.threads_num
    cannot be read back), at most the cores this process may run on.
    """
    cores, why = thread_budget()
    if omp_num_threads():
        return cores, why
    import mindspore as ms
    mindspore_threads = ms.get_context("runtime_num_threads")
    if 0 < mindspore_threads < cores:
        return mindspore_threads, f"MindSpore's runtime_num_threads, {why}"
    return cores, why


def cache_dir():
    return Path(os.environ.get("FCN8S_CACHE") or Path.home() / ".cache" / "fcn8s").resolve()


def cache_key(compiler):
    """Hash of what the compiled library depends on: the source, MindSpore's version, the compiler (path
    and ``--version``), the flags, and the CPU (its /proc/cpuinfo flags, so a cache shared between
    hosts never serves a library built on another kind of CPU)."""
    import mindspore
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    except OSError as e:
        raise OneDNNUnavailable(f"cannot run {compiler} --version ({e.strerror or e})") from None
    parts = (SOURCE.read_bytes(), mindspore.__version__.encode(), compiler.encode(), version.encode(),
             " ".join(CXXFLAGS).encode(), cpu_flags().encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _checksum_path(path):
    return path.with_name(path.name + ".sha256")


def _store(path, write):
    """Write ``path`` through ``write(tmp)``, then its sha256 beside it, each atomically (checksum last)."""
    with atomic_path(path, mode=CACHE_FILE_MODE) as tmp:
        write(tmp)
        digest = _sha256(tmp)
    atomic_write_text(_checksum_path(path), digest)


def _intact(path):
    """True when ``path`` and its recorded sha256 agree; False when either is missing or they differ."""
    try:
        return _sha256(path) == _checksum_path(path).read_text().strip()
    except FileNotFoundError:
        return False


def _refuse_if_others_can_write(path):
    """Code is loaded only from a file or folder this user owns and no one else can write (as ssh does for keys)."""
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise OneDNNUnavailable(f"{path} is owned by uid {st.st_uid}, not by this user: refusing to load kernels "
                                f"from it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OneDNNUnavailable(f"{path} is writable by other users ({stat.filemode(st.st_mode)}): refusing to "
                                f"load kernels from it (chmod go-w, or set FCN8S_CACHE)")


def _compile(compiler, target):
    get_logger().info(f"compiling the oneDNN convolution kernels into {target} (once)")

    def run(tmp):
        done = subprocess.run([compiler, *CXXFLAGS, "-o", str(tmp), str(SOURCE), "-ldl"], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise OneDNNUnavailable(f"compiling {SOURCE} failed: {done.stderr.strip()[-400:]}")
    _store(target, run)


def build(cache, compiler_name):
    """(kernel library, private copy of MindSpore's libdnnl.so.3) in ``cache``, each checked against its
    recorded sha256 and made again when missing or damaged."""
    import mindspore
    _require_x86_64_linux()
    dnnl = _mindspore_dnnl()
    cache = Path(cache)
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        _refuse_if_others_can_write(cache)
        compiler = shutil.which(compiler_name)
        if compiler is None:
            raise OneDNNUnavailable(f"no C++ compiler {compiler_name!r} on PATH (set CXX to use another)")
        library = cache / f"onednn_conv-{cache_key(compiler)}.so"
        # A copy under another name loads as a separate oneDNN instance (the dynamic linker matches by file).
        private_dnnl = cache / f"libdnnl-{mindspore.__version__}-{dnnl.stat().st_size}.so.3"
        with taking_turns(cache / "build.lock", f"waiting for another process building the kernels in {cache}"):
            if not _intact(library):
                _compile(compiler, library)
            if not _intact(private_dnnl):
                _store(private_dnnl, lambda tmp: shutil.copyfile(dnnl, tmp))
    except OSError as e:
        raise OneDNNUnavailable(f"cannot write the kernel cache {cache} ({e.strerror or e}; set FCN8S_CACHE)") from None
    for path in (library, private_dnnl):
        _refuse_if_others_can_write(path)
    return library, private_dnnl


@functools.lru_cache(maxsize=None)
def _kernels():
    """(path, ctypes handle) of the compiled kernel library, initialised; OneDNNUnavailable with the reason."""
    library, private_dnnl = build(cache_dir(), os.environ.get("CXX", "g++"))
    threads, why = kernel_threads()
    try:
        lib = ctypes.CDLL(str(library))
    except OSError as e:
        raise OneDNNUnavailable(f"cannot load the kernel library ({e})") from None
    lib.fcn8s_onednn_error.restype = ctypes.c_char_p
    lib.fcn8s_set_pool_spin.restype = ctypes.c_double
    if lib.fcn8s_onednn_init(str(private_dnnl).encode(), threads) != 0:
        raise OneDNNUnavailable(lib.fcn8s_onednn_error().decode())
    get_logger().info(f"oneDNN convolution kernels: {threads} thread{'s' if threads > 1 else ''} ({why})")
    return str(library), lib


def load():
    """Path of the compiled kernel library, loaded and initialised; raises OneDNNUnavailable with the reason."""
    return _kernels()[0]


def use_baseline_build(on):
    """Whether the library's own loops (the loss, the upsampling, training's BatchNorm) run their baseline x86-64
    build (True) or, where the CPU has AVX2 and FMA, their build for those (False, the default): for tests and
    A/B benchmarks."""
    _kernels()[1].fcn8s_baseline_build(int(on))


def set_pool_spin(microseconds):
    """How long the library's threads spin for the next parallel region (and the caller for the workers' shares)
    before they sleep, in microseconds (the library's kSpinMicroseconds by default); returns the spin it replaces.
    For tests and A/B benchmarks."""
    return _kernels()[1].fcn8s_set_pool_spin(ctypes.c_double(microseconds))


def vector_build():
    """Which build of those loops runs: "avx2-fma" or "baseline"."""
    return "avx2-fma" if _kernels()[1].fcn8s_vector_build() else "baseline"


def cpu_has_avx2_fma():
    """Whether this CPU can run the AVX2 + FMA build of those loops (the library's own test, whatever
    ``use_baseline_build`` says)."""
    return bool(_kernels()[1].fcn8s_cpu_has_avx2_fma())


@functools.lru_cache(maxsize=None)
def available():
    """(True, "") when the kernels load here, else (False, why); tried once per process."""
    try:
        load()
    except OneDNNUnavailable as e:
        return False, str(e)
    return True, ""


def _layout(way):
    """The Layout (onednn_conv.cc) of a oneDNN convolution made ``way``, one of kernels.ONEDNN_LAYOUTS."""
    return list(ONEDNN_LAYOUTS).index(way)


def conv_function(op, way):
    """The library's entry point that runs ``op`` (one of OPS) of a convolution made ``way`` (ONEDNN_LAYOUTS)."""
    return f"conv2d_{op}{CONV_SUFFIXES[_layout(way)]}"


def kernel_name(op, batch, in_channels, out_channels, height, width, kernel_size, way="onednn"):
    """The oneDNN implementation that runs ``op`` (one of OPS) at this shape, e.g. 'brg_conv_fwd:avx512_core',
    for a convolution made ``way`` (kernels.ONEDNN_LAYOUTS: channels-last inside, or oneDNN's choice)."""
    lib = _kernels()[1]
    out = ctypes.create_string_buffer(128)
    dims = [ctypes.c_int64(v) for v in (batch, in_channels, out_channels, height, width, kernel_size)]
    if lib.fcn8s_onednn_impl(OPS.index(op), _layout(way), *dims, out, len(out)) != 0:
        raise OneDNNUnavailable(lib.fcn8s_onednn_error().decode())
    return out.value.decode()
