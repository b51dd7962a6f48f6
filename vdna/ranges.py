"""Per-neuron activation ranges: the (min, max) pairs that fix where histogram bins lie.

Two DNAs are only comparable when their histograms were binned with the same ranges, so ranges are
parsed, validated and fingerprinted in one place. Accepted inputs (see ``ActivationRanges.from_any``):

- ``{layer: (mins, maxs)}`` with 1-D array-likes;
- the reference JSON format ``{"mins_per_neuron": {layer: {"0": v, ...}}, "maxs_per_neuron": {...}}``,
  as a dict or as a path to a ``.json`` file;
- an ``activation-ranges`` VDNA;
- an ``ActivationRanges``.
"""
import hashlib
import json
import os
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

_REF_MINS = "mins_per_neuron"
_REF_MAXS = "maxs_per_neuron"


class ActivationRanges:
    """Validated per-layer ``mins`` and ``maxs`` (float64, shape (C,)), in layer order.

    Every value is finite and ``min <= max``; a violation raises ``ValueError`` naming the layer and
    the neuron index.
    """

    def __init__(self, mins: Mapping[str, object], maxs: Mapping[str, object]):
        if list(mins) != list(maxs):
            raise ValueError(
                "activation ranges: mins and maxs must have the same layers in the same order, got "
                f"{list(mins)} and {list(maxs)}"
            )
        self.mins: Dict[str, np.ndarray] = {}
        self.maxs: Dict[str, np.ndarray] = {}
        for layer in mins:
            lo = _as_vector(mins[layer], layer, "mins")
            hi = _as_vector(maxs[layer], layer, "maxs")
            if lo.shape != hi.shape:
                raise ValueError(
                    f"activation ranges for layer '{layer}': {lo.shape[0]} mins but {hi.shape[0]} maxs"
                )
            _check_values(layer, lo, hi)
            self.mins[str(layer)] = lo
            self.maxs[str(layer)] = hi

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_any(cls, ranges, neurons_list: Optional[Mapping[str, int]] = None) -> "ActivationRanges":
        """Parse any accepted form (see the module docstring).

        With ``neurons_list``, the result holds exactly its layers, in its order (extra layers in the
        input are dropped) and every layer's length is checked against it.
        """
        if isinstance(ranges, ActivationRanges):
            parsed = ranges
        elif isinstance(ranges, (str, os.PathLike)):
            parsed = cls.from_json_file(ranges)
        elif getattr(ranges, "type", None) == "activation-ranges" and hasattr(ranges, "data"):
            parsed = cls({l: d["min"] for l, d in ranges.data.items()}, {l: d["max"] for l, d in ranges.data.items()})
        elif hasattr(ranges, "neurons_list") and hasattr(ranges, "type"):
            raise ValueError(
                f"activation ranges: got a '{ranges.type}' DNA; ranges come from an 'activation-ranges' DNA"
            )
        elif isinstance(ranges, Mapping):
            if _REF_MINS in ranges or _REF_MAXS in ranges:
                parsed = cls.from_reference_json(ranges)
            else:
                mins, maxs = {}, {}
                for layer, pair in ranges.items():
                    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                        raise ValueError(
                            f"activation ranges for layer '{layer}' must be a (mins, maxs) pair, "
                            f"got {type(pair).__name__}"
                        )
                    mins[layer], maxs[layer] = pair
                parsed = cls(mins, maxs)
        else:
            raise TypeError(
                "activation ranges must be an ActivationRanges, a {layer: (mins, maxs)} dict, the reference "
                "JSON format (dict or path to a .json file) or an activation-ranges VDNA; got "
                + type(ranges).__name__
            )
        if neurons_list is not None:
            parsed = parsed.select(neurons_list)
        return parsed

    @classmethod
    def from_reference_json(cls, obj: Mapping, source: str = "activation ranges") -> "ActivationRanges":
        """Parse ``{"mins_per_neuron": {layer: {"0": v, ...}}, "maxs_per_neuron": {...}}``."""
        for key in (_REF_MINS, _REF_MAXS):
            if key not in obj or not isinstance(obj[key], Mapping):
                raise ValueError(f"{source}: missing or malformed '{key}' (expected {{layer: {{'0': value, ...}}}})")
        mins = {layer: _indexed_values(v, layer, source) for layer, v in obj[_REF_MINS].items()}
        maxs = {layer: _indexed_values(v, layer, source) for layer, v in obj[_REF_MAXS].items()}
        if set(mins) != set(maxs):
            raise ValueError(f"{source}: layers of mins and maxs differ: {sorted(set(mins) ^ set(maxs))}")
        return cls(mins, {layer: maxs[layer] for layer in mins})

    @classmethod
    def from_json_file(cls, path) -> "ActivationRanges":
        """Read the reference JSON format from a file."""
        path = os.fspath(path)
        try:
            with open(path, "r", encoding="utf-8") as f:
                obj = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"activation ranges file {path!r} is not valid JSON: {exc}") from exc
        if not isinstance(obj, Mapping):
            raise ValueError(f"activation ranges file {path!r}: expected a JSON object")
        return cls.from_reference_json(obj, source=f"activation ranges file {path!r}")

    # ------------------------------------------------------------------ use
    @property
    def layers(self):
        return list(self.mins)

    @property
    def neurons_list(self) -> Dict[str, int]:
        return {layer: int(v.shape[0]) for layer, v in self.mins.items()}

    def __getitem__(self, layer: str) -> Tuple[np.ndarray, np.ndarray]:
        if layer not in self.mins:
            raise KeyError(f"no activation ranges for layer '{layer}'; layers: {self.layers}")
        return self.mins[layer], self.maxs[layer]

    def __contains__(self, layer) -> bool:
        return layer in self.mins

    def __repr__(self) -> str:
        n = sum(v.shape[0] for v in self.mins.values())
        return f"ActivationRanges({len(self.mins)} layers, {n} neurons)"

    def select(self, neurons_list: Mapping[str, int]) -> "ActivationRanges":
        """The ranges of exactly the layers of ``neurons_list``, lengths checked."""
        mins, maxs = {}, {}
        for layer, count in neurons_list.items():
            if layer not in self.mins:
                raise ValueError(f"activation ranges have no layer '{layer}'; they cover {self.layers}")
            if self.mins[layer].shape[0] != int(count):
                raise ValueError(
                    f"activation ranges for layer '{layer}' have {self.mins[layer].shape[0]} neurons, "
                    f"the layer has {int(count)}"
                )
            mins[layer], maxs[layer] = self.mins[layer], self.maxs[layer]
        out = ActivationRanges.__new__(ActivationRanges)
        out.mins, out.maxs = mins, maxs
        return out

    def to_reference_json(self) -> dict:
        """The reference JSON format (``json.dump`` it to make a file the reference package reads)."""
        return {
            _REF_MINS: {layer: {str(i): float(v) for i, v in enumerate(a)} for layer, a in self.mins.items()},
            _REF_MAXS: {layer: {str(i): float(v) for i, v in enumerate(a)} for layer, a in self.maxs.items()},
        }

    def checksum(self) -> str:
        """sha256 over layer names, lengths and float64 values: equal iff the binning is equal."""
        h = hashlib.sha256()
        for layer in self.mins:
            h.update(layer.encode("utf-8") + b"\0")
            h.update(str(self.mins[layer].shape[0]).encode() + b"\0")
            h.update(np.ascontiguousarray(self.mins[layer], dtype="<f8").tobytes())
            h.update(np.ascontiguousarray(self.maxs[layer], dtype="<f8").tobytes())
        return h.hexdigest()


