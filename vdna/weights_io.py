"""Reading neuron weights (``weights=`` of the distances and rankings) from a file.

Formats: ``.npy`` (one weight per selected neuron, in network order; for FD one per layer),
``.npz`` or ``.json`` (``{layer: weights}``, or for FD ``{layer: weight}``; a JSON list is read like
an ``.npy``). Files are untrusted: nothing is unpickled, the .npz is read through ``vdna.files.read_npz``
(declared sizes checked before reading), and every problem is a ValueError naming the file.
"""
import json
import os

import numpy as np

__all__ = ["read_neuron_weights", "read_weights_file"]

MAX_JSON_BYTES = 64 << 20  # a weights file holds one number per neuron: megabytes at most


def read_weights_file(path: str):
    """The contents of a plain weights file (not a NeuronWeights pair): a float64 array as stored
    (``.npy``, or a JSON list) or ``{layer: float64 array}`` (``.npz``, or a JSON object whose values
    are numbers or lists of numbers). The one reader of these formats (``read_neuron_weights`` and
    ``NeuronWeights.from_file`` interpret what it returns). FileNotFoundError for a missing file;
    ValueError, naming the file, for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    lower = path.lower()
    if lower.endswith(".npy"):
        return _as_array(_read_npy(path), path)
    if lower.endswith(".npz"):
        from .files import read_npz

        return {str(k): _as_array(v, path, f" (layer '{k}')") for k, v in read_npz(path).items()}
    if lower.endswith(".json"):
        obj = _read_json(path)
        if isinstance(obj, list):
            return _as_array(obj, path)
        if not isinstance(obj, dict):
            raise ValueError(f"weights file {path}: expected {{layer: [weights]}} or a list, got {type(obj).__name__}")
        return {str(k): _json_numbers(v, path, k) for k, v in obj.items()}
    raise ValueError(f"weights file {path}: use a neuron weights pair (W.json + W.npz, from `vdna weights learn` or "
                     "NeuronWeights.save), .npy (one weight per neuron, network order), .npz or .json "
                     "({layer: [weights]})")


def read_neuron_weights(path: str, vdna, layer=None, metric: str = "EMD"):
    """Weights for the distance between DNAs shaped like ``vdna``: a ``vdna.NeuronWeights`` for a file
    it wrote (checked against ``vdna``'s extractor and neurons), else the flat float64 array the
    distance functions take: the layers of ``vdna.neurons_list`` in order (only ``layer`` if given).

    ``metric`` is the distance the weights are for (kept for callers; the layout is the same).
    Raises FileNotFoundError for a missing file and ValueError, naming the file, for anything else.
    """
    from .neuron_weights import NeuronWeights, is_weights_file

    path = os.fspath(path)
    if is_weights_file(path):  # written by NeuronWeights.save / `vdna weights learn`: checked against the DNA
        return NeuronWeights.from_file(path, like=vdna)
    raw = read_weights_file(path)
    if isinstance(raw, np.ndarray):
        return raw.reshape(-1)
    layers = [layer] if layer is not None else list(vdna.neurons_list)
    missing = [l for l in layers if l not in raw]
    if missing:
        raise ValueError(f"weights file {path} has no weights for layer(s) {missing}")
    return np.concatenate([raw[l].reshape(-1) for l in layers])


def _read_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:  # numpy parses the header with ast
        raise ValueError(f"weights file {path}: not a readable .npy array ({' '.join(str(exc).split())[:200]})") \
            from None


def _read_json(path: str):
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"weights file {path}: {size} bytes is too large (at most {MAX_JSON_BYTES >> 20} MiB)")
        raw = f.read(size + 1)
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"weights file {path}: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"weights file {path}: not valid JSON ({exc})") from None


def _json_numbers(value, path: str, key) -> np.ndarray:
    """A JSON layer entry: a number or a flat list of numbers (booleans are not numbers here)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or
                                       (isinstance(value, list) and all(isinstance(x, (int, float)) and
                                                                        not isinstance(x, bool) for x in value))):
        raise ValueError(f"weights file {path} (layer '{key}'): weights must be numbers (a number or a flat list "
                         "of numbers)")
    return _as_array(value, path, f" (layer '{key}')")


def _as_array(value, path: str, where: str = "") -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"weights file {path}{where}: weights must be numbers") from None
