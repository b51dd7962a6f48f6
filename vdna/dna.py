"""VDNA objects: one distribution per neuron of a feature extractor, for a set of images.

Four kinds, named as in the reference package:

=====================  =================  ===============================================
distribution name      ``type``           ``data[layer]``
=====================  =================  ===============================================
``histogram-B``        ``histogram``      int64 counts (C, B)
``gaussian``           ``gaussian``       {"mu": (C,), "var": (C,)} float64
``layer-gaussian``     ``layer-gaussian`` {"mu": (C,), "sigma": (C, C)} float64
``activation-ranges``  ``activation-ranges`` {"min": (C,), "max": (C,)} float64
=====================  =================  ===============================================

Data are NumPy arrays; ``device`` is kept as a string for compatibility. ``meta`` holds what the
reference format has no place for (NaN counts, skipped files, resize method, ranges checksum, ...);
it is saved under the JSON's "vdna" key.

Files are untrusted: ``set_npz_arrays`` (used by the loader, and by ``save`` before it writes
anything, so that every saved file loads) checks each array's key, dtype and shape against
``neurons_list`` and then its content: counts >= 0, variances >= 0, min <= max, covariances
symmetric and positive semi-definite, no NaN/Inf unless the DNA's ``nan_counts`` says NaN activations
were seen in that layer, and (histograms) no counts when ``num_images`` is 0. ``check_metadata``
checks ``num_images``, layer names and the ``meta`` entries the library relies on.
"""
import copy
import math
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .results import returns_result
from .settings import DataSettings, ExtractionSettings

HISTOGRAM = "histogram"
GAUSSIAN = "gaussian"
LAYER_GAUSSIAN = "layer-gaussian"
ACTIVATION_RANGES = "activation-ranges"

# meta keys with a meaning the library relies on
META_NAN_COUNTS = "nan_counts"  # {layer: number of NaN activation values seen (never binned)}
META_RANGES_SHA256 = "activation_ranges_sha256"  # ActivationRanges.checksum() of the binning ranges
META_SKIPPED_FILES = "skipped_files"

MAX_NUM_IMAGES = 2 ** 63 - 1  # image counts are int64 in the C core
_INT64_MAX = np.iinfo(np.int64).max


def parse_distribution_name(distribution_name: str) -> Tuple[str, Optional[int]]:
    """``"histogram-1000"`` -> ("histogram", 1000); ``"gaussian"`` -> ("gaussian", None); etc.

    Raises ValueError for anything else, including a bin count < 1.
    """
    if not isinstance(distribution_name, str):
        raise TypeError(f"distribution name must be a string, got {type(distribution_name).__name__}")
    if distribution_name in (GAUSSIAN, LAYER_GAUSSIAN, ACTIVATION_RANGES):
        return distribution_name, None
    prefix = HISTOGRAM + "-"
    if distribution_name.startswith(prefix):
        text = distribution_name[len(prefix):]
        if not text.isdigit() or not text.isascii():
            raise ValueError(f"histogram distribution '{distribution_name}': bin count must be a positive integer")
        if len(text) > 18:
            raise ValueError(f"histogram distribution '{distribution_name:.40}...': bin count is too large")
        bins = int(text)
        if bins < 1:
            raise ValueError(f"histogram distribution '{distribution_name}': bin count must be >= 1, got {bins}")
        return HISTOGRAM, bins
    raise ValueError(
        f"unknown distribution '{distribution_name}'; expected 'histogram-B' (B bins, e.g. 'histogram-1000'), "
        "'gaussian', 'layer-gaussian' or 'activation-ranges'"
    )


def get_vdna(distribution_name: str) -> "VDNA":
    """An empty VDNA of the named distribution (``histogram-B``, ``gaussian``, ...)."""
    kind, bins = parse_distribution_name(distribution_name)
    if kind == HISTOGRAM:
        return VDNAHist(hist_nb_bins=bins)
    return _CLASSES[kind]()


