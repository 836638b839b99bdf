"""Build and load the oneDNN convolution kernels (``fcn8s/csrc/onednn_conv.cc``) for MindSpore on CPU.

The kernels are MindSpore AOT custom ops. They are compiled with the host's C++ compiler on first
use into a cache folder (``$FCN8S_CACHE``, default ``~/.cache/fcn8s``), keyed by the source, the
compiler and MindSpore's version, and written under a temporary name then renamed, so concurrent
processes (msrun workers) never load a half-written file. They run on a private copy of the
libdnnl.so.3 that MindSpore ships: a second instance of the library, whose ISA is set to the best
the CPU has instead of the AVX2 cap that MindSpore's own instance needs (see ``fcn8s/__init__.py``).
Everything here is CPU-only; ``available()`` says why the kernels cannot be used, and the network
then falls back to MindSpore's kernels.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

from ..fileio import atomic_path
from ..log import get_logger

SOURCE = Path(__file__).resolve().parent.parent / "csrc" / "onednn_conv.cc"
OPS = ("forward", "input_grad", "weight_grad")
# dnnl_cpu_isa_default: the best the CPU has. ONEDNN_MAX_CPU_ISA (which fcn8s sets to AVX2 for
# MindSpore's own NCHW kernels) does not apply to this instance: its NHWC kernels are fast on AVX-512.
ISA_DEFAULT = 0


class OneDNNUnavailable(RuntimeError):
    """The kernels cannot be built or loaded here; the message says why."""


def cache_dir():
    return Path(os.environ.get("FCN8S_CACHE") or Path.home() / ".cache" / "fcn8s")


def _mindspore_dnnl():
    import mindspore
    path = Path(mindspore.__file__).parent / "lib" / "libdnnl.so.3"
    if not path.is_file():
        raise OneDNNUnavailable(f"{path} not found (this MindSpore build has no oneDNN)")
    return path, mindspore.__version__


def _compile(compiler, target):
    get_logger().info(f"compiling the oneDNN convolution kernels into {target} (once)")
    with atomic_path(target) as tmp:
        cmd = [compiler, "-O2", "-std=c++17", "-fPIC", "-shared", "-fopenmp", "-o", str(tmp), str(SOURCE), "-ldl"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise OneDNNUnavailable(f"compiling {SOURCE} failed: {done.stderr.strip()[-400:]}")


def build(cache, compiler_name):
    """(kernel library, private copy of MindSpore's libdnnl.so.3) in ``cache``, each made only if missing."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise OneDNNUnavailable(f"x86-64 Linux only, this is {platform.system()} {platform.machine()}")
    dnnl, ms_version = _mindspore_dnnl()
    compiler = shutil.which(compiler_name)
    if compiler is None:
        raise OneDNNUnavailable(f"no C++ compiler {compiler_name!r} on PATH (set CXX to use another)")
    key = hashlib.sha256(SOURCE.read_bytes() + f"{ms_version} {compiler}".encode()).hexdigest()[:16]
    library = Path(cache) / f"onednn_conv-{key}.so"
    # A copy under another name loads as a separate oneDNN instance (dlopen matches by file).
    private_dnnl = Path(cache) / f"libdnnl-{ms_version}-{dnnl.stat().st_size}.so.3"
    try:
        if not library.is_file():
            _compile(compiler, library)
        if not private_dnnl.is_file():
            with atomic_path(private_dnnl) as tmp:
                shutil.copyfile(dnnl, tmp)
    except OSError as e:
        raise OneDNNUnavailable(f"cannot write the kernel cache {cache} ({e.strerror or e}; set FCN8S_CACHE)") from None
    return library, private_dnnl


@functools.lru_cache(maxsize=None)
def _kernels():
    """(path, ctypes handle) of the compiled kernel library, initialised; OneDNNUnavailable with the reason."""
    library, private_dnnl = build(cache_dir(), os.environ.get("CXX", "g++"))
    lib = ctypes.CDLL(str(library))
    lib.fcn8s_onednn_error.restype = ctypes.c_char_p
    if lib.fcn8s_onednn_init(str(private_dnnl).encode(), ISA_DEFAULT) != 0:
        raise OneDNNUnavailable(lib.fcn8s_onednn_error().decode())
    return str(library), lib


def load():
    """Path of the compiled kernel library, loaded and initialised; raises OneDNNUnavailable with the reason."""
    return _kernels()[0]


@functools.lru_cache(maxsize=None)
def available():
    """(True, "") when the kernels load here, else (False, why); tried once per process."""
    try:
        load()
    except OneDNNUnavailable as e:
        return False, str(e)
    return True, ""


def kernel_name(op, batch, in_channels, out_channels, height, width, kernel_size):
    """The oneDNN implementation that runs ``op`` (one of OPS) at this shape, e.g. 'brg_conv_fwd:avx512_core'."""
    lib = _kernels()[1]
    out = ctypes.create_string_buffer(128)
    dims = [ctypes.c_int64(v) for v in (batch, in_channels, out_channels, height, width, kernel_size)]
    if lib.fcn8s_onednn_impl(OPS.index(op), *dims, out, len(out)) != 0:
        raise OneDNNUnavailable(lib.fcn8s_onednn_error().decode())
    return out.value.decode()
