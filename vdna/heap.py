"""Reuse of freed memory during extractor passes on the CPU (glibc's malloc settings).

Why. A network's forward pass on the CPU allocates its activations afresh for every batch and frees
them afterwards. glibc's malloc serves blocks above its mmap threshold (at most 32 MiB) with fresh
``mmap`` regions and gives them back with ``munmap`` when they are freed; it also returns the top of
its heap to the system once more than its trim threshold is free there. The next batch then faults
every page in again and the kernel zeroes each one. For ``rand_resnet50`` at batch 16 that is
120,000-210,000 page faults per batch: of the 227 s the forward passes of a ``make_vdna`` over 2,000
images took on our 2-core machine, 58 s were kernel time (``resource.getrusage``), and 95 s of 249 s
after a stability curve's tables had been touched, which made the forward pass inside the curve
slower than the same forward pass inside ``make_vdna`` (docs/stability.md, "Cost").

What. Two scopes, both only where the C library is glibc:

* :func:`pass_scope` (entered by ``vdna.processor.source_batches``, i.e. by every pass over images, and
  by the attribute DNAs' pass in ``vdna/customise.py``):
  the top of the heap is not returned to the system while images stream (``M_TRIM_THRESHOLD`` set to
  ``INT_MAX``); at the end of the outermost pass the threshold goes back to glibc's documented default
  (128 KiB) and ``malloc_trim(0)`` gives the free memory back. Setting the threshold also stops glibc
  from adapting its mmap threshold for the rest of the process (it stays at the value it had reached);
  that is the only lasting change.
* :func:`forward_scope` (entered by the CPU backends around the network itself): allocations are
  served from the heap instead of new mmap regions (``M_MMAP_MAX`` 0; back to the default 65,536 on
  leaving), so the next batch reuses the previous batch's pages. Only the forward pass is covered: a
  large array made elsewhere during a pass (a stability curve's tables) is still its own mmap region
  and goes back to the system when it is freed.

Neither changes a single number: only where in the address space memory comes from. Both are off
when ``VDNA_HEAP_REUSE=0`` is set, when the process configures malloc itself (a ``MALLOC_*_``
variable or ``GLIBC_TUNABLES`` in the environment), and where the C library is not glibc. Scopes
nest and may be entered from several threads: the settings change when the first scope is entered
and are restored when the last one is left.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Optional

__all__ = ["enabled", "forward_scope", "pass_scope"]

# glibc's mallopt parameters (malloc.h) and the defaults its manual page documents
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_INT_MAX = 2**31 - 1

_lock = threading.Lock()
_depth = {"pass": 0, "forward": 0}
_libc: Optional[ctypes.CDLL] = None
_libc_checked = False


def _glibc() -> Optional[ctypes.CDLL]:
    """The process's C library when it is glibc with mallopt and malloc_trim, else None."""
    global _libc, _libc_checked
    if not _libc_checked:
        _libc_checked = True
        try:
            lib = ctypes.CDLL(None)
            lib.gnu_get_libc_version  # glibc only (musl, macOS: AttributeError)
            lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.mallopt.restype = ctypes.c_int
            lib.malloc_trim.argtypes = [ctypes.c_size_t]
            lib.malloc_trim.restype = ctypes.c_int
            _libc = lib
        except (OSError, AttributeError):
            _libc = None
    return _libc


def enabled() -> bool:
    """Whether the scopes change glibc's settings in this process (see the module docstring)."""
    if os.environ.get("VDNA_HEAP_REUSE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return False
    return _glibc() is not None


@contextlib.contextmanager
def _scope(kind: str, param: int, during: int, after: int, trim_after: bool):
    libc = _glibc() if enabled() else None
    if libc is None:
        yield
        return
    with _lock:
        if _depth[kind] == 0:
            libc.mallopt(param, during)
        _depth[kind] += 1
    try:
        yield
    finally:
        with _lock:
            _depth[kind] -= 1
            if _depth[kind] == 0:
                libc.mallopt(param, after)
                if trim_after:
                    libc.malloc_trim(0)


def pass_scope():
    """Keep freed memory at the top of the heap while a pass over images runs (see the module)."""
    return _scope("pass", _M_TRIM_THRESHOLD, _INT_MAX, _DEFAULT_TRIM_THRESHOLD, True)


def forward_scope():
    """Serve the network's allocations from the heap, not from new mmap regions (see the module)."""
    return _scope("forward", _M_MMAP_MAX, 0, _DEFAULT_MMAP_MAX, False)