def check_comparable(a: "VDNA", b: "VDNA", what: str, same_type: bool = True) -> None:
    """Raise ValueError unless ``a`` and ``b`` describe the same neurons measured the same way."""
    for v, which in ((a, "first"), (b, "second")):
        if not isinstance(v, VDNA):
            raise TypeError(f"{what}: the {which} argument must be a VDNA, got {type(v).__name__}")
    if same_type and a.type != b.type:
        raise ValueError(f"{what}: different distribution types ('{a.type}' and '{b.type}')")
    if a.feature_extractor_name != b.feature_extractor_name:
        raise ValueError(
            f"{what}: DNAs come from different feature extractors "
            f"('{a.feature_extractor_name}' and '{b.feature_extractor_name}')"
        )
    if a.type == HISTOGRAM and b.type == HISTOGRAM and a.hist_nb_bins != b.hist_nb_bins:
        raise ValueError(f"{what}: histograms have different bin counts ({a.hist_nb_bins} and {b.hist_nb_bins})")
    if dict(a.neurons_list) != dict(b.neurons_list):
        raise ValueError(f"{what}: DNAs have different neuron lists ({_describe(a)} and {_describe(b)})")
    ra, rb = a.meta.get(META_RANGES_SHA256), b.meta.get(META_RANGES_SHA256)
    if a.type == HISTOGRAM and ra and rb and ra != rb:
        raise ValueError(
            f"{what}: histograms were binned with different activation ranges (checksums {ra[:12]}... and "
            f"{rb[:12]}...); recompute one of them with the other's ranges"
        )


def _describe(v: "VDNA") -> str:
    layers = list(v.neurons_list)
    shown = ", ".join(f"{l}: {v.neurons_list[l]}" for l in layers[:4])
    more = f", ... ({len(layers)} layers)" if len(layers) > 4 else ""
    return "{" + shown + more + "}"


def check_layer_name(layer, where: str) -> None:
    """ValueError unless ``layer`` can be stored as an .npz key and a JSON key and read back unchanged."""
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"{where}: layer names must be non-empty strings, got {layer!r}")
    if "\x00" in layer:
        raise ValueError(f"{where}: layer name {layer!r} contains a NUL character, which an .npz file cannot store")
    try:
        layer.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where}: layer name {layer!r} is not valid Unicode (lone surrogate)") from None


def check_num_images(num_images, where: str) -> int:
    """``num_images`` as an int; ValueError unless it is an integer in [0, 2^63 - 1]."""
    if isinstance(num_images, (bool, np.bool_)) or not isinstance(num_images, (int, np.integer)):
        raise ValueError(f"{where}: num_images must be a non-negative integer, got {num_images!r}")
    if not 0 <= int(num_images) <= MAX_NUM_IMAGES:
        raise ValueError(f"{where}: num_images must be between 0 and 2^63 - 1, got {int(num_images)}")
    return int(num_images)


def _is_count(value) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer)) and \
        0 <= int(value) <= _INT64_MAX