def _as_vector(values, layer, what) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception as exc:
        raise ValueError(f"activation ranges for layer '{layer}': {what} is not array-like ({exc})") from exc
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"activation ranges for layer '{layer}': {what} must be numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"activation ranges for layer '{layer}': {what} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"activation ranges for layer '{layer}': {what} is empty")
    return np.array(arr, dtype=np.float64)  # own copy: later edits by the caller cannot change the binning


def _check_values(layer, lo, hi):
    for name, arr in (("min", lo), ("max", hi)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"activation ranges for layer '{layer}', neuron {i}: {name} is {arr[i]} (must be finite)")
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"activation ranges for layer '{layer}', neuron {i}: min {lo[i]} > max {hi[i]}")


def _indexed_values(per_neuron, layer, source) -> np.ndarray:
    """{"0": v, "1": v, ...} -> array; the keys must be exactly 0..C-1."""
    if not isinstance(per_neuron, Mapping):
        raise ValueError(f"{source}: layer '{layer}' must map neuron indices to values")
    try:
        items = sorted((int(k), v) for k, v in per_neuron.items())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: layer '{layer}' has a neuron key that is not an integer") from exc
    for expected, (got, _) in enumerate(items):
        if got != expected:
            raise ValueError(f"{source}: layer '{layer}' is missing neuron {expected}")
    values = []
    for i, v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{source}: layer '{layer}', neuron {i}: value {v!r} is not a number")
        values.append(float(v))
    return np.asarray(values, dtype=np.float64)
