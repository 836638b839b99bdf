"""FCN-8s/16s/32s semantic segmentation on MindSpore."""
import os as _os

__version__ = "0.1.0"

# MindSpore 2.10's oneDNN picks a reference-grade convolution kernel on AVX-512 hosts
# (0.8 GFLOP/s); capped at AVX2 it picks gemm:jit (about 100x faster). The variable is read
# when mindspore loads, so it must be set before the first `import mindspore`; a value the
# user set wins. Harmless on Ascend/GPU, where oneDNN only runs host-side ops.
ONEDNN_ISA_DEFAULT = "AVX2"
ONEDNN_ISA_SET_BY_USER = "ONEDNN_MAX_CPU_ISA" in _os.environ
_os.environ.setdefault("ONEDNN_MAX_CPU_ISA", ONEDNN_ISA_DEFAULT)
# MindSpore's INFO/WARNING chatter (missing Ascend libraries on CPU hosts, ...) buries our
# one-line logs; errors still print. GLOG_v=1 or 2 in the environment brings it back.
_os.environ.setdefault("GLOG_v", "3")
