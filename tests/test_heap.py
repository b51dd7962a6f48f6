"""vdna/heap.py: glibc malloc settings during extractor passes (memory placement only, never numbers).

The checks read glibc's chunk header: the size word just before a block returned by malloc has bit 0x2
(IS_MMAPPED) set when the block is its own mmap region. A 64 MiB block is above glibc's largest
mmap threshold (32 MiB), so by default it is always mmapped and unmapped again on free (the page
faults vdna/heap.py avoids); inside forward_scope it must come from the heap, and after a free the
next such block must reuse the same address.
"""
import ctypes
import os
import platform

import numpy as np
import pytest

from vdna import heap

BIG = 64 << 20

needs_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or heap._glibc() is None,
    reason="vdna/heap.py changes glibc's malloc only (elsewhere its scopes do nothing)")


@pytest.fixture
def libc(monkeypatch):
    for k in list(os.environ):
        if k == "GLIBC_TUNABLES" or k == "VDNA_HEAP_REUSE" or (k.startswith("MALLOC_") and k.endswith("_")):
            monkeypatch.delenv(k)
    lib = heap._glibc()
    lib.malloc.argtypes, lib.malloc.restype = [ctypes.c_size_t], ctypes.c_void_p
    lib.free.argtypes, lib.free.restype = [ctypes.c_void_p], None
    return lib


def _mmapped(lib, p: int) -> bool:
    return bool(ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value & 0x2)


def _alloc_twice(lib):
    """(first block mmapped?, second mmapped?, second at the first's address?) for two 64 MiB blocks,
    the first freed before the second is taken (touched, as activations are)."""
    p1 = lib.malloc(BIG)
    ctypes.memset(p1, 1, BIG)
    m1 = _mmapped(lib, p1)
    lib.free(p1)
    p2 = lib.malloc(BIG)
    m2 = _mmapped(lib, p2)
    lib.free(p2)
    return m1, m2, p1 == p2


@needs_glibc
def test_default_big_blocks_are_mmapped(libc):
    # the control: without vdna's scopes, glibc maps a 64 MiB block by itself (what costs the faults)
    m1, m2, _ = _alloc_twice(libc)
    assert m1 and m2


@needs_glibc
def test_forward_scope_serves_from_the_heap_and_reuses(libc):
    assert heap.enabled()
    with heap.pass_scope(), heap.forward_scope():
        m1, m2, same = _alloc_twice(libc)
    assert not m1 and not m2 and same
    m1, m2, _ = _alloc_twice(libc)  # the default is back
    assert m1 and m2


@needs_glibc
def test_scopes_nest_and_restore_once(libc):
    with heap.pass_scope(), heap.forward_scope():
        with heap.forward_scope():
            pass
        m1, m2, same = _alloc_twice(libc)  # the inner scope's exit did not restore yet
        assert not m1 and not m2 and same
    assert heap._depth == {"pass": 0, "forward": 0}
    assert all(_alloc_twice(libc)[:2])


@needs_glibc
def test_scope_restores_on_error(libc):
    with pytest.raises(RuntimeError):
        with heap.pass_scope(), heap.forward_scope():
            raise RuntimeError("boom")
    assert heap._depth == {"pass": 0, "forward": 0}
    assert all(_alloc_twice(libc)[:2])


@needs_glibc
@pytest.mark.parametrize("env", [{"VDNA_HEAP_REUSE": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_off_when_asked_or_when_malloc_is_configured(libc, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert not heap.enabled()
    with heap.pass_scope(), heap.forward_scope():
        assert all(_alloc_twice(libc)[:2])  # glibc's defaults untouched


def recording_scopes(monkeypatch):
    """Replace both scopes by recorders; returns the list of scopes entered, in order."""
    import contextlib

    seen = []

    def recording(kind):
        @contextlib.contextmanager
        def scope():
            seen.append(kind)
            yield
        return scope

    monkeypatch.setattr(heap, "pass_scope", recording("pass"))
    monkeypatch.setattr(heap, "forward_scope", recording("forward"))
    return seen


def test_a_pass_enters_pass_scope_once_and_forward_scope_per_batch(monkeypatch):
    import tiny_extractor  # registers "tiny" (tests/tiny_extractor.py)

    from vdna import VDNAProcessor

    seen = recording_scopes(monkeypatch)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    VDNAProcessor().make_vdna(list(images), feat_extractor_name=tiny_extractor.NAME, distribution_name="gaussian",
                              batch_size=2, num_workers=0, verbose=False, backend="eager", device="cpu")
    assert seen == ["pass", "forward", "forward", "forward"]