def check_metadata(meta, neurons_list: Mapping[str, int], where: str) -> None:
    """ValueError, naming ``where`` and the entry, when a ``meta`` entry the library relies on has the
    wrong form: nan_counts {layer of neurons_list: count >= 0}, skipped_files [name or
    {"name", "reason"}], activation_ranges_sha256 (text). Other entries are kept as they are."""
    if not isinstance(meta, Mapping):
        raise ValueError(f"{where}: the DNA's metadata must be an object, got {type(meta).__name__}")
    nan_counts = meta.get(META_NAN_COUNTS)
    if nan_counts is not None:
        if not isinstance(nan_counts, Mapping):
            raise ValueError(f"{where}: '{META_NAN_COUNTS}' must be an object {{layer: count}}, "
                             f"got {type(nan_counts).__name__}")
        for layer, count in nan_counts.items():
            if layer not in neurons_list:
                raise ValueError(f"{where}: '{META_NAN_COUNTS}' names layer {layer!r}, which is not in neurons_list")
            if not _is_count(count):
                raise ValueError(f"{where}: '{META_NAN_COUNTS}' of layer '{layer}' must be an integer >= 0, "
                                 f"got {count!r}")
    skipped = meta.get(META_SKIPPED_FILES)
    if skipped is not None:
        if not isinstance(skipped, (list, tuple)):
            raise ValueError(f"{where}: '{META_SKIPPED_FILES}' must be a list, got {type(skipped).__name__}")
        for k, item in enumerate(skipped):
            ok = isinstance(item, str) or (
                isinstance(item, Mapping) and isinstance(item.get("name"), str)
                and isinstance(item.get("reason", ""), str))
            if not ok:
                raise ValueError(f"{where}: '{META_SKIPPED_FILES}'[{k}] must be a file name or "
                                 f"{{\"name\": ..., \"reason\": ...}}, got {item!r:.80}")
    sha = meta.get(META_RANGES_SHA256)
    if sha is not None and not isinstance(sha, str):
        raise ValueError(f"{where}: '{META_RANGES_SHA256}' must be text, got {type(sha).__name__}")


def _nan_reported(meta: Mapping, layer: str) -> bool:
    counts = meta.get(META_NAN_COUNTS) if isinstance(meta, Mapping) else None
    return isinstance(counts, Mapping) and _is_count(counts.get(layer, 0)) and int(counts.get(layer, 0)) > 0


def _float_eps(dtype) -> float:
    """Machine epsilon of the precision an array was stored in (float64 for integers)."""
    dtype = np.dtype(dtype)
    return float(np.finfo(dtype).eps) if dtype.kind == "f" else float(np.finfo(np.float64).eps)


_EPS32 = float(np.finfo(np.float32).eps)


def check_covariance(sigma: np.ndarray, stored_dtype, num_images: int, what: str) -> np.ndarray:
    """``sigma`` (finite, float64) if it is a covariance matrix: non-negative diagonal, symmetric and
    positive semi-definite up to rounding; the two triangles are averaged when they differ within
    that rounding. ValueError naming ``what`` otherwise.

    Tolerance, derived from the float64 eigenvalues. A covariance of n images accumulated in float64
    carries, per entry, at most the worst-case summation error n·eps64 times sqrt(Σii·Σjj) <= max diag
    (Cauchy-Schwarz), and storage adds eps_store relative to the entry, where eps_store is the
    epsilon of the file's dtype but never less than eps32: vdna 0.1.1 stored float32 covariances (and
    float32 device accumulators produce them), and a DNA loaded from such a file and saved again is
    written in float64 with its float32 rounding intact. So every entry is within
    e = (eps_store + n·eps64)·max diag of an exact covariance, the two triangles within 2e of each
    other (the symmetry check), and the symmetrised matrix S within ||E||_2 <= d·e
    (||E||_2 <= ||E||_F <= d·max|E_ij|) of it in spectral norm: by Weyl's inequality its eigenvalues
    move by at most d·e from the exact ones, which are >= 0. LAPACK's float64 eigenvalue and Cholesky
    routines are backward stable: their own error is about d·eps64·max|λ|, and max|λ| <= g, the
    largest absolute row sum (Gershgorin). So a covariance is accepted when its eigenvalues are
    >= -tol with tol = 2·d·(e + eps64·g) (the factor 2 is headroom for the constants the bounds leave
    out); anything more negative is not a rounding effect (e.g. d = 2048, n = 10^6 images:
    tol ≈ 5e-4·max diag, dominated by the float32 term). Checking it: the Cholesky factorisation of
    S + tol·I succeeds when every eigenvalue is >= -tol (d³/3 flops, about 0.1 s for d = 2048
    unloaded); only when it fails are the eigenvalues computed (``numpy.linalg.eigvalsh``, about
    1 s for d = 2048), and the file is rejected, naming the smallest, if it is below -tol.
    """
    d = sigma.shape[0]
    if d == 0:
        return sigma
    diag = np.diag(sigma)
    if np.any(diag < 0):
        i = int(np.argmin(diag))
        raise ValueError(f"{what}: the covariance has a negative variance on its diagonal (neuron {i}: {diag[i]!r})")
    scale = float(diag.max())
    entry_err = (max(_float_eps(stored_dtype), _EPS32) + max(int(num_images), 1) * _float_eps(np.float64)) * scale
    diff = np.abs(sigma - sigma.T)
    asym = float(diff.max())
    if asym > 2 * entry_err:
        i, j = np.unravel_index(int(np.argmax(diff)), sigma.shape)
        raise ValueError(f"{what}: the covariance is not symmetric (entries [{i}, {j}] and [{j}, {i}] are "
                         f"{sigma[i, j]!r} and {sigma[j, i]!r})")
    if asym:
        sigma = (sigma + sigma.T) / 2
    if not sigma.any():
        return sigma
    with np.errstate(over="ignore"):
        gershgorin = float(np.max(np.sum(np.abs(sigma), axis=1)))
    tol = 2.0 * d * (entry_err + _float_eps(np.float64) * gershgorin)
    if not math.isfinite(tol):
        raise ValueError(f"{what}: the covariance's entries are too large to be checked (their sums overflow)")
    try:
        np.linalg.cholesky(sigma + tol * np.eye(d))
        return sigma
    except np.linalg.LinAlgError:
        pass
    try:
        eig = np.linalg.eigvalsh(sigma)
    except np.linalg.LinAlgError:
        raise ValueError(f"{what}: the covariance's eigenvalues cannot be computed") from None
    if eig[0] < -tol:
        raise ValueError(f"{what}: the covariance is not positive semi-definite (smallest eigenvalue "
                         f"{eig[0]:.6g}, below the rounding tolerance -{tol:.3g})")
    return sigma


