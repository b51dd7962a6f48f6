"""The type of the values the distances and the DNA accessors return: NumPy (default) or torch.

vdna 0.1.1 returned torch tensors on the DNA's ``device``; code written for it (``torch.cat`` of
neuron-wise results, ``.cpu()``, ...) runs unchanged after ``vdna.set_result_type("torch")`` or with
the environment variable ``VDNA_RESULTS=torch``. Then ``EMD``/``NFD``/``FD`` return 0-d float64
tensors (dicts of tensors with ``return_neuron_wise=True``) and ``get_neuron_dist``,
``get_all_neurons_in_layer_dist`` and ``get_all_neurons_dists`` return tensors (dicts of tensors),
all on ``torch.device(dna.device)``. Tensors made from a DNA's arrays share their memory on the CPU,
as 0.1.1's accessors returned the DNA's own tensors. Everything inside vdna keeps working on NumPy
(``metric_function`` returns the NumPy implementations; ``numpy_results()`` turns the conversion off
for a block of code).
"""
import contextlib
import functools
import inspect
import os
import threading
from typing import Optional

import numpy as np

__all__ = ["set_result_type", "get_result_type", "numpy_results", "returns_result"]

RESULT_TYPES = ("numpy", "torch")
_ENV = "VDNA_RESULTS"
_chosen: Optional[str] = None
_local = threading.local()


def _check(kind, source: str) -> str:
    value = str(kind).strip().lower()
    if value not in RESULT_TYPES:
        raise ValueError(f"{source} must be 'numpy' or 'torch', got {kind!r}")
    return value


def set_result_type(kind: Optional[str]) -> None:
    """Return distances and accessor values as ``"numpy"`` arrays (the default) or ``"torch"`` tensors
    on the DNA's device, as vdna 0.1.1 did. ``None`` goes back to ``$VDNA_RESULTS`` (else NumPy)."""
    global _chosen
    _chosen = None if kind is None else _check(kind, "set_result_type")


def get_result_type() -> str:
    """``"numpy"`` or ``"torch"``: ``set_result_type``'s choice, else ``$VDNA_RESULTS``, else NumPy."""
    if _chosen is not None:
        return _chosen
    env = os.environ.get(_ENV, "").strip()
    return _check(env, f"the environment variable {_ENV}") if env else "numpy"


@contextlib.contextmanager
def numpy_results():
    """Within this block (in this thread), results stay NumPy whatever the result type."""
    previous = getattr(_local, "numpy", False)
    _local.numpy = True
    try:
        yield
    finally:
        _local.numpy = previous


def _device(name):
    import torch

    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, TypeError, AssertionError) as exc:
        raise ValueError(
            f"torch results go to the DNA's device {name!r}, which is not usable here ({exc}); set dna.device "
            f"(e.g. to 'cpu') or use NumPy results (vdna.set_result_type('numpy'))"
        ) from exc
    return device


def to_torch(value, device):
    """``value`` (a NumPy scalar or array, a dict of them, or a tensor) as torch tensors on ``device``."""
    import torch

    if isinstance(value, dict):
        return {k: to_torch(v, device) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.to(device)
    arr = np.asarray(value)
    if arr.ndim and not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr) if arr.ndim else arr.copy()).to(device)


def returns_result(fn):
    """Decorator for a distance function (device of its first argument) or a DNA accessor method
    (device of ``self``): converts the NumPy result to torch when the result type is ``"torch"``."""

    first = next(iter(inspect.signature(fn).parameters))  # "self" or "vdna1": may be passed by keyword

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        if getattr(_local, "numpy", False) or get_result_type() == "numpy":
            return out
        dna = args[0] if args else kwargs.get(first)
        return to_torch(out, _device(getattr(dna, "device", "cpu")))

    return wrapper
