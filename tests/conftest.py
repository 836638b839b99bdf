"""Shared test set-up: fast CPU kernels (fcn8s sets ONEDNN_MAX_CPU_ISA on import, before mindspore)
and PyNative mode, which runs the small test networks without graph compilation."""
import os

import fcn8s  # noqa: F401  (must precede the first mindspore import)
import mindspore as ms
import numpy as np
import pytest

ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory):
    """The oneDNN kernels are built once per session into a temporary cache (shared with subprocesses)."""
    os.environ["FCN8S_CACHE"] = str(tmp_path_factory.mktemp("fcn8s-cache"))


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