class VDNA:
    """Base class of all DNAs; the attributes match the reference package."""

    type = "NotImplemented"

    def __init__(self):
        self.name = self.type
        self.data: Dict[str, object] = {}
        self.num_images = 0
        self.data_settings_used = DataSettings()
        self.extraction_settings_used = ExtractionSettings()
        self.feature_extractor_name = "NotFilled"
        self.loaded_from_path = "NotLoaded"
        self.neurons_list: Dict[str, int] = {}
        self.device = "cpu"
        self.meta: Dict[str, object] = {}

    # ------------------------------------------------------------------ accessors
    def get_neuron_dist(self, layer_name: str, neuron_idx: int):
        """The distribution of one neuron."""
        raise NotImplementedError

    def get_all_neurons_in_layer_dist(self, layer_name: str):
        """The distributions of every neuron of one layer."""
        raise NotImplementedError

    def get_all_neurons_dists(self):
        """The distributions of every neuron, layers in network order."""
        raise NotImplementedError

    def check_layer(self, layer_name: str) -> int:
        """The layer's neuron count; ValueError naming the layer when the DNA has no such layer."""
        if layer_name not in self.neurons_list:
            raise ValueError(f"layer '{layer_name}' is not in this DNA; its layers are {list(self.neurons_list)}")
        return int(self.neurons_list[layer_name])

    def check_neuron(self, layer_name: str, neuron_idx) -> int:
        """``neuron_idx`` as an int; ValueError when it is not a valid index of the layer."""
        count = self.check_layer(layer_name)
        if isinstance(neuron_idx, (bool, np.bool_)) or not isinstance(neuron_idx, (int, np.integer)):
            raise TypeError(f"neuron index must be an integer, got {type(neuron_idx).__name__}")
        if not 0 <= int(neuron_idx) < count:
            raise ValueError(
                f"neuron index {int(neuron_idx)} is out of range for layer '{layer_name}' ({count} neurons)"
            )
        return int(neuron_idx)

    # ------------------------------------------------------------------ files
    def save(self, file_path) -> None:
        """Write ``file_path + ".json"`` and ``file_path + ".npz"`` atomically (reference layout)."""
        from .files import save_vdna

        save_vdna(self, file_path)

    def npz_arrays(self) -> Dict[str, np.ndarray]:
        """The arrays of the .npz file, keys in network order (reference key names)."""
        raise NotImplementedError

    def npz_layout(self) -> Dict[str, Tuple[str, Tuple[int, ...], str]]:
        """What the .npz file must hold, from ``neurons_list``: {key: (dtype kinds, shape, layer)}
        (kinds as NumPy's ``dtype.kind``: "iu" integers, "f" floats). The loader checks every array's
        declared dtype and shape against it before reading its data."""
        raise NotImplementedError

    def set_npz_arrays(self, arrays: Mapping[str, np.ndarray], source: str) -> None:
        """Fill ``data`` from .npz arrays, checking keys, shapes and dtypes against ``neurons_list`` and
        the values (see the module docstring); ValueError naming ``source``, the array and the layer."""
        layout = self.npz_layout()
        for key, (kinds, shape, layer) in layout.items():
            self._expect(arrays, key, shape, kinds, source, layer)
        self._check_no_extra(arrays, set(layout), source)
        data = {}
        for layer in self.neurons_list:
            data[layer] = self._checked_layer(layer, arrays, f"{source}: layer '{layer}'")
        self.data = data

    def _checked_layer(self, layer: str, arrays: Mapping[str, np.ndarray], what: str):
        """The layer's ``data`` entry from its (shape-checked) arrays, after checking the values."""
        raise NotImplementedError

    def distribution_metadata(self) -> dict:
        """The JSON's "distribution" entry."""
        return {}

    # ------------------------------------------------------------------ merging
    def merge(self, other: "VDNA") -> "VDNA":
        """The DNA of the union of both image sets (disjoint sets assumed).

        Counts and ranges are exact; Gaussian moments are combined by the C core (Chan's formulas).
        """
        check_comparable(self, other, "merge")
        total = int(self.num_images) + int(other.num_images)
        if total > MAX_NUM_IMAGES:
            raise ValueError(f"merge: {self.num_images} + {other.num_images} images exceed 2^63 - 1")
        out = self._empty_like()
        if (self.num_images == 0 or other.num_images == 0) and self.type != HISTOGRAM:
            # an empty DNA's statistics are meaningless; histogram counts are always added (exact)
            src = other if self.num_images == 0 else self
            out.data = copy.deepcopy(src.data)
        else:
            out.data = {layer: self._merge_layer(layer, other) for layer in self.neurons_list}
        out.num_images = total
        out.meta = merge_meta(self.meta, other.meta)
        return out

    def _merge_layer(self, layer: str, other: "VDNA"):
        raise NotImplementedError

    def _empty_like(self) -> "VDNA":
        out = type(self).__new__(type(self))
        VDNA.__init__(out)
        out.name = self.name
        if hasattr(self, "hist_nb_bins"):
            out.hist_nb_bins = self.hist_nb_bins
        out.data_settings_used = copy.deepcopy(self.data_settings_used)
        out.extraction_settings_used = copy.deepcopy(self.extraction_settings_used)
        out.feature_extractor_name = self.feature_extractor_name
        out.neurons_list = dict(self.neurons_list)
        out.device = self.device
        return out

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        n_neurons = sum(int(c) for c in self.neurons_list.values())
        parts = [
            f"name='{self.name}'",
            f"feature_extractor='{self.feature_extractor_name}'",
            f"num_images={self.num_images}",
            f"layers={len(self.neurons_list)}",
            f"neurons={n_neurons}",
        ]
        nan_total = sum(int(v) for v in self.meta.get(META_NAN_COUNTS, {}).values())
        if nan_total:
            parts.append(f"nan_values={nan_total}")
        if self.loaded_from_path != "NotLoaded":
            parts.append(f"loaded_from='{self.loaded_from_path}'")
        return f"VDNA({', '.join(parts)})"

    # ------------------------------------------------------------------ helpers for subclasses
    def _expect(self, arrays, key, shape, kinds, source, layer):
        if key not in arrays:
            raise ValueError(f"{source}: missing array '{key}' for layer '{layer}' (expected shape {shape})")
        arr = arrays[key]
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{source}: array '{key}' of layer '{layer}' is a {type(arr).__name__}, not an array")
        if arr.dtype.kind not in kinds:
            wanted = {"iu": "integer", "f": "floating-point"}.get(kinds, kinds)
            raise ValueError(f"{source}: array '{key}' of layer '{layer}' has dtype {arr.dtype}, expected {wanted}")
        if arr.shape != shape:
            raise ValueError(f"{source}: array '{key}' of layer '{layer}': expected shape {shape}, got {arr.shape}")
        return arr

    def _check_no_extra(self, arrays, expected_keys, source):
        extra = [k for k in arrays if k not in expected_keys]
        if extra:
            raise ValueError(
                f"{source}: arrays {extra} do not belong to any layer of neurons_list {list(self.neurons_list)}"
            )


