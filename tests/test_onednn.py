"""MindSpore's oneDNN ISA cap, and the oneDNN kernel library: its build, its cache, and what happens
when it cannot be used.

Its numerics (forward and both gradients, per layer and for the whole network) are tested against
nn.Conv2d in test_models.py.
"""
import ctypes
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fcn8s.errors import FCNError
from fcn8s import kernels
from fcn8s.kernels import onednn, probe
from fcn8s.models import FCN

x86_64_linux = pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64",
                                  reason="oneDNN's ISA cap and kernels are for x86-64 Linux")


@pytest.fixture
def compiler():
    """The compiler the kernels are built with (CXX, default g++); skips the test where there is none."""
    path = shutil.which(os.environ.get("CXX", "g++"))
    if path is None:
        pytest.skip(f"no C++ compiler {os.environ.get('CXX', 'g++')!r}")
    return path


@pytest.fixture
def fresh_kernels():
    """The kernels are loaded again (from the cache FCN8S_CACHE names then) inside the test, and again after it."""
    onednn._kernels.cache_clear()
    onednn.available.cache_clear()
    yield
    onednn._kernels.cache_clear()
    onednn.available.cache_clear()


def _copy_of_the_session_cache(tmp_path):
    """A cache folder holding the session's built files (and their checksums), without compiling again."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    for path in onednn.build(onednn.cache_dir(), os.environ.get("CXX", "g++")):
        for name in (path.name, path.name + ".sha256"):
            shutil.copyfile(path.parent / name, cache / name)
    return cache


CAP_SCRIPT = r"""
import os, subprocess, sys
user_isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
import fcn8s
assert os.environ.get("ONEDNN_MAX_CPU_ISA") == user_isa, "import fcn8s changed it"
from fcn8s.config import load_config
from fcn8s.device import setup_device
setup_device(load_config(None, ["device.target=CPU", "device.mode=pynative"]).device)
assert os.environ.get("ONEDNN_MAX_CPU_ISA") == user_isa, "setup_device changed it"
import mindspore as ms, numpy as np
from mindspore import nn
nn.Conv2d(64, 64, 3)(ms.Tensor(np.ones((1, 64, 64, 64), np.float32))).asnumpy()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('ONEDNN_MAX_CPU_ISA'))"],
                       capture_output=True, text=True)
print("child ONEDNN_MAX_CPU_ISA:", child.stdout.strip())
"""


@x86_64_linux
@pytest.mark.parametrize("user_isa, isa_line, note", [
    (None, "isa:Intel AVX2", "oneDNN ISA: MindSpore's capped at AVX2"),
    ("SSE41", "isa:Intel SSE4.1", "oneDNN ISA: ONEDNN_MAX_CPU_ISA=SSE41 (set by the user)"),
])
def test_mindspore_oneDNN_is_capped_at_avx2_without_touching_the_environment(user_isa, isa_line, note):
    """oneDNN's verbose output names the ISA and the convolution kernel MindSpore's own instance runs."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env.update(ONEDNN_VERBOSE="1", **({"ONEDNN_MAX_CPU_ISA": user_isa} if user_isa else {}))
    done = subprocess.run([sys.executable, "-c", CAP_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert any(note in line for line in lines if line.startswith("[fcn8s] device CPU")), done.stdout
    assert f"onednn_verbose,v1,info,cpu,{isa_line}" in lines, done.stdout
    convolutions = [line.split(",")[6] for line in lines if ",primitive,exec,cpu,convolution," in line]
    assert convolutions and not any("ref" in c or "avx512" in c for c in convolutions), convolutions
    assert f"child ONEDNN_MAX_CPU_ISA: {user_isa}" in lines


def test_build_compiles_once_into_the_cache(tmp_path, compiler):
    library, private_dnnl = onednn.build(tmp_path, compiler)
    assert private_dnnl.read_bytes() == onednn._mindspore_dnnl().read_bytes()
    for path in (library, private_dnnl):
        assert (tmp_path / (path.name + ".sha256")).read_text() == hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.stat().st_mode & 0o777 == 0o644
    stamps = library.stat().st_mtime_ns, private_dnnl.stat().st_mtime_ns
    assert onednn.build(tmp_path, compiler) == (library, private_dnnl)
    assert (library.stat().st_mtime_ns, private_dnnl.stat().st_mtime_ns) == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [library.name, library.name + ".sha256", private_dnnl.name, private_dnnl.name + ".sha256", "build.lock"])


def test_a_missing_compiler_is_named(tmp_path):
    with pytest.raises(onednn.OneDNNUnavailable, match=r"no C\+\+ compiler 'no-such-c\+\+' on PATH"):
        onednn.build(tmp_path, "no-such-c++")


def test_a_failed_compile_leaves_nothing_in_the_cache(tmp_path):
    with pytest.raises(onednn.OneDNNUnavailable, match="compiling .*onednn_conv.cc failed"):
        onednn.build(tmp_path, "false")
    assert [p.name for p in tmp_path.iterdir()] == ["build.lock"]   # an empty file, held by no one now


TOGETHER = """
import sys, time
from fcn8s.kernels import onednn, probe
job, cache, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))   # both processes begin at the same moment
if job == "build":
    onednn.build(cache, sys.argv[4])
else:
    def measure(width):   # slow, and different in each process
        time.sleep(2)
        return {"pid": {"mindspore": float(__import__("os").getpid())}}
    probe.measure = measure
    print("verdict", probe.verdict_seconds(0.5)[0])
"""


def _two_processes_at_once(job, cache, *extra):
    """The outputs of two processes running ``job`` of TOGETHER on ``cache``, started at the same moment."""
    start = time.time() + 5   # after both have imported fcn8s (and MindSpore)
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER, job, str(cache), str(start), *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, FCN8S_CACHE=str(cache))) for _ in range(2)]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    return [out for out, _ in outputs]


