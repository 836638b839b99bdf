"""FCN-8s/16s/32s semantic segmentation on MindSpore.

Importing it changes nothing outside the package and loads neither MindSpore nor the jobs:
MindSpore's oneDNN is capped by ``device.setup_device`` (see ``kernels.onednn.cap_mindspore_isa``),
MindSpore's log level is set by the command line (``cli.main``), and ``fcn8s.Segmenter`` (the Python
API, ``fcn8s/segmenter.py``) is imported on first use.
"""

__version__ = "0.1.0"
__all__ = ["Segmenter", "__version__"]


def __getattr__(name):
    if name == "Segmenter":
        from .segmenter import Segmenter
        return Segmenter
    raise AttributeError(f"module 'fcn8s' has no attribute {name!r}")
