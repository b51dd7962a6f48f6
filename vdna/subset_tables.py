"""The histogram count tables of a :class:`vdna.stability.SubsetAccumulator`, one layer at a time.

A layer has T group tables of ``neurons x bins`` counts (see vdna/stability.py for what a table
holds). Which images go to which table is fixed before the first image arrives (the random subsets
are drawn up front), so each table's final number of images is known; once the number of samples
per image (positions of a feature map, tokens) is known too, a count can never exceed
``images x samples``. Tables whose bound fits 16 bits are stored as uint16 ("narrow"), the others as
uint32 ("wide"): for ``rand_resnet50``, histogram-1000 and 10 sizes x 10 repeats that is 3.2 GB
instead of 5.5 GB, and every batch streams through half the bytes for most tables.

Storage is neuron-major per width, ``(neurons, tables of that width, bins)``, so one neuron's rows
of every table lie together (the C core's ``count_groups`` updates them together), in memory or in a
memory-mapped temporary file. ``where[t]`` says where table t lives: wide table ``where[t]`` when
``>= 0``, narrow table ``-1 - where[t]`` otherwise.

If a later batch brings more samples per image than the first (images of another size), a narrow
table whose bound no longer fits 16 bits is widened (its counts copied into a wider layout) before
that batch is counted; the core checks every bound again before it adds anything.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

NARROW_MAX = 2**16 - 1  # the largest count a narrow (uint16) table can hold
WIDE_MAX = 2**32 - 1


def table_where(total_images: np.ndarray, samples: Optional[int], narrow_max: int = NARROW_MAX) -> np.ndarray:
    """(T,) int64 ``where`` for tables that will hold ``total_images[t]`` images of at most ``samples``
    samples each: narrow when ``total_images[t] x samples <= narrow_max``; every table wide when
    ``samples`` is None (not known yet)."""
    total = np.asarray(total_images, dtype=np.int64)
    narrow = np.zeros(total.shape, dtype=bool) if samples is None else total * int(samples) <= int(narrow_max)
    where = np.empty(total.shape, dtype=np.int64)
    where[~narrow] = np.arange(int((~narrow).sum()))
    where[narrow] = -1 - np.arange(int(narrow.sum()))
    return where


def table_bytes(n_neurons: int, bins: int, where: np.ndarray) -> int:
    """Bytes of a layer's tables laid out as ``where`` says."""
    n_narrow = int((where < 0).sum())
    return int(n_neurons) * int(bins) * (4 * (len(where) - n_narrow) + 2 * n_narrow)


def _allocate(shape, dtype, path: Optional[str]) -> np.ndarray:
    if path is None or shape[1] == 0:  # nothing to spill (a zero-length file cannot be mapped)
        return np.zeros(shape, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


class LayerTables:
    """One layer's T tables: ``wide`` (C, T32, B) uint32 and ``narrow`` (C, T16, B) uint16, laid out by
    ``where`` (see the module docstring); in memory, or memory-mapped files ``path + ".u32"/".u16"``."""

    def __init__(self, n_neurons: int, bins: int, where: np.ndarray, samples: Optional[int],
                 path: Optional[str] = None):
        self.n_neurons, self.bins = int(n_neurons), int(bins)
        self.where = np.ascontiguousarray(where, dtype=np.int64)
        self.samples = samples  # the samples per image the layout was chosen for
        self.path = path
        n_narrow = int((self.where < 0).sum())
        n_wide = len(self.where) - n_narrow
        self.wide = _allocate((self.n_neurons, n_wide, self.bins), np.uint32, None if path is None else path + ".u32")
        self.narrow = _allocate((self.n_neurons, n_narrow, self.bins), np.uint16,
                                None if path is None else path + ".u16")

    @property
    def n_tables(self) -> int:
        return len(self.where)

    @property
    def nbytes(self) -> int:
        return int(self.wide.nbytes + self.narrow.nbytes)

    @property
    def spilled(self) -> bool:
        return self.path is not None

    def row(self, t: int) -> np.ndarray:
        """Table t: a (C, B) view, uint32 or uint16."""
        w = int(self.where[t])
        return self.wide[:, w] if w >= 0 else self.narrow[:, -1 - w]

    def count(self, hist, x, groups: np.ndarray, table_images: np.ndarray, table_nans: np.ndarray) -> None:
        """Count batch ``x`` into the tables ``groups`` names (the core's ``count_groups``)."""
        hist.count_groups(x, groups, self.wide, table_images, table_nans, self.narrow, self.where)

    def relaid(self, where: np.ndarray, samples: int, path: Optional[str]) -> "LayerTables":
        """The same counts in the layout ``where`` (tables only ever get wider), in new storage."""
        out = LayerTables(self.n_neurons, self.bins, where, samples, path)
        for t in range(self.n_tables):
            dst = out.row(t)
            if dst.dtype == np.uint16 and self.row(t).dtype != np.uint16:
                raise RuntimeError("subset tables: a wide table cannot become narrow")  # internal invariant
            dst[...] = self.row(t)
        return out

    def close(self) -> None:
        """Drop the arrays (and unmap their files; the caller deletes the folder)."""
        self.wide = self.narrow = None

    @staticmethod
    def remove_files(path: Optional[str]) -> None:
        for suffix in (".u32", ".u16"):
            if path is not None and os.path.exists(path + suffix):
                os.remove(path + suffix)
