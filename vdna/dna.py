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
"""
import copy
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

    def set_npz_arrays(self, arrays: Mapping[str, np.ndarray], source: str) -> None:
        """Fill ``data`` from .npz arrays, checking keys, shapes and dtypes against ``neurons_list``."""
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
        out = self._empty_like()
        if self.num_images == 0 or other.num_images == 0:
            src = other if self.num_images == 0 else self
            out.data = copy.deepcopy(src.data)
        else:
            out.data = {layer: self._merge_layer(layer, other) for layer in self.neurons_list}
        out.num_images = int(self.num_images) + int(other.num_images)
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
    if META_NAN_COUNTS in a or META_NAN_COUNTS in b:
        na, nb = a.get(META_NAN_COUNTS, {}), b.get(META_NAN_COUNTS, {})
        out[META_NAN_COUNTS] = {l: int(na.get(l, 0)) + int(nb.get(l, 0)) for l in list(dict.fromkeys([*na, *nb]))}
    if META_SKIPPED_FILES in a or META_SKIPPED_FILES in b:
        out[META_SKIPPED_FILES] = list(a.get(META_SKIPPED_FILES, [])) + list(b.get(META_SKIPPED_FILES, []))
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

    def set_npz_arrays(self, arrays, source):
        data = {}
        for layer, count in self.neurons_list.items():
            arr = self._expect(arrays, layer, (int(count), self.hist_nb_bins), "iu", source, layer)
            if arr.size and arr.min() < 0:
                raise ValueError(f"{source}: histogram of layer '{layer}' has negative counts")
            if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{source}: histogram of layer '{layer}' has counts beyond int64")
            data[layer] = arr.astype(np.int64, copy=False)
        self._check_no_extra(arrays, set(self.neurons_list), source)
        self.data = data

    def _merge_layer(self, layer, other):
        return self.data[layer] + other.data[layer]


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

    def set_npz_arrays(self, arrays, source):
        data = {}
        for layer, count in self.neurons_list.items():
            data[layer] = {
                k: self._expect(arrays, f"{k}-{layer}", (int(count),), "f", source, layer).astype(
                    np.float64, copy=False
                )
                for k in self._keys
            }
        self._check_no_extra(arrays, {f"{k}-{l}" for l in self.neurons_list for k in self._keys}, source)
        self.data = data


class VDNAGauss(_PerNeuronPair):
    """Per-neuron Gaussians: mean and unbiased variance of the per-image spatial means."""

    type = GAUSSIAN
    _keys = ("mu", "var")

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

    def set_npz_arrays(self, arrays, source):
        data = {}
        for layer, count in self.neurons_list.items():
            c = int(count)
            data[layer] = {
                "mu": self._expect(arrays, f"mu-{layer}", (c,), "f", source, layer).astype(np.float64, copy=False),
                "sigma": self._expect(arrays, f"sigma-{layer}", (c, c), "f", source, layer).astype(
                    np.float64, copy=False
                ),
            }
        self._check_no_extra(arrays, {f"{k}-{l}" for l in self.neurons_list for k in ("mu", "sigma")}, source)
        self.data = data

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