def test_processes_that_start_together_build_the_kernels_once(tmp_path):
    """msrun's workers start together on a cold cache: one builds, the others wait and find it built."""
    runs = tmp_path / "compiler runs"
    fake = tmp_path / "c++"   # slow, and counts its runs; writes a stand-in library
    fake.write_text(f"""#!/bin/sh
[ "$1" = --version ] && {{ echo 'fake c++ 1.0'; exit 0; }}
echo run >> '{runs}'
sleep 2
while [ $# -gt 0 ]; do [ "$1" = -o ] && echo library > "$2"; shift; done
""")
    fake.chmod(0o755)
    outputs = _two_processes_at_once("build", tmp_path / "cache", str(fake))
    assert runs.read_text() == "run\n"
    assert sum("waiting for another process building the kernels" in out for out in outputs) == 1, outputs


def test_processes_that_start_together_share_one_probe_verdict(tmp_path):
    """One measures, the others wait and read its verdict: every worker runs the same kernels."""
    outputs = _two_processes_at_once("probe", tmp_path)
    verdicts = [next(line for line in out.splitlines() if line.startswith("verdict")) for out in outputs]
    assert verdicts[0] == verdicts[1], outputs
    assert sum("waiting for another process measuring the kernels" in out for out in outputs) == 1, outputs


def test_an_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(onednn.OneDNNUnavailable, match=f"cannot write the kernel cache {blocker}.*FCN8S_CACHE"):
        onednn.build(blocker, "g++")


def test_the_cache_folder_is_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FCN8S_CACHE", "relative/cache")
    assert onednn.cache_dir() == tmp_path / "relative" / "cache"


@pytest.mark.parametrize("mode", [0o770, 0o707], ids=["group-writable", "other-writable"])
def test_a_cache_folder_others_can_write_is_refused(tmp_path, mode):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    with pytest.raises(onednn.OneDNNUnavailable, match=f"{cache} is writable by other users .*refusing"):
        onednn.build(cache, "g++")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_cache_folder_of_another_user_is_refused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chown(cache, 12345, 12345)
    with pytest.raises(onednn.OneDNNUnavailable, match=f"{cache} is owned by uid 12345, not by this user"):
        onednn.build(cache, "g++")