def merge_meta(a: Mapping, b: Mapping) -> dict:
    """Metadata of a merged DNA: NaN counts summed, skipped files concatenated, the rest from `a`."""
    out = copy.deepcopy(dict(a))
    if META_NAN_COUNTS in a or META_NAN_COUNTS in b:  # (null in a file reads as None: no counts)
        na, nb = a.get(META_NAN_COUNTS) or {}, b.get(META_NAN_COUNTS) or {}
        out[META_NAN_COUNTS] = {l: int(na.get(l, 0)) + int(nb.get(l, 0)) for l in list(dict.fromkeys([*na, *nb]))}
    if META_SKIPPED_FILES in a or META_SKIPPED_FILES in b:
        out[META_SKIPPED_FILES] = list(a.get(META_SKIPPED_FILES) or []) + list(b.get(META_SKIPPED_FILES) or [])
    return out


class VDNAHist(VDNA):
    """Per-neuron histograms of B bins over the normalised range [-1, 1]."""

    type = HISTOGRAM

    def __init__(self, hist_nb_bins: int = 2000):
        super().__init__()
        if isinstance(hist_nb_bins, bool) or not isinstance(hist_nb_bins, (int, np.integer)) or hist_nb_bins < 1:
            raise ValueError(f"hist_nb_bins must be an integer >= 1, got {hist_nb_bins!r}")
        self.hist_nb_bins = int(hist_nb_bins)
        self.name = f"{HISTOGRAM}-{self.hist_nb_bins}"

    @returns_result
    def get_neuron_dist(self, layer_name, neuron_idx):
        """Counts of one neuron, shape (1, B)."""
        idx = self.check_neuron(layer_name, neuron_idx)
        return self.data[layer_name][idx].reshape(1, -1)

    @returns_result
    def get_all_neurons_in_layer_dist(self, layer_name):
        """Counts of a layer, shape (C, B)."""
        self.check_layer(layer_name)
        return self.data[layer_name]

    @returns_result
    def get_all_neurons_dists(self):
        """Counts of every neuron, shape (sum C, B)."""
        return np.concatenate([self.data[layer] for layer in self.neurons_list], axis=0)

    def distribution_metadata(self):
        return {"hist_nb_bins": self.hist_nb_bins}

    def npz_arrays(self):
        # The reference writes int32; keep it whenever every count fits (one dtype for the whole file).
        limit = np.iinfo(np.int32).max
        fits = all(self.data[l].size == 0 or int(self.data[l].max()) <= limit for l in self.neurons_list)
        dtype = np.int32 if fits else np.int64
        return {layer: np.asarray(self.data[layer]).astype(dtype) for layer in self.neurons_list}

    def npz_layout(self):
        return {layer: ("iu", (int(c), self.hist_nb_bins), layer) for layer, c in self.neurons_list.items()}

    def _checked_layer(self, layer, arrays, what):
        arr = arrays[layer]
        if arr.size and arr.min() < 0:
            raise ValueError(f"{what}: the histogram has negative counts")
        if arr.dtype == np.uint64 and arr.size and arr.max() > _INT64_MAX:
            raise ValueError(f"{what}: the histogram has counts beyond int64")
        if int(self.num_images) == 0 and arr.size and arr.any():
            raise ValueError(f"{what}: num_images is 0 but the histogram holds counts")
        return arr.astype(np.int64, copy=False)

    def _merge_layer(self, layer, other):
        a, b = np.asarray(self.data[layer], np.int64), np.asarray(other.data[layer], np.int64)
        if np.any(a > _INT64_MAX - np.maximum(b, 0)):
            raise ValueError(f"merge: the counts of layer '{layer}' overflow int64")
        return a + b


