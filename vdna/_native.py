"""Load the compiled core (``vdna._core``) after its BLAS/LAPACK provider.

The core links against ``libscipy_openblas`` from the ``scipy-openblas32`` wheel. Loading that
library first (RTLD_GLOBAL) lets the extension find it in every install mode (regular, editable,
in-place build) without copying 25 MB into our package.
"""
import ctypes
import os

_blas_handle = None


def _preload_blas():
    global _blas_handle
    if _blas_handle is not None:
        return
    try:
        import scipy_openblas32 as blas
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise ImportError("vdna needs the 'scipy-openblas32' package: pip install scipy-openblas32") from exc
    path = os.path.join(blas.get_lib_dir(), blas.get_library(fullname=True))
    _blas_handle = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


_preload_blas()

from . import _core  # noqa: E402

__all__ = ["_core"]