def test_a_cached_library_others_can_write_is_refused(tmp_path, onednn_kernels):
    cache = _copy_of_the_session_cache(tmp_path)
    library = next(cache.glob("onednn_conv-*.so"))
    library.chmod(0o664)
    with pytest.raises(onednn.OneDNNUnavailable, match=f"{library} is writable by other users"):
        onednn.build(cache, os.environ.get("CXX", "g++"))


def test_the_compiler_version_is_part_of_the_cache_key(tmp_path):
    fake = tmp_path / "c++"

    def compiler_reporting(version):
        fake.write_text(f"#!/bin/sh\necho '{version}'\n")
        fake.chmod(0o755)
        return onednn.cache_key(str(fake))
    assert compiler_reporting("c++ 12.2.0") == compiler_reporting("c++ 12.2.0")
    assert compiler_reporting("c++ 12.2.0") != compiler_reporting("c++ 13.1.0")


@pytest.mark.parametrize("damaged", ["kernel library", "private libdnnl"])
def test_a_damaged_cached_file_is_rebuilt_not_loaded(tmp_path, onednn_kernels, damaged):
    """In a subprocess: loading a truncated library would kill the process (SIGBUS)."""
    cache = _copy_of_the_session_cache(tmp_path)
    path = next(cache.glob("onednn_conv-*.so" if damaged == "kernel library" else "libdnnl-*.so.3"))
    intact = path.read_bytes()
    path.write_bytes(intact[:len(intact) // 2])
    done = subprocess.run([sys.executable, "-c", "from fcn8s.kernels import onednn; print(onednn.available())"],
                          capture_output=True, text=True, env=dict(os.environ, FCN8S_CACHE=str(cache)), timeout=300)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.splitlines()[-1] == "(True, '')"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (cache / (path.name + ".sha256")).read_text()
    assert path.stat().st_size == len(intact)


def test_a_library_that_does_not_load_is_unavailable_and_auto_falls_back(tmp_path, monkeypatch, compiler,
                                                                          fresh_kernels):
    """A file dlopen refuses (built for another system, a noexec mount, ...) with a checksum that matches."""
    library = tmp_path / f"onednn_conv-{onednn.cache_key(compiler)}.so"
    library.write_bytes(b"not an ELF file")
    library.chmod(0o644)
    (tmp_path / (library.name + ".sha256")).write_text(hashlib.sha256(library.read_bytes()).hexdigest())
    monkeypatch.setenv("FCN8S_CACHE", str(tmp_path))
    with pytest.raises(onednn.OneDNNUnavailable, match=r"cannot load the kernel library \(.*onednn_conv-.*\.so"):
        onednn.load()
    plan, note = kernels.choose("auto", 1.0)
    assert plan == kernels.MINDSPORE_PLAN
    assert note.startswith("convolutions: MindSpore's (oneDNN custom kernels not used: cannot load")


@pytest.mark.parametrize("way", ["onednn", "onednn-any"])
def test_the_kernels_are_the_fast_ones(onednn_kernels, way):
    names = [onednn.kernel_name(op, 2, 64, 64, 32, 32, 3, way) for op in onednn.OPS]
    assert re.match(r"(brg|jit)\w*:", names[0]), names     # brgemm or jit, at this CPU's ISA
    assert "ref" not in " ".join(names), names


def test_a_shape_oneDNN_refuses_is_named(onednn_kernels):
    with pytest.raises(onednn.OneDNNUnavailable, match="memory_desc_create_with_tag"):
        onednn.kernel_name("forward", 1, -1, 8, 8, 8, 3)


def _library_call(lib, function, *arrays):
    """Call one of the library's AOT ops on numpy arrays (its inputs, then its output); its return code."""
    params = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in arrays]
    return getattr(lib, function)(len(arrays), params, (ctypes.c_int * len(arrays))(*(a.ndim for a in arrays)),
                                  (ctypes.POINTER(ctypes.c_int64) * len(arrays))(*shapes),
                                  (ctypes.c_char_p * len(arrays))(*[str(a.dtype).encode() for a in arrays]),
                                  None, None)


@pytest.mark.parametrize("spin_us", [0.0, 1e5], ids=["threads-sleep-between-regions", "threads-spin-through"])
def test_the_kernels_threads_give_the_same_results_sleeping_or_spinning_between_regions(onednn_kernels, rng,
                                                                                        spin_us):
    """The library's pool hands each region to its workers either awake (spinning) or asleep (condition variable):
    a convolution called back to back, each way, equals a float64 reference every time."""
    if onednn.kernel_threads()[0] == 1:
        pytest.skip("the kernels run one thread here: no workers to hand regions to")
    x = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    weight = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    patches = np.lib.stride_tricks.sliding_window_view(np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1))),
                                                       (3, 3), axis=(2, 3))
    expected = np.einsum("nchwij,ocij->nohw", patches, weight.astype(np.float64))
    lib = ctypes.CDLL(onednn.load())
    default = onednn.set_pool_spin(spin_us)
    try:
        for _ in range(50):
            y = np.zeros((2, 16, 32, 32), np.float32)
            assert _library_call(lib, "conv2d_forward", x, weight, y) == 0
            np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    finally:
        assert onednn.set_pool_spin(default) == pytest.approx(spin_us)
    assert default == pytest.approx(100.0)   # kSpinMicroseconds


