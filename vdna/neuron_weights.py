"""``NeuronWeights``: a weighting of a feature extractor's neurons (or layers) for customised comparisons.

A weighted distance is D_W = Σₙ wₙ dₙ over per-neuron distances dₙ (EMD or NFD; paper Eq. 5). Weights
are normalised like the paper's: uniform weights are 1/N each, so that D_W of uniform weights is the
plain mean over neurons (the unweighted distance). With ``granularity="layer"`` there is one weight per
layer and the unit distances are per-layer distances (FD for layer Gaussians; for EMD and NFD, the mean
over the layer's neurons), uniform weights being 1/L.

Weights are non-negative float64 arrays, one per layer in network order, tied to the extractor name and
neurons list they were made for: using them with a DNA of another extractor or neurons list raises
ValueError. Files are a pair ``W.json`` (metadata, checksum of the arrays) + ``W.npz`` (one float64
array per layer), written atomically and read without ever unpickling; a pair whose .npz does not match
its .json (edited, truncated, or from another save) is rejected.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
from collections.abc import Mapping
from typing import Dict, Iterable, Optional, Sequence

import numpy as np

from .atomic import write_bytes_atomic, write_text_atomic
from .accumulator import _check_neurons_list  # one rule for a neurons list (accumulator and weights)

GRANULARITIES = ("neuron", "layer")
FORMAT_NAME = "vdna-neuron-weights"
FORMAT_VERSION = 1
_OUR_KEY = "vdna_neuron_weights"


class NeuronWeights:
    """Non-negative weights per neuron (or per layer), tied to an extractor and its neurons list.

    Build one with :meth:`uniform`, :meth:`from_dict`, :meth:`top_k`, :meth:`layers`,
    :func:`vdna.learn_weights` or :meth:`load`; use it as ``weights=`` of ``EMD``/``NFD``/``FD``/
    ``distances_to`` and ``neuron_weights=`` of ``rank_images``.
    """

    def __init__(self, weights: Mapping, feature_extractor_name: str, neurons_list: Mapping[str, int],
                 granularity: str = "neuron", meta: Optional[dict] = None):
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be 'neuron' or 'layer', got {granularity!r}")
        neurons = _check_neurons_list(neurons_list)
        if not isinstance(weights, Mapping):
            raise TypeError(f"weights must be a mapping {{layer: array}}, got {type(weights).__name__}")
        missing = [l for l in neurons if l not in weights]
        extra = [l for l in weights if l not in neurons]
        if missing or extra:
            raise ValueError(f"weights must have exactly the layers of the neurons list; missing {missing}, "
                             f"unknown {extra}")
        self.feature_extractor_name = str(feature_extractor_name)
        self.neurons_list: Dict[str, int] = neurons
        self.granularity = granularity
        self.meta: dict = dict(meta) if meta else {}
        self._w: Dict[str, np.ndarray] = {}
        for layer, count in neurons.items():
            size = count if granularity == "neuron" else 1
            arr = _check_values(weights[layer], (size,), f"layer '{layer}'")
            arr.setflags(write=False)
            self._w[layer] = arr

    # ------------------------------------------------------------------ constructors
    @classmethod
    def uniform(cls, like, granularity: str = "neuron") -> "NeuronWeights":
        """1/N on every neuron (the plain mean), or 1/L on every layer with ``granularity="layer"``."""
        ext, neurons = _identity(like)
        if granularity == "layer":
            return cls({l: np.array([1.0 / len(neurons)]) for l in neurons}, ext, neurons, "layer")
        n = sum(neurons.values())
        return cls({l: np.full(c, 1.0 / n) for l, c in neurons.items()}, ext, neurons, granularity)

    @classmethod
    def from_dict(cls, weights: Mapping, like, granularity: Optional[str] = None,
                  meta: Optional[dict] = None) -> "NeuronWeights":
        """From ``{layer: (C,) array}`` (the shape ``return_neuron_wise=True`` returns), or ``{layer: number}``
        for layer weights. ``granularity`` is inferred when not given: numbers -> "layer", arrays -> "neuron"."""
        ext, neurons = _identity(like)
        if not isinstance(weights, Mapping):
            raise TypeError(f"from_dict expects a mapping {{layer: weights}}, got {type(weights).__name__}")
        if granularity is None:
            granularity = "layer" if weights and all(np.ndim(v) == 0 for v in weights.values()) else "neuron"
        return cls({l: np.reshape(np.asarray(v), -1) if np.ndim(v) == 0 else v for l, v in weights.items()},
                   ext, neurons, granularity, meta)

    @classmethod
    def from_array(cls, values, like, granularity: Optional[str] = None) -> "NeuronWeights":
        """From a flat array in network order: N values (neurons) or L values (layers)."""
        ext, neurons = _identity(like)
        flat = _check_values(values, None, "weights")
        n, n_layers = sum(neurons.values()), len(neurons)
        if granularity is None:
            granularity = "neuron" if flat.shape[0] == n else "layer" if flat.shape[0] == n_layers else None
        sizes = [c if granularity == "neuron" else 1 for c in neurons.values()]
        if granularity not in GRANULARITIES or flat.shape[0] != sum(sizes):
            raise ValueError(f"a flat weights array needs {n} values (one per neuron) or {n_layers} (one per "
                             f"layer) for this DNA; got {flat.shape[0]}")
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        return cls(dict(zip(neurons, parts)), ext, neurons, granularity)

    @classmethod
    def top_k(cls, scores: Mapping, k: int, like) -> "NeuronWeights":
        """1/k on the ``k`` highest of ``scores`` (``{layer: (C,) array}``, e.g. :func:`vdna.sensitivity`),
        0 elsewhere: the paper's neuron selection. Ties keep network order."""
        ext, neurons = _identity(like)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an integer, got {type(k).__name__}")
        if not isinstance(scores, Mapping):
            raise TypeError(f"scores must be a mapping {{layer: (C,) array}}, got {type(scores).__name__}")
        missing = [l for l in neurons if l not in scores]
        extra = [l for l in scores if l not in neurons]
        if missing or extra:
            raise ValueError(f"scores must have exactly the layers of the DNA; missing {missing}, unknown {extra}")
        flat = []
        for layer, c in neurons.items():
            s = np.asarray(scores[layer])
            if s.dtype.kind not in "iuf" or s.shape != (c,):
                raise ValueError(f"scores of layer '{layer}' must be {c} numbers, got shape {s.shape}, dtype {s.dtype}")
            if np.isnan(s).any():
                raise ValueError(f"scores of layer '{layer}' contain NaN (neuron {int(np.flatnonzero(np.isnan(s))[0])})")
            flat.append(s.astype(np.float64))
        flat = np.concatenate(flat)
        if not 1 <= int(k) <= flat.shape[0]:
            raise ValueError(f"k must be between 1 and the number of neurons ({flat.shape[0]}), got {k}")
        chosen = np.argsort(-flat, kind="stable")[: int(k)]
        w = np.zeros(flat.shape[0])
        w[chosen] = 1.0 / int(k)
        out = cls.from_array(w, like, "neuron")
        out.meta = {"selection": {"method": "top_k", "k": int(k)}}
        return out

    @classmethod
    def layers(cls, like, layers: Sequence[str], granularity: str = "neuron") -> "NeuronWeights":
        """Uniform weights on the neurons of ``layers`` (1/n over their n neurons), 0 elsewhere; with
        ``granularity="layer"``, 1/len(layers) on each of those layers."""
        ext, neurons = _identity(like)
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        unknown = [l for l in layers if l not in neurons]
        if unknown or not layers:
            raise ValueError(f"layers must be a non-empty list of layers of the DNA; unknown {unknown}, "
                             f"the layers are {list(neurons)}")
        if granularity == "layer":
            return cls({l: np.array([1.0 / len(set(layers))]) if l in layers else np.zeros(1) for l in neurons},
                       ext, neurons, "layer")
        n = sum(neurons[l] for l in set(layers))
        return cls({l: np.full(c, 1.0 / n) if l in layers else np.zeros(c) for l, c in neurons.items()},
                   ext, neurons, granularity)

    # ------------------------------------------------------------------ views
    def to_dict(self) -> Dict[str, object]:
        """``{layer: (C,) float64 array}`` (copies), or ``{layer: float}`` for layer weights."""
        if self.granularity == "layer":
            return {l: float(w[0]) for l, w in self._w.items()}
        return {l: w.copy() for l, w in self._w.items()}

    def to_array(self) -> np.ndarray:
        """All weights in network order: N values (neurons) or L values (layers)."""
        return np.concatenate([self._w[l] for l in self.neurons_list])

    def layer(self, name: str) -> np.ndarray:
        """The weights of one layer (a read-only (C,) array, or (1,) for layer weights)."""
        if name not in self._w:
            raise ValueError(f"layer '{name}' is not in these weights; their layers are {list(self.neurons_list)}")
        return self._w[name]

    def nonzero(self) -> int:
        """How many weights are not zero."""
        return int(sum(np.count_nonzero(w) for w in self._w.values()))

    def total(self) -> float:
        """Σ w."""
        return float(self.to_array().sum())

    def normalized(self) -> "NeuronWeights":
        """The same weights scaled to sum 1 (ValueError when they are all zero)."""
        total = self.total()
        if not total > 0:
            raise ValueError("cannot normalise weights that are all zero")
        return NeuronWeights({l: w / total for l, w in self._w.items()}, self.feature_extractor_name,
                             self.neurons_list, self.granularity, self.meta)

    def neuron_array(self) -> np.ndarray:
        """Weights per neuron in network order: layer weights are spread evenly over their layer's
        neurons (w_l / C_l each), so that Σ wₙ dₙ = Σ_l w_l · (mean of layer l's dₙ)."""
        if self.granularity == "neuron":
            return self.to_array()
        return np.concatenate([np.full(c, self._w[l][0] / c) for l, c in self.neurons_list.items()])

    def check_compatible(self, dna, what: str = "neuron weights") -> None:
        """ValueError unless ``dna`` has this extractor and neurons list."""
        ext, neurons = _identity(dna)
        if ext != self.feature_extractor_name:
            raise ValueError(f"{what} were made for extractor '{self.feature_extractor_name}' but the DNA comes from "
                             f"'{ext}'")
        if neurons != self.neurons_list:
            raise ValueError(f"{what} were made for another neurons list ({_describe(self.neurons_list)}) than the "
                             f"DNA's ({_describe(neurons)})")

    def __eq__(self, other) -> bool:
        if not isinstance(other, NeuronWeights):
            return NotImplemented
        return (self.feature_extractor_name == other.feature_extractor_name and self.granularity == other.granularity
                and list(self.neurons_list.items()) == list(other.neurons_list.items())
                and all(np.array_equal(self._w[l], other._w[l]) for l in self.neurons_list))

    __hash__ = None

    def __repr__(self) -> str:
        n = sum(w.shape[0] for w in self._w.values())
        unit = "neurons" if self.granularity == "neuron" else "layers"
        return (f"NeuronWeights(extractor='{self.feature_extractor_name}', {self.nonzero()} of {n} {unit} weighted, "
                f"sum={self.total():.6g})")

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write ``path + ".json"`` and ``path + ".npz"``, each atomically (".json"/".npz" in ``path`` are
        dropped). The JSON records the .npz's sha256: if a save is interrupted between the two files,
        :meth:`load` reports the mismatch instead of returning other weights."""
        from .files import _jsonable, pair_paths
        from .version import __version__

        json_path, npz_path = pair_paths(path)
        buf = io.BytesIO()
        np.savez_compressed(buf, **{l: np.asarray(self._w[l], dtype=np.float64) for l in self.neurons_list})
        data = buf.getvalue()
        header = {
            _OUR_KEY: {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                       "npz_sha256": hashlib.sha256(data).hexdigest()},
            "vdna_version": __version__,
            "time_of_compute": datetime.datetime.now().strftime("%I:%M%p on %B %d, %Y"),
            "feature_extractor_name": self.feature_extractor_name,
            "granularity": self.granularity,
            "neurons_list": {l: int(c) for l, c in self.neurons_list.items()},
            "nonzero": self.nonzero(),
            "meta": _jsonable(self.meta),
        }
        write_bytes_atomic(npz_path, data)
        write_text_atomic(json_path, json.dumps(header, indent=2))

    @classmethod
    def load(cls, path) -> "NeuronWeights":
        """Read weights saved by :meth:`save` (``path`` with or without ".json"/".npz").

        FileNotFoundError for a missing file; ValueError, naming the file, for anything malformed,
        tampered with or inconsistent (never unpickles)."""
        from .files import pair_paths, read_npz

        json_path, npz_path = pair_paths(path)
        for p in (json_path, npz_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"neuron weights file not found: {p}")
        header = _read_header(json_path)
        if header is None:
            raise ValueError(f"{json_path}: not a neuron weights file (no '{_OUR_KEY}' entry; is it a DNA?)")
        ours = header[_OUR_KEY]
        with open(npz_path, "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != ours.get("npz_sha256"):
            raise ValueError(f"mismatched neuron weights pair: {npz_path} does not match {json_path} (sha256 "
                             "differs): the .npz was modified or truncated, or the files come from different saves")
        arrays = read_npz(npz_path)
        ext = header.get("feature_extractor_name")
        if not isinstance(ext, str):
            raise ValueError(f"{json_path}: 'feature_extractor_name' must be a string, got {ext!r}")
        meta = header.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError(f"{json_path}: 'meta' must be an object")
        try:
            neurons = _check_neurons_list(header.get("neurons_list"))
            weights = cls(arrays, ext, neurons, header.get("granularity"), meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{npz_path}: {exc}") from exc
        return weights

    @classmethod
    def from_file(cls, path, like, layer: Optional[str] = None) -> "NeuronWeights":
        """Weights from any supported file, checked against the DNA ``like``:

        - a pair written by :meth:`save` (``W``, ``W.json`` or ``W.npz``);
        - ``.npy``: a flat array, N values (neurons) or L values (layers) in network order, or the C values
          of ``layer`` (weights 0 on the other layers);
        - ``.npz`` or ``.json`` alone: ``{layer: [weights]}`` (or ``{layer: weight}`` for layer weights).
        """
        from .files import pair_paths
        from .weights_io import read_weights_file

        path = os.fspath(path)
        lower = path.lower()
        json_path, _ = pair_paths(path)
        if not lower.endswith(".npy") and os.path.isfile(json_path) and _read_header(json_path, strict=False):
            w = cls.load(path)
            w.check_compatible(like)
            return w
        _, neurons = _identity(like)
        raw = read_weights_file(path)
        if isinstance(raw, np.ndarray):
            flat = raw.reshape(-1) if raw.ndim <= 1 else raw
            if layer is not None and flat.ndim == 1 and flat.shape[0] == neurons.get(layer) \
                    and flat.shape[0] not in (sum(neurons.values()), len(neurons)):
                values = {l: flat if l == layer else np.zeros(c) for l, c in neurons.items()}
                return _wrap_errors(path, lambda: cls.from_dict(values, like, "neuron"))
            return _wrap_errors(path, lambda: cls.from_array(flat, like))
        per_layer = raw
        if layer is not None and set(per_layer) == {layer}:
            per_layer = {l: per_layer[l] if l == layer else (np.zeros(c) if np.ndim(per_layer[layer]) else 0.0)
                         for l, c in neurons.items()}
        return _wrap_errors(path, lambda: cls.from_dict(per_layer, like))

    def to_csv(self, path) -> None:
        """Write ``layer,neuron,weight`` rows (``layer,weight`` for layer weights), atomically."""
        lines = ["layer,neuron,weight" if self.granularity == "neuron" else "layer,weight"]
        for layer in self.neurons_list:
            if self.granularity == "layer":
                lines.append(f"{_csv_field(layer)},{float(self._w[layer][0])!r}")
            else:
                lines.extend(f"{_csv_field(layer)},{i},{float(x)!r}" for i, x in enumerate(self._w[layer]))
        write_text_atomic(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------- helpers
def is_weights_file(path) -> bool:
    """True when ``path`` (with or without ".json"/".npz") names a pair written by NeuronWeights.save."""
    from .files import pair_paths

    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        return False
    json_path = pair_paths(path)[0]
    if not os.path.isfile(json_path):
        return False
    try:
        return _read_header(json_path, strict=False) is not None
    except ValueError:
        return True  # ours, but unreadable: load() says why


def _identity(like):
    """(extractor name, neurons list) of a DNA, NeuronWeights or PairDistances."""
    from .dna import VDNA

    if isinstance(like, VDNA) or (hasattr(like, "feature_extractor_name") and hasattr(like, "neurons_list")
                                  and not isinstance(like, (str, bytes, Mapping))):
        return like.feature_extractor_name, _check_neurons_list(like.neurons_list)
    raise TypeError(f"like must be a VDNA (or NeuronWeights), got {type(like).__name__}")


def _check_values(values, shape, where: str) -> np.ndarray:
    """A float64 copy of ``values``, checked: numbers, the given shape (1-D when None), finite, >= 0."""
    if values is None:
        raise ValueError(f"{where}: no weights")
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
        raise ValueError(f"{where}: weights must be numbers, got dtype {arr.dtype}")
    if shape is None:
        if arr.ndim != 1:
            raise ValueError(f"{where}: expected a flat (1-D) array, got shape {arr.shape}")
    elif arr.shape != shape:
        raise ValueError(f"{where}: expected {shape[0]} weight(s), got shape {arr.shape}")
    arr = np.array(arr, dtype=np.float64)  # a copy, native byte order
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        raise ValueError(f"{where}: weights must be finite and >= 0; weight {int(bad[0])} is {arr[bad[0]]}")
    return arr


def _describe(neurons: Mapping[str, int]) -> str:
    layers = list(neurons)
    shown = ", ".join(f"{l}: {neurons[l]}" for l in layers[:4])
    return "{" + shown + (f", ... ({len(layers)} layers)" if len(layers) > 4 else "") + "}"


def _read_header(json_path: str, strict: bool = True) -> Optional[dict]:
    """The JSON of a weights pair; None when it is JSON without our key (ValueError for bad JSON when strict)."""
    from .files import _read_json

    try:  # size-capped, and deep nesting is a ValueError (files are untrusted)
        header = _read_json(json_path, "neuron weights")
    except ValueError:
        if not strict:
            return None
        raise
    if not isinstance(header, dict) or not isinstance(header.get(_OUR_KEY), dict):
        return None
    ours = header[_OUR_KEY]
    if ours.get("format") != FORMAT_NAME:
        raise ValueError(f"{json_path}: unknown format {ours.get('format')!r}")
    version = ours.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{json_path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{json_path}: written with neuron weights format {version}; this vdna reads up to "
                         f"{FORMAT_VERSION}: upgrade vdna")
    return header


def _wrap_errors(path, build):
    try:
        return build()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights file {path}: {exc}") from exc


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


__all__ = ["NeuronWeights", "GRANULARITIES", "is_weights_file"]
