"""Shared test set-up: MindSpore as quiet as the command line makes it, its oneDNN capped at AVX2 before
its first kernel (what setup_device does for a run), and PyNative mode, which runs the small test
networks without graph compilation."""
import logging
import os

os.environ.setdefault("GLOG_v", "3")  # as fcn8s.cli.main; read when mindspore loads

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fcn8s.kernels import onednn  # noqa: E402
from fcn8s.log import get_logger  # noqa: E402

onednn.cap_mindspore_isa()
ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory):
    """The oneDNN kernels are built once per session into a temporary cache (shared with subprocesses)."""
    os.environ["FCN8S_CACHE"] = str(tmp_path_factory.mktemp("fcn8s-cache"))


@pytest.fixture
def onednn_kernels():
    """Skips the test where fcn8s's oneDNN kernels do not load (no compiler in CXX, not x86-64 Linux, ...)."""
    usable, why = onednn.available()
    if not usable:
        pytest.skip(f"oneDNN kernels unavailable: {why}")


@pytest.fixture
def baseline_build(onednn_kernels):
    """The kernel library's own loops (the loss, the upsampling, training's BatchNorm) in their baseline x86-64
    build for the test, not the AVX2 + FMA one a CPU with both runs (onednn_conv.cc, vectorised)."""
    onednn.use_baseline_build(True)
    yield
    onednn.use_baseline_build(False)


@pytest.fixture(params=["avx2-fma-where-present", "baseline"])
def library_build(request, onednn_kernels):
    """Runs the test in each build of the kernel library's own loops (see baseline_build)."""
    if request.param == "baseline":
        request.getfixturevalue("baseline_build")
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    ms.set_seed(0)
    np.random.seed(0)


@pytest.fixture
def randomise_bn_statistics(rng):
    """Give every BatchNorm non-trivial moving statistics, so inference-mode BN matters in comparisons."""
    def randomise(net):
        for p in net.get_parameters():
            if p.name.endswith("moving_mean"):
                p.set_data(ms.Tensor(rng.normal(0, 0.1, p.shape).astype(np.float32)))
            elif p.name.endswith("moving_variance"):
                p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
    return randomise


@pytest.fixture
def logs():
    """The package's log lines (its logger does not propagate, so caplog cannot see them)."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = get_logger()
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)