@pytest.mark.parametrize("weight_shape, y_shape", [((4, 3, 3, 3), (1, 4, 5, 5)),    # weight's in channels
                                                   ((4, 8, 3, 3), (1, 5, 5, 5)),    # y's channels
                                                   ((4, 8, 3, 3), (1, 4, 5, 6)),    # y's size
                                                   ((4, 8, 2, 2), (1, 4, 5, 5))])   # even kernel
def test_the_kernels_refuse_shapes_that_disagree(onednn_kernels, weight_shape, y_shape):
    lib = ctypes.CDLL(onednn.load())
    lib.fcn8s_onednn_error.restype = ctypes.c_char_p
    x = np.ones((1, 8, 5, 5), np.float32)
    assert _library_call(lib, "conv2d_forward", x, np.ones((4, 8, 3, 3), np.float32),
                         np.zeros((1, 4, 5, 5), np.float32)) == 0
    y = np.full(y_shape, 7.0, np.float32)
    assert _library_call(lib, "conv2d_forward", x, np.ones(weight_shape, np.float32), y) == 1
    assert lib.fcn8s_onednn_error().decode().startswith(
        f"shapes disagree: x (1, 8, 5, 5), weight {tuple(weight_shape)}, y {tuple(y_shape)}")
    assert np.all(y == 7.0)


@pytest.mark.parametrize("weight_shape, y_shape, problem", [
    ((3, 4, 16, 16), (1, 4, 16, 24), None),                          # agree: x8, 3 -> 4 channels
    ((3, 4, 8, 8), (1, 4, 8, 12), "the weight must be (c, o, 2 s, 2 s) with s a multiple of 8"),   # x4
    ((2, 4, 16, 16), (1, 4, 16, 24), "the weight must be"),         # the weight's in channels
    ((3, 4, 16, 16), (1, 5, 16, 24), "the output must be (n, o, s h, s w)"),
    ((3, 4, 16, 16), (1, 4, 16, 23), "the output must be"),
])
def test_the_upsampling_refuses_shapes_that_disagree(onednn_kernels, weight_shape, y_shape, problem):
    lib = ctypes.CDLL(onednn.load())
    lib.fcn8s_onednn_error.restype = ctypes.c_char_p
    x = np.ones((1, 3, 2, 3), np.float32)
    y = np.full(y_shape, 7.0, np.float32)
    status = _library_call(lib, "upsample_forward", x, np.ones(weight_shape, np.float32), y)
    if problem is None:   # a constant map of ones, upsampled: 3 input channels x 4 products (2 x 2 inputs) inside
        assert status == 0 and np.all(y[:, :, 4:-4, 4:-4] == 12.0)
        return
    assert status == 1 and lib.fcn8s_onednn_error().decode().startswith("upsample: " + problem)
    assert np.all(y == 7.0)


