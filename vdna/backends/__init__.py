"""Extractor backends: the LibTorch shim (C ABI, built on first use) and eager PyTorch.

``get_backend(extractor, device, backend)`` picks one:

- ``"libtorch"``: the shim; any failure (no compiler, build error, export error) raises;
- ``"eager"``: the extractor's Python module, run by PyTorch;
- ``"auto"`` (default): the shim when it can be built and loaded, else eager with one warning
  (per process) saying why.

Both give identical activations on the CPU device and accumulate on the device with the C core's
rules (device_accum.py).
"""
import threading
import warnings

from .base import Backend, DeviceAccumulators
from .device_accum import LayerSpec, LayerState

__all__ = ["Backend", "BackendFallbackWarning", "DeviceAccumulators", "LayerSpec", "LayerState", "get_backend"]

BACKENDS = ("auto", "libtorch", "eager")
_warned = False
_warn_lock = threading.Lock()


class BackendFallbackWarning(RuntimeWarning):
    """backend="auto" could not use the LibTorch shim and runs the eager PyTorch backend instead."""


def get_backend(extractor, device="cpu", backend="auto", amp_dtype=None, allow_tf32=False, **options) -> Backend:
    """A backend running ``extractor`` on ``device`` ("cpu", "cuda", "cuda:1"; plain "cuda" is pinned
    to the current device's index).

    ``amp_dtype``: None (float32 forward, the default), torch.float16 / torch.bfloat16 or their
    names; both backends run the forward under autocast with that dtype. ``allow_tf32``: let cuDNN
    convolutions and cuBLAS matmuls use TF32 on GPUs that have it (default False: IEEE float32, so
    DNAs do not depend on the GPU generation). ``options`` go to LibTorchBackend (``cache_dir``,
    ``torchscript_dir``, ``model_path``).
    """
    global _warned
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "eager":
        from .eager import EagerBackend

        return EagerBackend(extractor, device, amp_dtype, allow_tf32)
    from .build import ShimBuildError
    from .export import ExportError
    from .libtorch import LibTorchBackend, ShimError

    if backend == "libtorch":
        return LibTorchBackend(extractor, device, amp_dtype, allow_tf32=allow_tf32, **options)
    try:
        return LibTorchBackend(extractor, device, amp_dtype, allow_tf32=allow_tf32, **options)
    except (ShimBuildError, ShimError, ExportError, OSError) as exc:
        with _warn_lock:
            first, _warned = not _warned, True
        if first:
            warnings.warn(f"vdna: using the eager PyTorch backend because the LibTorch shim is unavailable: {exc}",
                          BackendFallbackWarning, stacklevel=2)
        from .eager import EagerBackend

        return EagerBackend(extractor, device, amp_dtype, allow_tf32)
