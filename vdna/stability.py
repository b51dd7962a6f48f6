"""Stability curves: how a distance to a reference DNA varies with the number of images (paper Fig. 5).

For each size N of a grid and each repeat r, a random subset of N images of a dataset is compared with
a reference DNA: EMD for histograms, FD and NFD for Gaussians, over all neurons and per layer. The
subsets are nested: repeat r draws one permutation of the images and its subsets are the permutation's
first N₁ < N₂ < ... images. The permutation's cuts make K disjoint *groups* per repeat (images
[N_{k-1}, N_k) of the permutation); each image belongs to one group of each repeat. One pass over the
images accumulates every group (:class:`SubsetAccumulator`); subset k of repeat r is the sum of groups
0..k (counts add exactly; Gaussians are re-accumulated from stored per-image mean vectors). The
network therefore runs once per image.

Memory: histogram groups are about R x K tables of counts per neuron and bin (R repeats, K sizes;
see ``SubsetAccumulator.__init__``), uint16 where a table's images x samples per image fit 16 bits,
uint32 otherwise, stored neuron-major per layer (vdna/subset_tables.py); the layers whose tables do
not fit in ``max_memory`` live in temporary memory-mapped files (the operating system pages them),
deleted when the accumulator is closed or collected. Gaussians store one float64 mean vector per
image.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ._native import _core
from .dna import GAUSSIAN, HISTOGRAM, LAYER_GAUSSIAN, META_RANGES_SHA256, VDNA, parse_distribution_name
from .frechet import _FrechetToReference
from .ranges import ActivationRanges
from .subset_tables import NARROW_MAX, LayerTables, table_bytes, table_where

DEFAULT_DISTRIBUTIONS = ("histogram-1000", "layer-gaussian")
DEFAULT_MAX_MEMORY = 4 * 2**30
_STAGES = ("histogram counts", "mean vectors", "emd read-out", "gaussian read-out")
_FORMAT = "vdna-stability-curve"
# Layers with at most _DEFER_SAMPLES samples per image and neuron (small feature maps) are counted
# _DEFER_IMAGES images per core call: a call streams through most of a neuron's table rows whatever
# the number of images, so small batches of such layers cost mostly memory traffic.
_DEFER_SAMPLES = 256
_DEFER_IMAGES = 64
_VERSION = 1


def default_sizes(n_images: int, count: int = 10, smallest: int = 10) -> np.ndarray:
    """A geometric grid of about ``count`` distinct sizes from ``min(smallest, n)`` to ``n_images``."""
    n = int(n_images)
    if n < 1:
        raise ValueError(f"a stability curve needs at least one image, got {n}")
    lo = min(int(smallest), n)
    return np.unique(np.rint(np.geomspace(lo, n, int(count))).astype(np.int64))


def check_sizes(sizes, n_images: int) -> np.ndarray:
    """Sorted, distinct sizes in [1, n_images] (ValueError naming the bad size otherwise)."""
    n = int(n_images)
    if sizes is None:
        return default_sizes(n)
    arr = np.asarray(sizes)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(f"sizes must be a non-empty list of integers, got {sizes!r}")
    arr = np.unique(arr.astype(np.int64))
    if arr[0] < 1:
        raise ValueError(f"sizes must be >= 1, got {int(arr[0])}")
    if arr[-1] > n:
        raise ValueError(f"size {int(arr[-1])} is larger than the source ({n} images)")
    return arr


def subset_permutations(n_images: int, repeats: int, seed: int) -> np.ndarray:
    """(repeats, n_images) int64: the permutation of repeat r is row r (subsets are its prefixes).
    A pure function of (n_images, repeats, seed) (NumPy's PCG64)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed))))
    return np.stack([rng.permutation(int(n_images)) for _ in range(int(repeats))]).astype(np.int64)


# ============================================================================ the accumulator
class SubsetAccumulator:
    """Accumulate per-image activations once and get the distances of many nested subsets.

    Args:
        neurons_list: {layer: neuron count}, in network order.
        n_images: the number of images of the dataset (images are numbered 0..n_images-1).
        sizes: subset sizes (default: :func:`default_sizes`); repeats, seed: the random subsets.
        distributions: any of "histogram-B", "gaussian", "layer-gaussian" (not both Gaussians: a
            layer-Gaussian gives NFD too).
        activation_ranges: required for histograms (as for :class:`vdna.Accumulator`).
        layouts: "channels" (default) or "tokens", or {layer: layout}.
        feature_extractor_name: checked against the reference DNAs.
        max_memory: bytes of accumulation state kept in memory; histogram tables beyond it go to a
            temporary file in ``temp_dir`` (default: the system's). ValueError when the resident part
            alone (per-image mean vectors, one layer's working copy) does not fit.

    Histogram tables are uint16 where a table's images x samples per image fit 16 bits, uint32
    otherwise (vdna/subset_tables.py); the samples per image are known at the first ``update``, which
    allocates the tables and fixes the memory plan (before it, ``memory`` is an upper bound: every
    table 32-bit).

    ``update(activations, indices=None)`` takes {layer: (N, ...)} arrays of images ``indices``
    (default: the next N images in order); every image must be given exactly once before
    ``compute(reference)``. Results do not depend on batch sizes or on the order images arrive in.
    ``timings``: seconds spent so far in each stage (histogram counts, mean vectors, EMD read-out,
    Gaussian read-out); ``memory``: the memory plan (bytes, spilled layers).
    """

    def __init__(
        self,
        neurons_list: Mapping[str, int],
        n_images: int,
        sizes=None,
        repeats: int = 10,
        seed: int = 0,
        distributions: Sequence[str] = DEFAULT_DISTRIBUTIONS,
        activation_ranges=None,
        layouts=None,
        feature_extractor_name: str = "custom",
        max_memory: int = DEFAULT_MAX_MEMORY,
        temp_dir: Optional[str] = None,
    ):
        from .accumulator import _check_layouts, _check_neurons_list

        self.neurons_list = _check_neurons_list(neurons_list)
        self.layouts = _check_layouts(layouts, self.neurons_list)
        self.feature_extractor_name = str(feature_extractor_name)
        self.n_images = int(n_images)
        if self.n_images < 1:
            raise ValueError(f"a stability curve needs at least one image, got n_images={n_images}")
        if isinstance(repeats, bool) or int(repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats, self.seed = int(repeats), int(seed)
        self.sizes = check_sizes(sizes, self.n_images)
        self.distributions = _check_distributions(distributions)
        self.max_memory = int(max_memory)
        self.permutations = subset_permutations(self.n_images, self.repeats, self.seed)

        # group[r, i]: the group of image i in repeat r (k < K; K: beyond the largest size)
        position = np.empty_like(self.permutations)
        rows = np.arange(self.repeats)[:, None]
        position[rows, self.permutations] = np.arange(self.n_images)[None, :]
        self._group = np.searchsorted(self.sizes, position, side="right")
        K, R = len(self.sizes), self.repeats
        # histogram tables: group k of repeat r is table r*G + k for k < G (G groups stored per repeat).
        # When the largest size is all images, the largest group of each repeat is not stored (G = K-1):
        # its subset (k = K-1) is every image, counted once in one more table F (index R*G); an image
        # then goes to F and to one table per repeat only where it is not in that repeat's largest
        # group (fewer scattered additions per image, R-1 fewer tables). Otherwise (G = K) one more
        # table (index R*K) holds repeat 0's images beyond the largest size, so that the full-set DNA
        # is repeat 0's groups summed.
        self._rest = bool(self.sizes[-1] < self.n_images)
        G = self._stored = K if self._rest else K - 1
        self.n_tables = R * G + 1
        table_of = np.where(self._group < G, rows * G + self._group, -1)
        if self._rest:
            table_of[0, self._group[0] == K] = R * K
        else:
            table_of = np.concatenate([table_of, np.full((1, self.n_images), R * G)])
        self._table_of = np.ascontiguousarray(table_of.T)  # (n_images, R or R + 1)
        # the images each table will hold once every image is in: with the samples per image, a bound
        # on its counts (which tables can be 16-bit)
        self._table_total = np.bincount(table_of[table_of >= 0], minlength=self.n_tables).astype(np.int64)
        self._narrow_max = NARROW_MAX  # tests lower it to force 32-bit tables

        self._hist_name = next((d for d in self.distributions if d.startswith("histogram")), None)
        self._gauss_name = next((d for d in self.distributions if not d.startswith("histogram")), None)
        self.activation_ranges = None
        self._hists: Dict[str, object] = {}
        self._tables: Dict[str, LayerTables] = {}  # allocated by the first update
        self._defer_layers: List[str] = []  # small-map layers counted _DEFER_IMAGES images at a time
        self._pending: Dict[str, np.ndarray] = {}  # their buffered activations
        self._pending_groups = np.empty((_DEFER_IMAGES, self._table_of.shape[1]), dtype=np.int64)
        self._pending_n = 0
        self._table_images: Dict[str, np.ndarray] = {}
        self._table_nans: Dict[str, np.ndarray] = {}
        self._means: Dict[str, np.ndarray] = {}
        self._tmp_dir = None
        self._temp_dir = temp_dir
        self._spill_files = 0
        self._seen = np.zeros(self.n_images, dtype=bool)
        self._next = 0
        self._reduced_on = None  # after a distributed compute: "here" (this rank holds every rank's state) or a rank
        # seconds spent per stage (update: histogram counts, mean vectors; compute: read-outs)
        self.timings = {stage: 0.0 for stage in _STAGES}
        self.memory = self._plan_memory(None, check_disk=False)
        # Can the tables fit at all? The narrowest layout they could get (one sample per image) against
        # the temporary folder's space; the first update checks the one they get.
        self._plan_memory({layer: 1 for layer in self.neurons_list}, check_disk=True)

        if self._hist_name is not None:
            _, bins = parse_distribution_name(self._hist_name)
            self.bins = int(bins)
            if activation_ranges is None:
                raise ValueError("histogram stability curves need activation_ranges (they fix the bins)")
            self.activation_ranges = ActivationRanges.from_any(activation_ranges, self.neurons_list)
            for layer, c in self.neurons_list.items():
                mins, maxs = self.activation_ranges[layer]
                self._hists[layer] = _core.HistAccumulator(mins, maxs, self.bins, layout=self.layouts[layer])
                self._table_images[layer] = np.zeros(self.n_tables, dtype=np.int64)
                self._table_nans[layer] = np.zeros((self.n_tables, c), dtype=np.int64)
        if self._gauss_name is not None:
            for layer, c in self.neurons_list.items():
                self._means[layer] = np.full((self.n_images, c), np.nan, dtype=np.float64)

    # -------------------------------------------------------------- memory plan
    def _where(self, samples: Optional[int]) -> np.ndarray:
        return table_where(self._table_total, samples, self._narrow_max)

    def _plan_memory(self, samples: Optional[Mapping[str, int]], check_disk: bool, reserve: int = 0) -> dict:
        """The memory plan for tables laid out for ``samples`` per image ({layer: n}; None: every table
        32-bit), with ``reserve`` bytes kept for buffered activations. ValueError when the resident state
        does not fit ``max_memory`` or (``check_disk``) the spilled tables do not fit the temporary folder."""
        total_c = sum(self.neurons_list.values())
        max_c = max(self.neurons_list.values())
        resident = 0
        bins = 0
        if self._hist_name is not None:
            _, bins = parse_distribution_name(self._hist_name)
            resident += 2 * max_c * int(bins) * 8  # one layer's int64 running sum and reference copy
        if self._gauss_name is not None:
            # per-image mean vectors; one layer's reference, factor and eigh work space; its projection
            resident += self.n_images * total_c * 8 + 3 * max_c * max_c * 8 + max_c * self.n_images * 8
        if resident > self.max_memory:
            raise ValueError(
                f"stability: the resident state needs {_gib(resident)} (per-image mean vectors of {self.n_images} "
                f"images x {total_c} neurons and one layer's working copies), more than max_memory="
                f"{_gib(self.max_memory)}; raise max_memory or use fewer images"
            )
        # Layers whose tables do not fit next to the resident state go to a memory-mapped file. Every
        # batch dirties most of a spilled layer's pages (the kernel then writes them back), so as
        # many bytes as fit stay in memory: largest layers first, each kept if it still fits.
        spilled: List[str] = []
        per_layer: Dict[str, int] = {}
        if self._hist_name is not None:
            per_layer = {l: table_bytes(c, int(bins), self._where(None if samples is None else samples[l]))
                         for l, c in self.neurons_list.items()}
            room = self.max_memory - resident - reserve
            for layer in sorted(per_layer, key=lambda l: -per_layer[l]):  # stable: network order on ties
                if per_layer[layer] <= room:
                    room -= per_layer[layer]
                else:
                    spilled.append(layer)
            spilled.sort(key=list(self.neurons_list).index)
        total_bytes = sum(per_layer.values())
        spilled_bytes = sum(per_layer[l] for l in spilled)
        if check_disk and spilled:
            where = self._temp_dir if self._temp_dir is not None else tempfile.gettempdir()
            free = shutil.disk_usage(where).free
            if spilled_bytes > free:
                fit = max(0, int((free + self.max_memory - resident) // max(1, total_bytes // self.n_tables)))
                raise ValueError(
                    f"stability: {self.repeats} repeats x {len(self.sizes)} sizes of histograms need {_gib(total_bytes)} "
                    f"of counts, {_gib(spilled_bytes)} of them beyond max_memory={_gib(self.max_memory)}; that exceeds "
                    f"the {_gib(free)} free in the temporary folder {where}; at most {fit} tables (repeats x sizes) "
                    "would fit: use fewer repeats or sizes, or point temp_dir= at a larger disk"
                )
        return {"resident_bytes": resident, "table_bytes": total_bytes, "spilled": bool(spilled),
                "spilled_layers": spilled, "spilled_bytes": spilled_bytes,
                "samples_per_image": None if samples is None else dict(samples), "buffer_bytes": reserve}

    def _spill_path(self, layer: str) -> Optional[str]:
        """A new file name (without suffix) for a spilled layer's tables; None for a layer kept in memory."""
        if layer not in self.memory["spilled_layers"]:
            return None
        if self._tmp_dir is None:
            self._tmp_dir = tempfile.mkdtemp(prefix="vdna-stability-", dir=self._temp_dir)
        self._spill_files += 1
        return os.path.join(self._tmp_dir, f"{list(self.neurons_list).index(layer)}-{self._spill_files}")

    def _ensure_tables(self, samples: Mapping[str, int], image_bytes: Optional[Mapping[str, int]] = None) -> None:
        """Tables able to take images of ``samples`` per image ({layer: n}): the first call fixes the
        memory plan and allocates every layer's tables; later calls widen a layer's 16-bit tables whose
        bound no longer fits (images with more samples than before). ``image_bytes`` ({layer: bytes of one
        image's activations}, first call only): the small-map layers' activations are buffered and
        counted _DEFER_IMAGES at a time if that buffer fits without spilling more tables."""
        if not self._tables:
            plan = self._plan_memory(samples, check_disk=False)
            self._defer_layers = [l for l in self.neurons_list if samples[l] <= _DEFER_SAMPLES]
            reserve = _DEFER_IMAGES * sum((image_bytes or {}).get(l, 0) for l in self._defer_layers)
            if reserve and self._defer_layers:
                with_buffer = self._plan_memory(samples, check_disk=False, reserve=reserve)
                if with_buffer["spilled_bytes"] <= plan["spilled_bytes"]:
                    plan = with_buffer
                else:  # the buffer would push tables to disk: count every batch as it comes
                    self._defer_layers = []
            else:
                self._defer_layers = []
            self.memory = self._plan_memory(samples, check_disk=True, reserve=plan["buffer_bytes"])
            for layer, c in self.neurons_list.items():
                s = int(samples[layer])
                self._tables[layer] = LayerTables(c, self.bins, self._where(s), s, self._spill_path(layer))
            return
        for layer, s in samples.items():
            old = self._tables[layer]
            if int(s) <= old.samples:
                continue
            where = self._where(int(s))
            if np.array_equal(where, old.where):
                old.samples = int(s)
                continue
            if not old.spilled and not self._widened_layer_fits(layer, where):
                self._spill_widened(layer, where)
            self._tables[layer] = old.relaid(where, int(s), self._spill_path(layer) if (
                layer in self.memory["spilled_layers"]) else None)
            old.close()
            LayerTables.remove_files(old.path)
            self.memory["table_bytes"] = sum(t.nbytes for t in self._tables.values())
            self.memory["spilled_bytes"] = sum(t.nbytes for t in self._tables.values() if t.spilled)
            self.memory["samples_per_image"][layer] = int(s)

    def _widened_layer_fits(self, layer: str, where: np.ndarray) -> bool:
        """Whether ``layer``'s tables in the wider layout ``where`` still fit in memory next to the
        resident state, the small-map buffer and the other layers kept in memory (the plan's rule)."""
        others = sum(t.nbytes for name, t in self._tables.items() if name != layer and not t.spilled)
        need = table_bytes(self.neurons_list[layer], self.bins, where)
        return self.memory["resident_bytes"] + self.memory["buffer_bytes"] + others + need <= self.max_memory

    def _spill_widened(self, layer: str, where: np.ndarray) -> None:
        """Move a widening layer to a memory-mapped file, as the plan would have (the images brought
        more samples than the first batch); if the temporary folder cannot take it either, keep it in
        memory beyond max_memory with a warning rather than lose the pass."""
        need = table_bytes(self.neurons_list[layer], self.bins, where)
        folder = self._temp_dir if self._temp_dir is not None else tempfile.gettempdir()
        free = shutil.disk_usage(folder).free
        if need > free:
            import warnings

            warnings.warn(f"stability: layer '{layer}' needs wider tables ({_gib(need)}) for images with more values "
                          f"per neuron than the first batch; they exceed max_memory={_gib(self.max_memory)} and the "
                          f"{_gib(free)} free in {folder}, so they stay in memory beyond max_memory",
                          ResourceWarning, stacklevel=4)
            return
        order = list(self.neurons_list)
        self.memory["spilled_layers"] = sorted(self.memory["spilled_layers"] + [layer], key=order.index)
        self.memory["spilled"] = True

    def _buffer(self, arrays: Dict[str, np.ndarray], groups: np.ndarray) -> Dict[str, np.ndarray]:
        """Keep a copy of the small-map layers' activations of this batch for a later, larger
        count_groups call; returns the layers to count now."""
        n = groups.shape[0]
        small = [l for l in self._defer_layers if l in arrays]
        if not small or n >= _DEFER_IMAGES:
            return arrays
        pend = self._pending
        fits = (self._pending_n + n <= _DEFER_IMAGES and all(
            l in pend and pend[l].shape[1:] == arrays[l].shape[1:] and pend[l].dtype == arrays[l].dtype for l in small))
        if not fits:
            self._flush()
            if not all(l in pend and pend[l].shape[1:] == arrays[l].shape[1:] and pend[l].dtype == arrays[l].dtype
                       for l in small):
                self._pending = pend = {l: np.empty((_DEFER_IMAGES,) + arrays[l].shape[1:], dtype=arrays[l].dtype)
                                        for l in small}
        k = self._pending_n
        for l in small:
            pend[l][k:k + n] = arrays[l]
        self._pending_groups[k:k + n] = groups
        self._pending_n = k + n
        if self._pending_n == _DEFER_IMAGES:
            self._flush()
        return {l: x for l, x in arrays.items() if l not in small}

    def _flush(self) -> None:
        """Count the buffered activations (before any read-out)."""
        k = self._pending_n
        if k == 0:
            return
        t0 = time.perf_counter()
        groups = self._pending_groups[:k]
        for layer, buf in self._pending.items():
            self._tables[layer].count(self._hists[layer], buf[:k], groups, self._table_images[layer],
                                      self._table_nans[layer])
        self._pending_n = 0
        self.timings["histogram counts"] += time.perf_counter() - t0

    def close(self) -> None:
        """Drop the accumulation state and delete its temporary files (if any)."""
        self._pending, self._pending_n = {}, 0
        for tables in self._tables.values():
            tables.close()
        self._tables.clear()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -------------------------------------------------------------- feeding
    def update(self, activations: Mapping[str, object], indices=None) -> None:
        """Add the activations of images ``indices`` (default: the next ones in order)."""
        from .accumulator import as_host_array, check_layer_shape

        if not isinstance(activations, Mapping):
            raise TypeError(f"update expects a mapping {{layer: activations}}, got {type(activations).__name__}")
        if self._reduced_on is not None:
            raise ValueError("update: this accumulator was already reduced over ranks by a distributed compute(); "
                             "make a new one for more images")
        if set(activations) != set(self.neurons_list):
            raise ValueError(f"update: layers must be exactly {list(self.neurons_list)}, got {list(activations)}")
        arrays, n = {}, None
        for layer in self.neurons_list:
            x = as_host_array(activations[layer], layer)
            check_layer_shape(layer, self.layouts[layer], self.neurons_list[layer], x.shape)
            if n is not None and x.shape[0] != n:
                raise ValueError(f"update: layers disagree on the number of images ({x.shape[0]} and {n})")
            n = x.shape[0]
            arrays[layer] = x
        if indices is None:
            idx = np.arange(self._next, self._next + n, dtype=np.int64)
        else:
            idx = np.asarray(indices)
            if idx.dtype.kind not in "iu" or idx.shape != (n,):
                raise ValueError(f"update: indices must be {n} integers (one per image), got {indices!r}")
            idx = idx.astype(np.int64)
        if n == 0:
            return
        if idx.min() < 0 or idx.max() >= self.n_images:
            raise ValueError(f"update: image indices must be in [0, {self.n_images}), got {idx.min()}..{idx.max()}")
        if len(np.unique(idx)) != n or self._seen[idx].any():
            dup = idx[self._seen[idx]] if self._seen[idx].any() else idx
            raise ValueError(f"update: image {int(dup[0])} is given twice (each image must be added once)")
        groups = np.ascontiguousarray(self._table_of[idx])
        now = arrays
        if self._hists:  # samples per image and neuron: H x W (channels) or tokens
            self._ensure_tables({layer: x.size // (n * self.neurons_list[layer]) for layer, x in arrays.items()},
                                {layer: x.nbytes // n for layer, x in arrays.items()})
            now = self._buffer(arrays, groups)
        for layer, x in arrays.items():
            if self._hists and layer in now:
                t0 = time.perf_counter()
                self._tables[layer].count(self._hists[layer], x, groups, self._table_images[layer],
                                          self._table_nans[layer])
                self.timings["histogram counts"] += time.perf_counter() - t0
            if self._means:
                t0 = time.perf_counter()
                means, _ = _core.image_mean_vectors(x, self.neurons_list[layer], layout=self.layouts[layer])
                self._means[layer][idx] = means
                self.timings["mean vectors"] += time.perf_counter() - t0
        self._seen[idx] = True
        self._next = int(idx.max()) + 1 if indices is None else self._next

    @property
    def num_images(self) -> int:
        """Images added so far."""
        return int(self._seen.sum())

    # -------------------------------------------------------------- results
    def compute(self, reference, distributed: Optional[bool] = None, group=None,
                dst: Optional[int] = None) -> Optional["StabilityCurve"]:
        """Distances of every subset (and of all images) to ``reference``: a DNA, a list of DNAs or
        {distribution name: DNA}, one per distribution of this accumulator.

        Under ``torch.distributed`` (a default process group, or ``group=``; ``distributed=False``
        turns it off) this is a collective: each rank has added its own images (each image on one
        rank), the states are summed on rank ``dst`` (default 0), which computes the curve, and the
        curve is returned on every rank (on ``dst`` only, None elsewhere, when ``dst`` is given). The
        result equals a one-process run's bit for bit (counts and per-image means are exact sums;
        the curve is computed once). A distributed compute is done once per accumulator; afterwards
        the rank that computed the curve holds every rank's state (``compute(..., distributed=False)``
        there gives the curve again). See :func:`vdna.distributed.subset_curve_over_ranks`.
        """
        from .distributed import context as dist_context

        ctx = dist_context(distributed, group)
        if ctx is not None:
            from .distributed import subset_curve_over_ranks

            return subset_curve_over_ranks(self, reference, ctx, dst)
        if self._reduced_on not in (None, "here"):
            raise ValueError(f"compute: this accumulator's images were summed on rank {self._reduced_on} by an "
                             "earlier distributed compute(); call compute there")
        if self.num_images != self.n_images:
            missing = np.flatnonzero(~self._seen)
            raise ValueError(f"compute: {len(missing)} of {self.n_images} images were not added (e.g. image "
                             f"{int(missing[0])}); every image must be added once")
        refs = match_references(reference, self.distributions)
        for name, ref in refs.items():
            self._check_reference(name, ref)
        self._flush()
        K, R = len(self.sizes), self.repeats
        values: Dict[str, np.ndarray] = {}
        full: Dict[str, float] = {}
        if self._hist_name is not None:
            t0 = time.perf_counter()
            self._histogram_values(refs[self._hist_name], values, full)
            self.timings["emd read-out"] += time.perf_counter() - t0
        if self._gauss_name is not None:
            t0 = time.perf_counter()
            self._gaussian_values(refs[self._gauss_name], values, full)
            self.timings["gaussian read-out"] += time.perf_counter() - t0
        for v in values.values():
            if v.shape != (R, K):  # internal consistency, not user input
                raise RuntimeError("stability: internal error in the curve's shape")
        return StabilityCurve(self.sizes, values, full, self.permutations, self.n_images, self.seed,
                              list(self.distributions), list(self.neurons_list))

    def settings(self) -> dict:
        """What defines this accumulator's subsets and bins (JSON-able): every rank of a distributed
        curve must agree on it."""
        return {"neurons_list": dict(self.neurons_list), "layouts": dict(self.layouts),
                "feature_extractor_name": self.feature_extractor_name, "n_images": self.n_images,
                "sizes": self.sizes.tolist(), "repeats": self.repeats, "seed": self.seed,
                "distributions": list(self.distributions),
                "activation_ranges_sha256": None if self.activation_ranges is None else self.activation_ranges.checksum()}

    def _check_reference(self, name: str, ref: VDNA) -> None:
        if ref.feature_extractor_name != self.feature_extractor_name:
            raise ValueError(f"the reference {name} DNA was made with extractor '{ref.feature_extractor_name}', "
                             f"these activations come from '{self.feature_extractor_name}'")
        if dict(ref.neurons_list) != dict(self.neurons_list):
            raise ValueError(f"the reference {name} DNA has other layers or neuron counts than these activations")
        if name.startswith("histogram"):
            sha = ref.meta.get(META_RANGES_SHA256)
            if sha and sha != self.activation_ranges.checksum():
                raise ValueError("the reference histogram DNA was binned with other activation ranges than these "
                                 "(its ranges checksum differs); make both with the same activation_ranges")

    def _subset_tables(self, r: int, k: int) -> List[int]:
        """The tables whose sum is the histogram of subset k of repeat r."""
        G = self._stored
        return [r * G + j for j in range(k + 1)] if k < G else [self.repeats * G]

    def _full_tables(self) -> List[int]:
        """The tables whose sum is the histogram of all images."""
        if not self._rest:
            return [self.repeats * self._stored]
        return list(range(len(self.sizes))) + [self.repeats * len(self.sizes)]

    def _sum_tables(self, layer: str, which: Sequence[int]) -> np.ndarray:
        """(C, B) int64: the sum of a layer's tables ``which`` (zeros before the first update)."""
        out = np.zeros((self.neurons_list[layer], self.bins), dtype=np.int64)
        tables = self._tables.get(layer)
        for t in which if tables is not None else ():
            out += tables.row(t)
        return out

    def _histogram_values(self, ref: VDNA, values, full) -> None:
        # The same core calls, in the same order, as vdna.EMD(reference, subset DNA): per layer the
        # mean over neurons (emd_many), then the all-neuron mean as Σ_l (C_l / C) · mean_l.
        K, R, G = len(self.sizes), self.repeats, self._stored
        layers = list(self.neurons_list)
        total = sum(self.neurons_list.values())
        emd = {layer: np.zeros((R, K)) for layer in layers}
        emd_full = {}
        for layer in layers:
            ref_counts = ref.data[layer]
            tables = self._tables[layer]
            emd_full[layer] = float(_core.emd_many(ref_counts, [self._sum_tables(layer, self._full_tables())])[0])
            for r in range(R):
                running = np.zeros((self.neurons_list[layer], self.bins), dtype=np.int64)
                for k in range(G):
                    running += tables.row(r * G + k)
                    emd[layer][r, k] = _core.emd_many(ref_counts, [running])[0]
                if G < K:  # k = K-1: every image (table F)
                    emd[layer][r, K - 1] = emd_full[layer]
        values["emd"] = np.zeros((R, K))
        full["emd"] = 0.0
        for l in layers:
            values["emd"] += (self.neurons_list[l] / total) * emd[l]
            full["emd"] += (self.neurons_list[l] / total) * emd_full[l]
        for l in layers:
            values[f"emd/{l}"], full[f"emd/{l}"] = emd[l], emd_full[l]

    def _gaussian_values(self, ref: VDNA, values, full) -> None:
        # Per subset: mean and variances from a MomentAccumulator fed the stored per-image mean vectors
        # (NFD: vdna.NFD's core call, reference first); FD to the fixed reference by
        # _FrechetToReference, all of a layer's subsets in one call that spreads them over the core's
        # threads (see there; the core's vdna.FD costs two C x C eigendecompositions per call, too
        # slow for hundreds of subsets of 2048-neuron layers). FD over layers is their mean, NFD the
        # mean over every neuron.
        K, R = len(self.sizes), self.repeats
        layers = list(self.neurons_list)
        layer_cov = self._gauss_name == LAYER_GAUSSIAN
        cuts = np.concatenate([[0], self.sizes])
        fd = {l: np.zeros((R + 1, K)) for l in layers}  # row R: all images (column 0)
        nfd = {l: [[None] * K for _ in range(R + 1)] for l in layers}
        for layer in layers:
            c = self.neurons_list[layer]
            ref_d = ref.data[layer]
            ref_mu = ref_d["mu"]
            ref_var = np.ascontiguousarray(np.diagonal(ref_d["sigma"])) if ref.type == LAYER_GAUSSIAN else ref_d["var"]
            means = self._means[layer]
            bad = np.flatnonzero(~np.isfinite(means).all(axis=1))
            if bad.size:
                raise ValueError(f"layer '{layer}': {bad.size} image(s) (e.g. image {int(bad[0])}) have NaN or infinite "
                                 "activations, so their Gaussian distances are undefined (histograms count NaN "
                                 "apart; use only a histogram distribution)")
            frechet = _FrechetToReference(ref_mu, ref_d["sigma"]) if layer_cov else None
            if frechet is not None:
                frechet.project(means)  # one product for every subset of these images
            fd_cells, fd_mus, fd_rows = [], [], []  # the subsets whose FD is still to compute

            def measure(acc, rows, r, k):
                mu, var = acc.mean, acc.var
                nfd[layer][r][k] = _core.nfd(ref_mu, ref_var, mu, var)
                if frechet is not None and (r == R or rows is not None):
                    # (a subset of every image is the full set: its FD is computed once, as row R)
                    fd_cells.append((r, k))
                    fd_mus.append(mu)
                    fd_rows.append(rows)

            acc = _core.MomentAccumulator(c, layout="channels")
            acc.update(means)
            measure(acc, np.arange(self.n_images), R, 0)
            for r in range(R):
                acc = _core.MomentAccumulator(c, layout="channels")
                perm = self.permutations[r]
                for k in range(K):
                    acc.update(means[perm[cuts[k]:cuts[k + 1]]])
                    measure(acc, perm[: cuts[k + 1]] if cuts[k + 1] < self.n_images else None, r, k)
            if frechet is not None:
                for (r, k), v in zip(fd_cells, frechet.subset_distances(fd_mus, fd_rows)):
                    fd[layer][r, k] = v
                for r in range(R):
                    for k in range(K):
                        if cuts[k + 1] >= self.n_images:
                            fd[layer][r, k] = fd[layer][R, 0]
        cells = [(r, k) for r in range(R) for k in range(K)]
        if layer_cov:
            values["fd"] = np.zeros((R, K))
            for r, k in cells:
                values["fd"][r, k] = np.mean(np.array([fd[l][r, k] for l in layers]))
            full["fd"] = float(np.mean(np.array([fd[l][R, 0] for l in layers])))
            for l in layers:
                values[f"fd/{l}"], full[f"fd/{l}"] = fd[l][:R].copy(), float(fd[l][R, 0])
        values["nfd"] = np.zeros((R, K))
        for r, k in cells:
            values["nfd"][r, k] = np.mean(np.concatenate([nfd[l][r][k] for l in layers]))
        full["nfd"] = float(np.mean(np.concatenate([nfd[l][R][0] for l in layers])))
        for l in layers:
            values[f"nfd/{l}"] = np.array([[np.mean(nfd[l][r][k]) for k in range(K)] for r in range(R)])
            full[f"nfd/{l}"] = float(np.mean(nfd[l][R][0]))

    def subset_dna(self, repeat: int, size_index: int, distribution: Optional[str] = None) -> VDNA:
        """The DNA of one subset (``repeat``, ``sizes[size_index]``) from the accumulated state; histogram
        counts are exactly those ``make_vdna`` gives for the same images. ``repeat=-1``: all images."""
        from .accumulator import Accumulator

        name = distribution or self.distributions[0]
        if name not in self.distributions:
            raise ValueError(f"no distribution '{name}' here; this accumulator has {list(self.distributions)}")
        K, R = len(self.sizes), self.repeats
        r, k = int(repeat), int(size_index)
        if r != -1 and not 0 <= r < R:
            raise IndexError(f"repeat {repeat} is not in [0, {R}) (or -1 for all images)")
        if not 0 <= k < K:
            raise IndexError(f"size_index {size_index} is not in [0, {K})")
        acc = Accumulator(name, self.neurons_list, activation_ranges=self.activation_ranges if name.startswith(
            "histogram") else None, layouts=self.layouts if name.startswith("histogram") else None,
            feature_extractor_name=self.feature_extractor_name)
        if name.startswith("histogram"):
            self._flush()
            tabs = self._full_tables() if r == -1 else self._subset_tables(r, k)
            n_img = int(sum(self._table_images[next(iter(self.neurons_list))][t] for t in tabs))
            for layer in self.neurons_list:
                counts = self._sum_tables(layer, tabs)
                nans = np.zeros(self.neurons_list[layer], dtype=np.int64)
                for t in tabs:
                    nans += self._table_nans[layer][t]
                acc._accs[layer].add_counts(counts, nans, n_img)
        else:
            idx = np.arange(self.n_images) if r == -1 else self.permutations[r, : self.sizes[k]]
            acc.update({layer: self._means[layer][idx] for layer in self.neurons_list})
        return acc.compute()


def _check_distributions(distributions) -> Tuple[str, ...]:
    if isinstance(distributions, str):
        distributions = (distributions,)
    out = []
    for d in distributions:
        kind, _ = parse_distribution_name(d)
        if kind not in (HISTOGRAM, GAUSSIAN, LAYER_GAUSSIAN):
            raise ValueError(f"stability: distribution '{d}' cannot be compared; use histogram-B, gaussian or "
                             "layer-gaussian")
        out.append(d)
    if not out:
        raise ValueError("stability: give at least one distribution")
    if sum(d.startswith("histogram") for d in out) > 1:
        raise ValueError(f"stability: at most one histogram distribution, got {out}")
    if sum(not d.startswith("histogram") for d in out) > 1:
        raise ValueError(f"stability: at most one of gaussian / layer-gaussian (a layer-Gaussian gives NFD too), "
                         f"got {out}")
    return tuple(out)


def _distribution_of(dna: VDNA) -> str:
    return f"histogram-{dna.hist_nb_bins}" if dna.type == HISTOGRAM else dna.type


def match_references(reference, distributions) -> Dict[str, VDNA]:
    """{distribution: reference DNA} for ``distributions`` from a DNA, a list or a dict of DNAs."""
    if isinstance(reference, VDNA):
        pool = [reference]
    elif isinstance(reference, Mapping):
        pool = list(reference.values())
    elif isinstance(reference, (list, tuple)):
        pool = list(reference)
    else:
        raise TypeError(f"reference must be a VDNA, a list or a dict of VDNAs, got {type(reference).__name__}")
    for d in pool:
        if not isinstance(d, VDNA):
            raise TypeError(f"reference DNAs must be VDNAs, got {type(d).__name__}")
    by_dist = {_distribution_of(d): d for d in pool}
    out = {}
    for name in distributions:
        if name in by_dist:
            out[name] = by_dist[name]
        elif name == GAUSSIAN and LAYER_GAUSSIAN in by_dist:
            out[name] = by_dist[LAYER_GAUSSIAN]  # NFD uses its covariance diagonal
        else:
            raise ValueError(f"no reference DNA of type '{name}' (given: {sorted(by_dist) or 'none'}); give one "
                             "reference DNA per distribution, or a source to make them from")
    return out


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


# ============================================================================ the curve
class StabilityCurve:
    """Distances of random subsets of a dataset to a reference, by subset size.

    ``sizes`` (K,), ``values[metric]`` (repeats x K), ``full[metric]`` (all images). Metrics: "emd",
    "fd", "nfd" (all neurons / layers) and "emd/<layer>", "fd/<layer>", "nfd/<layer>".
    """

    def __init__(self, sizes, values, full, permutations, n_images, seed, distributions, layers):
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        self.full = {k: float(v) for k, v in full.items()}
        self.permutations = np.asarray(permutations, dtype=np.int64)
        self.n_images = int(n_images)
        self.seed = int(seed)
        self.distributions = list(distributions)
        self.layers = list(layers)

    @property
    def metrics(self) -> List[str]:
        return list(self.values)

    @property
    def repeats(self) -> int:
        return int(self.permutations.shape[0])

    def _get(self, metric: str) -> np.ndarray:
        if metric not in self.values:
            raise KeyError(f"no metric '{metric}' in this curve; it has {self.metrics}")
        return self.values[metric]

    def mean(self, metric: str) -> np.ndarray:
        """Mean over repeats, per size (K,)."""
        return self._get(metric).mean(axis=0)

    def std(self, metric: str) -> np.ndarray:
        """Standard deviation over repeats (ddof=0), per size (K,)."""
        return self._get(metric).std(axis=0)

    def full_value(self, metric: str) -> float:
        """The distance with all images."""
        self._get(metric)
        return self.full[metric]

    def subset_indices(self, repeat: int, size_index: int) -> np.ndarray:
        """Image indices (sorted) of the subset of ``repeat`` at ``sizes[size_index]``."""
        r, k = int(repeat), int(size_index)
        if not 0 <= r < self.repeats:
            raise IndexError(f"repeat {repeat} is not in [0, {self.repeats})")
        if not 0 <= k < len(self.sizes):
            raise IndexError(f"size_index {size_index} is not in [0, {len(self.sizes)})")
        return np.sort(self.permutations[r, : self.sizes[k]])

    def stable_size(self, metric: str, tol: float = 0.05) -> Optional[int]:
        """The smallest N from which (for it and every larger size) |mean − full| ≤ tol·|full| and
        std ≤ tol·|full|; None if no size qualifies."""
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        bound = float(tol) * abs(self.full_value(metric))
        ok = (np.abs(self.mean(metric) - self.full[metric]) <= bound) & (self.std(metric) <= bound)
        bad = np.flatnonzero(~ok)
        first = 0 if bad.size == 0 else int(bad[-1]) + 1
        return int(self.sizes[first]) if first < len(self.sizes) else None

    def extrapolate(self, metric: str, min_size: Optional[int] = None) -> Tuple[float, float]:
        """(value at infinitely many images, its standard error), FD∞-style: a least-squares fit of
        value = a + b/N to every repeat's value at the sizes N ≥ ``min_size`` (default: a tenth of the
        largest size) that are smaller than the whole dataset (a subset of all images is not a sample);
        the standard error of a is σ̂·√((XᵀX)⁻¹)₀₀ with σ̂² = RSS / (points − 2)."""
        v = self._get(metric)
        lo = self.sizes[-1] / 10 if min_size is None else int(min_size)
        use = (self.sizes >= lo) & (self.sizes < self.n_images)
        if use.sum() < 2:
            raise ValueError(f"extrapolate needs at least two sizes in [{lo:g}, {self.n_images}) (got "
                             f"{self.sizes[use].tolist()}); add sizes or lower min_size")
        x = np.repeat(1.0 / self.sizes[use][None, :], v.shape[0], axis=0).ravel()
        y = v[:, use].ravel()
        X = np.stack([np.ones_like(x), x], axis=1)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        dof = len(y) - 2
        if dof < 1:
            return float(coef[0]), float("nan")
        sigma2 = float(np.sum((y - X @ coef) ** 2)) / dof
        se = float(np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[0, 0]))
        return float(coef[0]), se

    # -------------------------------------------------------------- output
    def to_csv(self, path=None) -> str:
        """Rows metric,size,repeat,value (repeat "all" for the full value); written atomically to
        ``path`` when given; returns the text."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["metric", "size", "repeat", "value"])
        for m, v in self.values.items():
            for k, n in enumerate(self.sizes):
                for r in range(v.shape[0]):
                    w.writerow([m, int(n), r, repr(float(v[r, k]))])
            w.writerow([m, self.n_images, "all", repr(self.full[m])])
        text = buf.getvalue()
        if path is not None:
            from .atomic import write_text_atomic

            write_text_atomic(path, text)
        return text

    def save(self, path) -> None:
        """Save as a NumPy .npz archive (no pickles), atomically."""
        from .atomic import atomic_write

        header = {"format": _FORMAT, "version": _VERSION, "n_images": self.n_images, "seed": self.seed,
                  "distributions": self.distributions, "layers": self.layers, "metrics": self.metrics,
                  "full": self.full}
        arrays = {"sizes": self.sizes, "permutations": self.permutations,
                  "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for i, m in enumerate(self.metrics):
            arrays[f"values_{i}"] = self.values[m]
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "StabilityCurve":
        """Read a curve written by ``save`` (ValueError naming the file when it is not one)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if header.get("format") != _FORMAT:
                    raise ValueError("not a stability curve")
                values = {m: z[f"values_{i}"] for i, m in enumerate(header["metrics"])}
                sizes, perms = z["sizes"], z["permutations"]
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{os.fspath(path)}: not a readable stability curve file ({exc})") from exc
        for m, v in values.items():
            if v.shape != (perms.shape[0], len(sizes)):
                raise ValueError(f"{os.fspath(path)}: metric '{m}' has shape {v.shape}, expected "
                                 f"({perms.shape[0]}, {len(sizes)})")
        return cls(sizes, values, header["full"], perms, header["n_images"], header["seed"],
                   header["distributions"], header["layers"])

    def plot(self, metrics: Optional[Sequence[str]] = None, path=None):
        """Mean ± std against N (log axis), the all-image value dashed, one panel per metric (paper
        Fig. 5). Default metrics: the all-neuron ones. Returns the matplotlib Figure; saves to ``path``."""
        from .plots import _pyplot, save_figure

        plt = _pyplot()
        metrics = [m for m in self.metrics if "/" not in m] if metrics is None else list(metrics)
        for m in metrics:
            self._get(m)
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            mu, sd = self.mean(m), self.std(m)
            ax.plot(self.sizes, mu, "o-", color="#1f77b4", label="mean over repeats")
            ax.fill_between(self.sizes, mu - sd, mu + sd, color="#1f77b4", alpha=0.25, label="± std")
            ax.axhline(self.full[m], color="k", ls="--", lw=1, label=f"all {self.n_images} images")
            ax.set_xscale("log")
            ax.set_xlabel("images")
            ax.set_title(m.upper() if "/" not in m else m)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            save_figure(fig, path, close=False)
        return fig

    def __repr__(self) -> str:
        return (f"StabilityCurve(n_images={self.n_images}, sizes={self.sizes.tolist()}, repeats={self.repeats}, "
                f"metrics={[m for m in self.metrics if '/' not in m]})")


# ============================================================================ from images
def stability(
    processor,
    source,
    reference,
    *,
    sizes=None,
    repeats: int = 10,
    seed: int = 0,
    distributions: Optional[Sequence[str]] = None,
    num_images: int = -1,
    feat_extractor_name: Optional[str] = None,
    batch_size: int = 64,
    device: Optional[str] = None,
    num_workers: int = 4,
    crop_to_square_pre_resize: str = "none",
    resize_mode: str = "clean",
    backend: str = "auto",
    extractor_weights=None,
    activation_ranges=None,
    allow_download: Optional[bool] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    temp_dir: Optional[str] = None,
    distributed: Optional[bool] = None,
    group=None,
    dst: Optional[int] = None,
    verbose: bool = False,
) -> Optional[StabilityCurve]:
    """The body of :meth:`vdna.VDNAProcessor.stability` (see there)."""
    from .distributed import context as dist_context
    from .processor import resolve_device, source_batches
    from .sources import open_source

    ctx = dist_context(distributed, group)
    verbose = bool(verbose) and (ctx is None or ctx.rank == 0)  # progress from rank 0 only
    acc = refs = identity = setup_error = None
    try:  # under torch.distributed, a rank that fails here still joins the settings check below
        ref_is_dna = isinstance(reference, (VDNA, Mapping)) or (
            isinstance(reference, (list, tuple)) and reference and all(isinstance(d, VDNA) for d in reference))
        if ref_is_dna:
            match_references(reference, [])  # type checks only
            given = [reference] if isinstance(reference, VDNA) else list(
                reference.values() if isinstance(reference, Mapping) else reference)
            if distributions is None:
                distributions = [_distribution_of(d) for d in given]
            if feat_extractor_name is None:
                feat_extractor_name = given[0].feature_extractor_name
        if distributions is None:
            distributions = DEFAULT_DISTRIBUTIONS
        distributions = _check_distributions(distributions)
        if feat_extractor_name is None:
            feat_extractor_name = "mugs_vit_base"
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(repeats, bool) or int(repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")

        dev = resolve_device(device)
        extractor = processor.get_extractor(feat_extractor_name, extractor_weights=extractor_weights,
                                            allow_download=allow_download)
        be = processor.get_backend(extractor, dev, backend, None)
        info = extractor.info
        if any(d.startswith("histogram") for d in distributions) and activation_ranges is None:
            activation_ranges = extractor.activation_ranges()
        src = open_source(source, num_images=num_images, shuffle=False, seed=seed)
        n = len(src)
        if n < 1:
            raise ValueError("stability: the source has no images")
        sizes = check_sizes(sizes, n)
        if ref_is_dna:
            refs = match_references(reference, distributions)
        acc = SubsetAccumulator(dict(info.neurons_per_layer), n, sizes=sizes, repeats=repeats, seed=seed,
                                distributions=distributions, activation_ranges=activation_ranges,
                                layouts=dict(info.layouts), feature_extractor_name=info.name, max_memory=max_memory,
                                temp_dir=temp_dir)
        if refs is not None:
            for name, ref in refs.items():  # fail before the pass, not after it
                acc._check_reference(name, ref)
        identity = dict(acc.settings(), source_images=n, crop_to_square_pre_resize=crop_to_square_pre_resize,
                        resize_mode=resize_mode, reference_is_dna=bool(ref_is_dna))
    except Exception as exc:
        if acc is not None:
            acc.close()
        if ctx is None:
            raise
        setup_error = exc
    if ctx is not None:  # every rank raises here (the same error) if any rank differs or failed
        from .distributed import check_same_settings

        check_same_settings(ctx, identity, "stability", error=setup_error)
    try:
        if refs is None:  # a reference source: its DNAs, made with the same settings (split across ranks too)
            refs = _reference_dnas(be, info, reference, distributions, activation_ranges, batch_size, num_workers,
                                   crop_to_square_pre_resize, resize_mode, seed, verbose, ctx)
            for name, ref in refs.items():
                acc._check_reference(name, ref)  # the same on every rank: the DNAs are reduced
        import torch

        from .distributed import ranks_agree

        start, stop = (0, n) if ctx is None else ctx.shard(n)
        with ranks_agree(ctx):
            for batch in source_batches(src, info, int(batch_size), num_workers, crop_to_square_pre_resize,
                                        resize_mode, seed, True, verbose, desc="vdna stability", start=start,
                                        stop=stop):
                if len(batch.indices):
                    acc.update(be.forward(torch.from_numpy(batch.images)), indices=batch.indices)
        if ctx is not None:
            return acc.compute(refs, distributed=True, group=ctx.group, dst=dst)
        return acc.compute(refs, distributed=False)
    finally:
        acc.close()


def _reference_dnas(be, info, reference, distributions, activation_ranges, batch_size, num_workers, crop, resize_mode,
                    seed, verbose, ctx=None) -> Dict[str, VDNA]:
    """One pass over a reference source into one Accumulator per distribution (under torch.distributed:
    each rank reads its share of the images and the accumulators are reduced, on every rank)."""
    import torch

    from .accumulator import Accumulator
    from .processor import source_batches
    from .sources import open_source

    from .distributed import ranks_agree

    with ranks_agree(ctx):
        src = open_source(reference, shuffle=False, seed=seed)
        accs = {d: Accumulator(d, dict(info.neurons_per_layer), activation_ranges=activation_ranges if d.startswith(
            "histogram") else None, layouts=dict(info.layouts), feature_extractor_name=info.name)
            for d in distributions}
        start, stop = (0, len(src)) if ctx is None else ctx.shard(len(src))
        for batch in source_batches(src, info, int(batch_size), num_workers, crop, resize_mode, seed, True, verbose,
                                    desc="vdna stability reference", start=start, stop=stop):
            if len(batch.indices):
                acts = be.forward(torch.from_numpy(batch.images))
                for a in accs.values():
                    a.update(acts)
    if ctx is None:
        return {d: a.compute() for d, a in accs.items()}
    from .distributed import reduce_accumulator

    return {d: reduce_accumulator(a, ctx).compute() for d, a in accs.items()}