class _PerNeuronPair(VDNA):
    """DNAs storing two (C,) vectors per layer under ``_keys`` (npz keys "<key>-<layer>")."""

    _keys: Tuple[str, str] = ("", "")

    @returns_result
    def get_neuron_dist(self, layer_name, neuron_idx):
        idx = self.check_neuron(layer_name, neuron_idx)
        return {k: self.data[layer_name][k][idx] for k in self._keys}

    @returns_result
    def get_all_neurons_in_layer_dist(self, layer_name):
        self.check_layer(layer_name)
        return {k: self.data[layer_name][k] for k in self._keys}

    @returns_result
    def get_all_neurons_dists(self):
        return {k: np.concatenate([self.data[l][k] for l in self.neurons_list]) for k in self._keys}

    def npz_arrays(self):
        return {
            f"{k}-{layer}": np.asarray(self.data[layer][k], dtype=np.float64)
            for layer in self.neurons_list
            for k in self._keys
        }

    def npz_layout(self):
        return {f"{k}-{layer}": ("f", (int(c),), layer) for layer, c in self.neurons_list.items() for k in self._keys}

    def _checked_layer(self, layer, arrays, what):
        values = {k: arrays[f"{k}-{layer}"].astype(np.float64, copy=False) for k in self._keys}
        self._check_values(values, what, _nan_reported(self.meta, layer))
        return values

    def _check_values(self, values, what, nan_reported):
        raise NotImplementedError


