"""The FCN network family."""
from .fcn import FCN, bilinear_kernel, build_model

__all__ = ["FCN", "bilinear_kernel", "build_model"]