@pytest.mark.parametrize("gamma_shape, stats_shape, problem", [
    ((3,), (2, 3), None),
    ((4,), (2, 3), "gamma, beta and the moving statistics must be (c,)"),
    ((3,), (3, 3), "the statistics must be (2, c)"),
])
def test_the_batchnorm_refuses_shapes_that_disagree(onednn_kernels, gamma_shape, stats_shape, problem):
    lib = ctypes.CDLL(onednn.load())
    lib.fcn8s_onednn_error.restype = ctypes.c_char_p
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    moving = [np.zeros(3, np.float32), np.ones(3, np.float32)]
    y, stats = np.full_like(x, 7.0), np.full(stats_shape, 7.0, np.float32)
    status = _library_call(lib, "batch_norm_relu_forward", x, np.ones(gamma_shape, np.float32), np.zeros(3, np.float32),
                           np.array([1e-5], np.float32), *moving, np.array([0.1], np.float32), y, stats)
    if problem is None:   # channel 1 of both images: 4..7 and 16..19, mean 11.5, squared deviations 298
        assert status == 0
        np.testing.assert_allclose([moving[0][1], moving[1][1]], [1.15, 0.9 + 0.1 * 298 / 7], rtol=1e-6)
        return
    assert status == 1 and lib.fcn8s_onednn_error().decode() == "batch norm: " + problem
    assert np.all(y == 7.0) and np.all(stats == 7.0) and not moving[0].any() and np.all(moving[1] == 1.0)


def _upsampling_reference(x, weight, dy, s):
    """float64 transposed convolution (kernel 2s, stride s, padding s/2) of x by weight, and the gradients of
    sum(y * dy) with respect to x and the weight, computed on the padded output as sums over input pixels."""
    x, weight, dy = (a.astype(np.float64) for a in (x, weight, dy))
    n, _, h, w = x.shape
    k, p = 2 * s, s // 2
    padded = np.zeros((n, weight.shape[1], (h + 1) * s, (w + 1) * s))   # the output with p on each side
    dy_padded = np.zeros_like(padded)
    dy_padded[:, :, p:p + h * s, p:p + w * s] = dy
    dx, dweight = np.zeros_like(x), np.zeros_like(weight)
    for iy in range(h):
        for ix in range(w):
            window = (slice(None), slice(None), slice(iy * s, iy * s + k), slice(ix * s, ix * s + k))
            padded[window] += np.einsum("nc,cokl->nokl", x[:, :, iy, ix], weight)
            dx[:, :, iy, ix] = np.einsum("nokl,cokl->nc", dy_padded[window], weight)
            dweight += np.einsum("nc,nokl->cokl", x[:, :, iy, ix], dy_padded[window])
    return padded[:, :, p:p + h * s, p:p + w * s], dx, dweight


def test_the_library_runs_its_avx2_build_where_the_cpu_has_avx2_and_fma(library_build):
    from fcn8s.host import cpu_flags
    has_avx2_fma = {"avx2", "fma"} <= set(cpu_flags().split())
    expected = "avx2-fma" if has_avx2_fma and library_build != "baseline" else "baseline"
    assert onednn.vector_build() == expected
    assert onednn.cpu_has_avx2_fma() == has_avx2_fma   # what the kernel plan asks, in either build