class VDNAGauss(_PerNeuronPair):
    """Per-neuron Gaussians: mean and unbiased variance of the per-image spatial means."""

    type = GAUSSIAN
    _keys = ("mu", "var")

    def _check_values(self, values, what, nan_reported):
        mu, var = values["mu"], values["var"]
        if not nan_reported:  # NaN/Inf activations propagate into the moments (and are counted)
            for k in ("mu", "var"):
                bad = ~np.isfinite(values[k])
                if bad.any():
                    i = int(np.argmax(bad))
                    raise ValueError(f"{what}: '{k}' of neuron {i} is {values[k][i]!r} but the file reports no "
                                     "NaN activations for this layer")
        if np.any(var < 0):
            i = int(np.argmax(var < 0))
            raise ValueError(f"{what}: negative variance {var[i]!r} (neuron {i})")

    def _merge_layer(self, layer, other):
        from ._native import _core

        accs = []
        for v in (self, other):
            acc = _core.MomentAccumulator(int(self.neurons_list[layer]))
            mu, var = v.data[layer]["mu"], v.data[layer]["var"]
            acc.set_state(int(v.num_images), mu, var * (int(v.num_images) - 1))
            accs.append(acc)
        accs[0].merge(accs[1])
        return {"mu": accs[0].mean, "var": accs[0].var}


