"""Shared test set-up: fast CPU kernels (fcn8s sets ONEDNN_MAX_CPU_ISA on import, before mindspore)
and PyNative mode, which runs the small test networks without graph compilation."""
import fcn8s  # noqa: F401  (must precede the first mindspore import)
import mindspore as ms
import numpy as np
import pytest

ms.set_context(mode=ms.PYNATIVE_MODE)
ms.set_device("CPU")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    ms.set_seed(0)
    np.random.seed(0)