def test_both_builds_of_the_upsampling_match_a_float64_reference(library_build, rng):
    lib = ctypes.CDLL(onednn.load())
    x = rng.standard_normal((2, 5, 3, 4)).astype(np.float32)    # 5 in, 7 out channels: no register block fits
    weight = rng.standard_normal((5, 7, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((2, 7, 24, 32)).astype(np.float32)
    y, dx, dweight = np.empty_like(dy), np.empty_like(x), np.empty_like(weight)
    assert _library_call(lib, "upsample_forward", x, weight, y) == 0
    assert _library_call(lib, "upsample_input_grad", dy, weight, dx) == 0
    assert _library_call(lib, "upsample_weight_grad", x, dy, dweight) == 0
    for got, want in zip((y, dx, dweight), _upsampling_reference(x, weight, dy, 8)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# one image multiplies the tensors in place, more side by side; the input gradient is transposed into place in
# 32 x 32 tiles, so positions over 32 and channel patches (45) over 32 cover partial tiles both ways
@pytest.mark.parametrize("images, positions", [(1, 7), (3, 7), (2, 40)])
def test_the_gemm_products_match_numpy(onednn_kernels, rng, images, positions):
    lib = ctypes.CDLL(onednn.load())
    weight = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    cols = rng.standard_normal((images, 45, positions)).astype(np.float32)
    dy = rng.standard_normal((images, 6, positions)).astype(np.float32)
    inputs = [a.copy() for a in (weight, cols, dy)]
    y, dcols, dweight = np.empty_like(dy), np.empty_like(cols), np.empty_like(weight)
    assert _library_call(lib, "gemm_forward", weight, cols, y) == 0
    assert _library_call(lib, "gemm_input_grad", weight, dy, dcols) == 0
    assert _library_call(lib, "gemm_weight_grad", dy, cols, dweight) == 0
    matrix = weight.reshape(6, 45).astype(np.float64)
    np.testing.assert_allclose(y, np.einsum("ok,nkp->nop", matrix, cols), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dcols, np.einsum("ok,nop->nkp", matrix, dy), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dweight.reshape(6, 45), np.einsum("nop,nkp->ok", dy, cols), rtol=1e-5, atol=1e-5)
    for given, kept in zip((weight, cols, dy), inputs):
        np.testing.assert_array_equal(given, kept)     # the inputs are read, never written


@pytest.mark.parametrize("cols_shape, y_shape", [((2, 7, 5), (2, 4, 5)),    # cols' K is not c k k = 8
                                                 ((2, 8, 5), (2, 3, 5)),    # y's channels
                                                 ((2, 8, 5), (1, 4, 5)),    # y's images
                                                 ((2, 8, 5), (2, 4, 6))])   # y's positions
def test_the_gemm_products_refuse_shapes_that_disagree(onednn_kernels, cols_shape, y_shape):
    lib = ctypes.CDLL(onednn.load())
    lib.fcn8s_onednn_error.restype = ctypes.c_char_p
    weight = np.arange(4 * 2 * 2 * 2, dtype=np.float32).reshape(4, 2, 2, 2)
    cols = np.ones((2, 8, 5), np.float32)
    y = np.zeros((2, 4, 5), np.float32)
    assert _library_call(lib, "gemm_forward", weight, cols, y) == 0
    np.testing.assert_array_equal(y[1], weight.reshape(4, 8).sum(axis=1, keepdims=True).repeat(5, axis=1))
    y = np.full(y_shape, 7.0, np.float32)
    assert _library_call(lib, "gemm_forward", weight, np.ones(cols_shape, np.float32), y) == 1
    assert lib.fcn8s_onednn_error().decode().startswith("gemm: shapes disagree")
    assert np.all(y == 7.0)


def test_auto_falls_back_to_mindspore_kernels_and_says_why(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: (False, "no C++ compiler 'g++' on PATH"))
    plan, note = kernels.choose("auto", 1.0)
    assert plan == kernels.MINDSPORE_PLAN and "no C++ compiler 'g++' on PATH" in note
    with pytest.raises(FCNError, match="model.kernels onednn: no C\\+\\+ compiler"):
        kernels.choose("onednn", 1.0)
    assert kernels.choose("native", 1.0) == (dict.fromkeys(kernels.LAYERS, "native"),
                                             "convolutions: MindSpore's (native)")


def test_auto_picks_per_layer_group_what_the_probe_measured_faster():
    usable, why = onednn.available()
    plan, note = kernels.choose("auto", 0.0625)
    if not usable:
        assert plan == kernels.MINDSPORE_PLAN and why in note
        return
    verdict, _ = probe.verdict_seconds(0.0625)   # cached by choose() above
    assert "library / MindSpore time per layer group: conv1 " in note
    ways = {"conv1": ["onednn", "onednn-any"], "conv2": ["onednn", "onednn-any"], "conv3": ["onednn", "onednn-any"],
            "conv4": ["onednn", "onednn-any"], "conv5": ["onednn", "onednn-any"], "conv6": ["gemm"],
            "conv7": ["gemm"]}
    assert {layer: sorted(seconds) for layer, seconds in verdict.items()} == {
        layer: sorted(["mindspore", *names]) for layer, names in ways.items()}
    for layer, names in ways.items():
        seconds = verdict[layer]
        fastest = min(names, key=lambda name: seconds[name])
        faster = seconds[fastest] < seconds["mindspore"] * (1 + probe.CLOSE)
        assert plan[layer] == (fastest if faster else kernels.MINDSPORE_PLAN[layer]), layer
    assert [plan[op] for op in kernels.LIBRARY_OPS] == ["custom"] * 5


def test_the_library_upsamples_and_normalises_only_where_the_cpu_has_avx2_with_fma(monkeypatch):
    for has, way in ((True, "custom"), (False, "native")):
        monkeypatch.setattr(onednn, "cpu_has_avx2_fma", lambda has=has: has)
        plan = kernels.plan("onednn")
        assert plan["upsample"] == plan["batchnorm"] == way, has
        assert plan["pool"] == plan["loss"] == plan["optimizer"] == "custom", has


def test_the_probe_measures_each_layer_group_at_its_resolution_and_width():
    assert probe.probe_convolutions(0.5) == [
        ("conv1", 32, 32, 3, 256), ("conv2", 64, 64, 3, 128), ("conv3", 128, 128, 3, 64), ("conv4", 256, 256, 3, 32),
        ("conv5", 256, 256, 3, 16), ("conv6", 256, 2048, 7, 8), ("conv7", 2048, 2048, 1, 8)]


def test_the_probe_leaves_the_seeded_initialisation_alone(onednn_kernels, tmp_path, monkeypatch):
    """The first build on a host runs the probe: the network must get the weights a cached verdict gives."""
    import mindspore as ms
    monkeypatch.setenv("FCN8S_CACHE", str(tmp_path))
    weights = []
    for _ in range(2):   # the probe runs in the first build only
        ms.set_seed(1)
        np.random.seed(1)
        net = FCN("fcn8s", 4, 0.0625, kernels=kernels.choose("auto", 0.0625)[0])
        weights.append({p.name: p.asnumpy() for p in net.get_parameters()})
    assert len(list(tmp_path.glob("kernel-probe-*.json"))) == 1
    for name, value in weights[0].items():
        np.testing.assert_array_equal(weights[1][name], value, err_msg=name)


def test_the_probe_measures_once_per_width_and_keeps_the_faster_kernels(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN8S_CACHE", str(tmp_path))
    calls = []

    def fake_measure(width):
        calls.append(width)
        backbone = [(0.5, 0.6), (2.0, 0.9), (1.1, 1.2), (1.04, 1.3), (0.99, 0.98)]   # onednn, onednn-any
        return {**{f"conv{i}": {"mindspore": 1.0, "onednn": nhwc, "onednn-any": any_layout}
                   for i, (nhwc, any_layout) in enumerate(backbone, 1)},
                "conv6": {"mindspore": 2.0, "gemm": 1.0}, "conv7": {"mindspore": 1.0, "gemm": 1.5}}
    monkeypatch.setattr(probe, "measure", fake_measure)
    monkeypatch.setattr(onednn, "cpu_has_avx2_fma", lambda: True)
    library, note = probe.library_choice(0.5)
    assert probe.CLOSE == 0.05   # conv4, 4% slower in the library, is a close call: it goes to the library
    assert library == {"conv1": "onednn", "conv2": "onednn-any", "conv4": "onednn", "conv5": "onednn-any",
                       "conv6": "gemm"}
    assert ("conv1 0.50 onednn, conv2 0.90 onednn-any, conv3 1.10 onednn, conv4 1.04 onednn, conv5 0.98 onednn-any, "
            "conv6 0.50 gemm, conv7 1.50 gemm (measured now") in note
    assert kernels.plan("onednn", library) == {
        "conv1": "onednn", "conv2": "onednn-any", "conv3": "flipped", "conv4": "onednn", "conv5": "onednn-any",
        "conv6": "gemm", "conv7": "native", "batchnorm": "custom", "pool": "custom",
        "upsample": "custom", "loss": "custom", "optimizer": "custom"}
    again, note = probe.library_choice(0.5)
    assert again == library and "(cached in " in note and calls == [0.5]
    probe.library_choice(0.25)
    assert calls == [0.5, 0.25]


def test_the_probe_times_the_two_in_turn_and_keeps_each_ones_fastest_call(monkeypatch):
    order = []

    def sleeper(name, seconds):
        delays = iter(seconds)
        return lambda: (order.append(name), time.sleep(next(delays, seconds[-1])))
    monkeypatch.setattr(probe, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(probe, "UNSURE_SECONDS", 10.0)
    # one warm-up each, then MIN_CALLS timed calls each, in turn; a slow call (noise) does not count;
    # a clear winner (b takes 5x a's time) is not timed further
    fastest = probe.fastest_in_turn([sleeper("a", [0.5, 0.2, 0.02, 0.2]), sleeper("b", [0.5, 0.1, 0.1, 0.1])])
    assert order == ["a", "b"] * (1 + probe.MIN_CALLS)
    assert 0.02 <= fastest[0] < 0.1 <= fastest[1] < 0.2
    # calls shorter than MIN_SECONDS in all are repeated, up to MAX_CALLS
    monkeypatch.setattr(probe, "MIN_SECONDS", 10.0)
    order.clear()
    probe.fastest_in_turn([sleeper("a", [0.0]), sleeper("b", [0.0])])
    assert order == ["a", "b"] * (1 + probe.MAX_CALLS)


def test_the_probe_times_a_near_tie_for_longer(monkeypatch):
    order = []

    def sleeper(name, seconds):
        return lambda: (order.append(name), time.sleep(seconds))
    monkeypatch.setattr(probe, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(probe, "UNSURE_SECONDS", 0.1)
    # 0.01 s against 0.011: within UNSURE of each other, so each runs until it has spent UNSURE_SECONDS
    probe.fastest_in_turn([sleeper("mindspore", 0.01), sleeper("library", 0.011)])
    timed_calls = len(order) // 2 - 1
    assert order == ["mindspore", "library"] * (1 + timed_calls)
    assert probe.MIN_CALLS < timed_calls <= 10
    # 0.01 against 0.03 (3x) is no tie: MIN_CALLS each
    order.clear()
    probe.fastest_in_turn([sleeper("mindspore", 0.01), sleeper("library", 0.03)])
    assert len(order) == 2 * (1 + probe.MIN_CALLS)


def test_the_kernel_threads_follow_omp_num_threads_then_mindspore_within_the_cores(monkeypatch):
    import mindspore as ms
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert onednn.kernel_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    runtime_num_threads = {"value": 30}
    monkeypatch.setattr(ms, "get_context", lambda key: runtime_num_threads["value"] if key == "runtime_num_threads"
                        else pytest.fail(key))
    assert onednn.kernel_threads() == (8, "8 cores")
    runtime_num_threads["value"] = 5
    assert onednn.kernel_threads() == (5, "MindSpore's runtime_num_threads, 8 cores")


# In a subprocess: a convolution on the kernels' worker threads, then the same in a forked child, which has
# none of the parent's threads (its pool must start its own, not wait for them); each child answers with
# its exit status, and an alarm ends a child that hangs.
_FORKED = """
import ctypes, os, signal, sys
import numpy as np
from fcn8s.kernels import onednn
sys.path.insert(0, sys.argv[1])
from test_onednn import _library_call
lib = ctypes.CDLL(onednn.load())
x, weight = np.ones((2, 8, 32, 32), np.float32), np.ones((16, 8, 3, 3), np.float32)
def conv():
    y = np.zeros((2, 16, 32, 32), np.float32)
    return _library_call(lib, "conv2d_forward", x, weight, y) == 0 and y[0, 0, 16, 16] == 72.0
assert conv() and onednn.kernel_threads()[0] > 1
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)
        os._exit(0 if conv() else 1)
    assert os.waitpid(pid, 0)[1] == 0, "the forked child failed or hung"
print("ok")
"""


def test_the_kernels_work_in_a_process_forked_after_they_ran(onednn_kernels):
    done = subprocess.run([sys.executable, "-c", _FORKED, os.path.dirname(__file__)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "ok", done.stderr[-2000:]