class VDNAActivationRanges(_PerNeuronPair):
    """Per-neuron minimum and maximum activation."""

    type = ACTIVATION_RANGES
    _keys = ("min", "max")

    def _check_values(self, values, what, nan_reported):
        lo, hi = values["min"], values["max"]
        nan = np.isnan(lo) | np.isnan(hi)
        if nan.any():
            i = int(np.argmax(nan))
            # a neuron that saw only NaN has min = max = NaN, and the NaN values were counted
            if not nan_reported or np.any(np.isnan(lo) != np.isnan(hi)):
                raise ValueError(f"{what}: neuron {i} has min {lo[i]!r} and max {hi[i]!r}"
                                 + ("" if nan_reported else " but the file reports no NaN activations for this layer"))
        inverted = ~nan & (lo > hi)
        if inverted.any():
            i = int(np.argmax(inverted))
            raise ValueError(f"{what}: min > max for neuron {i} ({lo[i]!r} > {hi[i]!r})")

    def _merge_layer(self, layer, other):
        a, b = self.data[layer], other.data[layer]
        return {"min": np.minimum(a["min"], b["min"]), "max": np.maximum(a["max"], b["max"])}


class VDNALayerGauss(VDNA):
    """One multivariate Gaussian per layer (mean vector, unbiased covariance) of per-image means."""

    type = LAYER_GAUSSIAN

    @returns_result
    def get_neuron_dist(self, layer_name, neuron_idx):
        """{"mu": mean, "sigma": variance} of one neuron (the covariance's diagonal entry)."""
        idx = self.check_neuron(layer_name, neuron_idx)
        d = self.data[layer_name]
        return {"mu": d["mu"][idx], "sigma": d["sigma"][idx, idx]}

    @returns_result
    def get_all_neurons_in_layer_dist(self, layer_name):
        """{"mu": (C,), "sigma": (C, C)}."""
        self.check_layer(layer_name)
        d = self.data[layer_name]
        return {"mu": d["mu"], "sigma": d["sigma"]}

    @returns_result
    def get_all_neurons_dists(self):
        """{layer: {"mu", "sigma"}} (as the reference: a layer-gaussian has no cross-layer covariance)."""
        return {layer: self.get_all_neurons_in_layer_dist(layer) for layer in self.neurons_list}

    def npz_arrays(self):
        out = {}
        for layer in self.neurons_list:
            out[f"mu-{layer}"] = np.asarray(self.data[layer]["mu"], dtype=np.float64)
            out[f"sigma-{layer}"] = np.asarray(self.data[layer]["sigma"], dtype=np.float64)
        return out

    def npz_layout(self):
        out = {}
        for layer, c in self.neurons_list.items():
            out[f"mu-{layer}"] = ("f", (int(c),), layer)
            out[f"sigma-{layer}"] = ("f", (int(c), int(c)), layer)
        return out

    def _checked_layer(self, layer, arrays, what):
        stored = arrays[f"sigma-{layer}"]
        mu = arrays[f"mu-{layer}"].astype(np.float64, copy=False)
        sigma = stored.astype(np.float64, copy=False)
        finite = bool(np.all(np.isfinite(mu))) and bool(np.all(np.isfinite(sigma)))
        if finite:
            sigma = check_covariance(sigma, stored.dtype, self.num_images, what)
        elif not _nan_reported(self.meta, layer):  # NaN/Inf activations propagate (and are counted)
            name = "mu" if not np.all(np.isfinite(mu)) else "sigma"
            raise ValueError(f"{what}: '{name}' holds NaN or Inf but the file reports no NaN activations for "
                             "this layer")
        elif np.any(np.diag(sigma) < 0):
            raise ValueError(f"{what}: the covariance has a negative variance on its diagonal")
        return {"mu": mu, "sigma": sigma}

    def _merge_layer(self, layer, other):
        from ._native import _core

        accs = []
        for v in (self, other):
            acc = _core.CovAccumulator(int(self.neurons_list[layer]))
            d = v.data[layer]
            acc.set_state(int(v.num_images), d["mu"], d["sigma"] * (int(v.num_images) - 1))
            accs.append(acc)
        accs[0].merge(accs[1])
        return {"mu": accs[0].mean, "sigma": accs[0].cov}


_CLASSES = {
    GAUSSIAN: VDNAGauss,
    LAYER_GAUSSIAN: VDNALayerGauss,
    ACTIVATION_RANGES: VDNAActivationRanges,
}
