"""An ``Accumulator``'s state as a value: ``state_dict`` / ``load_state_dict`` and their checks.

A state is a dict of plain values (str, int, nested dicts) and arrays, versioned, complete (counts,
per-neuron NaN counts for every kind, moments, covariance sums, ranges, ``num_images``, the settings
that decide whether two states may be merged). Arrays are NumPy arrays, or torch tensors with
``as_tensors=True`` (then ``torch.load(..., weights_only=True)`` reads a ``torch.save``d state with no
extra allowed globals). Loading accepts either and checks every field (a state is untrusted input):
a bad one raises ``ValueError`` naming the field, layer, shape or dtype.

Per layer (``state["layers"][layer]``):

- histogram: ``counts`` (C, B) int64, ``nan_counts`` (C,) int64, ``range_mins``/``range_maxs`` (C,)
  float64 (the activation ranges that fixed the bins);
- gaussian / layer-gaussian: ``count`` (images), ``mean`` (C,) float64, ``m2`` (C,) or (C, C)
  float64 (sum of squared deviations / of outer products of deviations), ``nan_counts``;
- activation-ranges: ``mins``/``maxs`` (C,) float64 (NaN for a neuron with no value), ``nan_counts``.
"""
import json
from typing import Dict, Mapping

import numpy as np

from .dna import GAUSSIAN, HISTOGRAM, LAYER_GAUSSIAN

STATE_FORMAT = "vdna.Accumulator"
STATE_VERSION = 1

_TOP_KEYS = ("format", "version", "distribution_name", "feature_extractor_name", "neurons_list", "layouts",
             "num_images", "meta_json", "data_settings_json", "extraction_settings_json", "layers")


def layer_state(kind: str, acc) -> Dict[str, object]:
    """The state of one C-core layer accumulator (fresh NumPy arrays)."""
    nans = np.asarray(acc.nan_counts, dtype=np.int64)
    if kind == HISTOGRAM:
        return {"counts": np.asarray(acc.counts, dtype=np.int64), "nan_counts": nans,
                "range_mins": np.asarray(acc.mins, dtype=np.float64),
                "range_maxs": np.asarray(acc.maxs, dtype=np.float64)}
    if kind in (GAUSSIAN, LAYER_GAUSSIAN):
        count, mean, m2 = acc.state()
        return {"count": int(count), "mean": np.asarray(mean, dtype=np.float64),
                "m2": np.asarray(m2, dtype=np.float64), "nan_counts": nans}
    if acc.num_images == 0:
        c = int(acc.n_neurons)
        mins, maxs = np.full(c, np.nan), np.full(c, np.nan)
    else:
        mins, maxs = acc.mins, acc.maxs
    return {"mins": np.asarray(mins, dtype=np.float64), "maxs": np.asarray(maxs, dtype=np.float64), "nan_counts": nans}


def set_layer_state(kind: str, acc, layer: str, entry: Mapping, num_images: int, n_neurons: int, bins: int) -> None:
    """Give a FRESH (empty) layer accumulator the state ``entry`` (checked here; the core checks values)."""
    where = f"accumulator state, layer '{layer}'"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
    c = int(n_neurons)
    nans = state_array(entry, "nan_counts", (c,), "i", where)
    try:
        if kind == HISTOGRAM:
            counts = state_array(entry, "counts", (c, int(bins)), "i", where)
            acc.add_counts(counts, nans, int(num_images))  # onto zeros: the accumulator is fresh
        elif kind in (GAUSSIAN, LAYER_GAUSSIAN):
            count = state_int(entry, "count", where)
            if count != num_images:
                raise ValueError(f"{where}: count {count} differs from the state's num_images {num_images}")
            shape = (c,) if kind == GAUSSIAN else (c, c)
            acc.set_state(count, state_array(entry, "mean", (c,), "f", where),
                          state_array(entry, "m2", shape, "f", where), nan_counts=nans)
        else:
            acc.set_state(int(num_images), state_array(entry, "mins", (c,), "f", where),
                          state_array(entry, "maxs", (c,), "f", where), nan_counts=nans)
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: {exc}") from exc


def check_header(state, expected: Mapping[str, object]) -> None:
    """Check a state's format, version and that its settings equal ``expected`` (name the difference)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"accumulator state must be a dict, got {type(state).__name__}")
    missing = [k for k in _TOP_KEYS if k not in state]
    if missing:
        raise ValueError(f"accumulator state lacks the field(s) {missing}")
    if state["format"] != STATE_FORMAT:
        raise ValueError(f"accumulator state: format is {state['format']!r}, expected {STATE_FORMAT!r}")
    version = state_int(state, "version", "accumulator state")
    if version > STATE_VERSION or version < 1:
        raise ValueError(
            f"accumulator state version {version} is not supported (this vdna reads versions 1..{STATE_VERSION}; "
            "upgrade vdna to read newer states)"
        )
    for key, value in expected.items():
        got = state[key]
        if isinstance(value, dict):
            got = dict(got) if isinstance(got, Mapping) else got
            if isinstance(got, dict):
                got = {k: (int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else v)
                       for k, v in got.items()}
        if got != value:
            raise ValueError(f"accumulator state: {key} is {got!r}, this accumulator has {value!r}")


def state_int(mapping: Mapping, key: str, where: str) -> int:
    if key not in mapping:
        raise ValueError(f"{where}: missing '{key}'")
    value = mapping[key]
    if type(value).__module__.startswith("torch") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a 0-d tensor
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}: '{key}' must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{where}: '{key}' must be >= 0, got {value}")
    return int(value)


def state_json(state: Mapping, key: str):
    text = state[key]
    if not isinstance(text, str):
        raise ValueError(f"accumulator state: '{key}' must be a JSON string, got {type(text).__name__}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"accumulator state: '{key}' is not valid JSON ({exc})") from exc


def state_array(mapping: Mapping, key: str, shape, kind: str, where: str) -> np.ndarray:
    """``mapping[key]`` as a C-contiguous int64 (kind "i") or float64 (kind "f") array of ``shape``."""
    if key not in mapping:
        raise ValueError(f"{where}: missing '{key}'")
    value = mapping[key]
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{where}: '{key}' must be an array, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{where}: '{key}' has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if kind == "i":
        if value.dtype.kind not in "iu":
            raise ValueError(f"{where}: '{key}' must hold integers, got dtype {value.dtype}")
        if value.dtype.kind == "u" and value.size and int(value.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{where}: '{key}' holds values beyond int64")
        return np.ascontiguousarray(value, dtype=np.int64)
    if value.dtype.kind != "f":
        raise ValueError(f"{where}: '{key}' must hold floating-point values, got dtype {value.dtype}")
    return np.ascontiguousarray(value, dtype=np.float64)


def to_tensors(obj):
    """The same nested state with every NumPy array turned into a torch tensor (a copy)."""
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, dict):
        return {k: to_tensors(v) for k, v in obj.items()}
    return obj


__all__ = ["STATE_FORMAT", "STATE_VERSION", "layer_state", "set_layer_state", "check_header", "state_array",
           "state_int", "state_json", "to_tensors"]
