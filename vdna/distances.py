"""Distances between DNAs, neuron by neuron (the mathematics is in the C core).

- ``EMD``: Earth Mover's Distance between per-neuron histograms (unit: bins), for ``histogram-B`` DNAs.
- ``NFD``: neuron-wise Fréchet distance between per-neuron Gaussians, for ``gaussian`` DNAs
  (``layer-gaussian`` DNAs are accepted too: their covariance diagonals are used, as in the reference).
- ``FD``: Fréchet distance between layer Gaussians, for ``layer-gaussian`` DNAs; over all layers it is
  the mean of the per-layer distances.

Selection keywords (reference semantics): ``use_neurons_from_layer`` restricts to one layer,
``use_neuron_index`` (with a layer) to one neuron, ``return_neuron_wise=True`` returns
``{layer: per-neuron distances}`` instead of their mean. ``weights`` replaces the mean by a weighted sum
Σ wₙ dₙ over the selected neurons (paper Eq. 5; for FD: one weight per selected layer). Weights are a
:class:`vdna.NeuronWeights` (checked against the DNAs' extractor and neurons list), a ``{layer: array}``
dict (the shape ``return_neuron_wise=True`` returns; ``{layer: number}`` for FD), or a flat array with one
weight per selected neuron (or layer for FD). With a layer selected, dicts and NeuronWeights give that
layer's weights (not renormalised); layer weights used with EMD or NFD weigh each layer's mean distance.
Every incompatibility raises ValueError (never ``assert``). Results are NumPy unless
``vdna.set_result_type("torch")`` / ``VDNA_RESULTS=torch`` asks for 0.1.1's torch tensors (``vdna.results``).
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._native import _core
from .dna import GAUSSIAN, HISTOGRAM, LAYER_GAUSSIAN, VDNA, check_comparable
from .results import returns_result

# The distance that fits each DNA type: for the DNA as a whole, and neuron by neuron (a layer-Gaussian
# is compared with FD as a whole and with NFD, its covariance diagonal, neuron by neuron).
DNA_METRIC = {HISTOGRAM: "EMD", GAUSSIAN: "NFD", LAYER_GAUSSIAN: "FD"}
NEURON_METRIC = {HISTOGRAM: "EMD", GAUSSIAN: "NFD", LAYER_GAUSSIAN: "NFD"}

Selection = List[Tuple[str, Optional[np.ndarray]]]  # (layer, neuron indices or None for all)
Result = Union[np.float64, Dict[str, np.ndarray]]


@returns_result
def EMD(
    vdna1: VDNA,
    vdna2: VDNA,
    use_neurons_from_layer: Optional[str] = None,
    use_neuron_index: Optional[int] = None,
    return_neuron_wise: bool = False,
    weights=None,
) -> Result:
    """Earth Mover's Distance between the histograms of two DNAs.

    Returns the mean over the selected neurons (a NumPy float64), Σ wₙ·EMDₙ when ``weights`` (one
    non-negative weight per selected neuron) is given, or ``{layer: (C,) EMDs}`` with
    ``return_neuron_wise=True``.
    """
    _check_types("EMD", (vdna1, vdna2), (HISTOGRAM,))
    check_comparable(vdna1, vdna2, "EMD")
    weights = _selected_weights(weights, vdna1, use_neurons_from_layer, use_neuron_index)
    selection = _selection(vdna1, use_neurons_from_layer, use_neuron_index, return_neuron_wise, weights)
    if return_neuron_wise:
        return {layer: _core.emd(vdna1.data[layer], vdna2.data[layer]) for layer, _ in selection}
    return np.float64(_emd_to_many(vdna1, [vdna2], selection, weights)[0])


@returns_result
def NFD(
    vdna1: VDNA,
    vdna2: VDNA,
    use_neurons_from_layer: Optional[str] = None,
    use_neuron_index: Optional[int] = None,
    return_neuron_wise: bool = False,
    weights=None,
) -> Result:
    """Neuron-wise Fréchet distance (μ₁−μ₂)² + v₁ + v₂ − 2√(v₁v₂), averaged (or weighted) over neurons.

    Same keywords and results as ``EMD``.
    """
    _check_types("NFD", (vdna1, vdna2), (GAUSSIAN, LAYER_GAUSSIAN))
    check_comparable(vdna1, vdna2, "NFD", same_type=False)
    weights = _selected_weights(weights, vdna1, use_neurons_from_layer, use_neuron_index)
    selection = _selection(vdna1, use_neurons_from_layer, use_neuron_index, return_neuron_wise, weights)
    per_layer = {layer: _nfd_layer(vdna1, vdna2, layer) for layer, _ in selection}
    if return_neuron_wise:
        return per_layer
    values = np.concatenate([per_layer[l] if idx is None else per_layer[l][idx] for l, idx in selection])
    return _aggregate(values, weights)


@returns_result
def FD(
    vdna1: VDNA,
    vdna2: VDNA,
    use_neurons_from_layer: Optional[str] = None,
    use_neuron_index: Optional[int] = None,
    return_neuron_wise: bool = False,
    weights=None,
) -> Result:
    """Fréchet distance between layer Gaussians.

    All layers: mean of the per-layer FDs (``weights``: one per layer, Σ w_l·FD_l). One layer: its FD.
    One neuron, or ``return_neuron_wise``: the 1-D Fréchet distance of the neurons' marginals
    (reference semantics).

    A layer's FD is computed in float64 from factors of the two covariances (the nuclear norm of
    F1^T F2; docs/design.md, "The Fréchet distance"): within 1e-9 (tr Σ1 + tr Σ2) of the exact
    value for up to 2048 neurons, also for ill-conditioned and singular covariances (fewer images
    than neurons), and never negative (a rounding-level negative result is returned as 0). The
    covariances are assumed symmetric positive semi-definite.
    """
    _check_types("FD", (vdna1, vdna2), (LAYER_GAUSSIAN,))
    check_comparable(vdna1, vdna2, "FD")
    if return_neuron_wise:
        selection = _selection(vdna1, use_neurons_from_layer, use_neuron_index, True, weights)
        return {layer: _nfd_layer(vdna1, vdna2, layer) for layer, _ in selection}
    weights = _selected_weights(weights, vdna1, use_neurons_from_layer, use_neuron_index,
                                unit="neuron" if use_neuron_index is not None else "layer")
    if use_neuron_index is not None:
        selection = _selection(vdna1, use_neurons_from_layer, use_neuron_index, False, weights)
        layer, idx = selection[0]
        return _aggregate(_nfd_layer(vdna1, vdna2, layer)[idx], weights)
    if use_neurons_from_layer is not None:
        vdna1.check_layer(use_neurons_from_layer)
        layers = [use_neurons_from_layer]
    else:
        layers = list(vdna1.neurons_list)
    w = _check_weights(weights, len(layers), "layer")
    values = np.array([_fd_layer(vdna1, vdna2, layer) for layer in layers], dtype=np.float64)
    return _aggregate(values, w)


def distances_to(
    reference: VDNA,
    candidates: Sequence[VDNA],
    use_neurons_from_layer: Optional[str] = None,
    use_neuron_index: Optional[int] = None,
    weights=None,
    metric: Optional[str] = None,
) -> np.ndarray:
    """Distances from ``reference`` to each of K ``candidates``: a float64 array of shape (K,).

    ``metric`` is "EMD", "NFD" or "FD"; by default EMD for histograms, NFD for gaussian and FD for
    layer-gaussian DNAs. Histogram distances are computed by the core in one multi-threaded call.
    """
    if not isinstance(reference, VDNA):
        raise TypeError(f"distances_to: reference must be a VDNA, got {type(reference).__name__}")
    if isinstance(candidates, VDNA):
        raise TypeError("distances_to: candidates must be a sequence of VDNAs (wrap a single one in a list)")
    candidates = list(candidates)
    if metric is None:
        metric = metric_name(reference)
    kwargs = dict(use_neurons_from_layer=use_neurons_from_layer, use_neuron_index=use_neuron_index, weights=weights)
    if metric == "EMD":
        _check_types("EMD", [reference, *candidates], (HISTOGRAM,))
        for i, c in enumerate(candidates):
            check_comparable(reference, c, f"distances_to (candidate {i})")
        weights = _selected_weights(weights, reference, use_neurons_from_layer, use_neuron_index)
        selection = _selection(reference, use_neurons_from_layer, use_neuron_index, False, weights)
        return _emd_to_many(reference, candidates, selection, weights)
    if metric not in ("NFD", "FD"):
        raise ValueError(f"distances_to: unknown metric '{metric}'; use 'EMD', 'NFD' or 'FD'")
    return np.array([metric_function(metric)(reference, c, **kwargs) for c in candidates], dtype=np.float64)


def metric_name(vdna: VDNA, neuron_wise: bool = False) -> str:
    """"EMD", "NFD" or "FD": the distance that fits a DNA of this type (``neuron_wise``: neuron by
    neuron). Activation-range DNAs cannot be compared (ValueError)."""
    table = NEURON_METRIC if neuron_wise else DNA_METRIC
    if vdna.type not in table:
        raise ValueError(
            f"a DNA of type '{vdna.type}' cannot be compared; make a 'histogram-B', 'gaussian' or "
            "'layer-gaussian' DNA instead"
        )
    return table[vdna.type]


def metric_function(name: str):
    """The distance function named ``name`` ("EMD", "NFD", "FD"), returning NumPy values whatever
    ``vdna.set_result_type`` says (the implementation under the public function's conversion)."""
    functions = {"EMD": EMD, "NFD": NFD, "FD": FD}
    if name not in functions:
        raise ValueError(f"unknown metric {name!r}; use 'EMD', 'NFD' or 'FD'")
    return functions[name].__wrapped__


# ---------------------------------------------------------------------------------------- helpers
def _check_types(what: str, vdnas, allowed) -> None:
    for i, v in enumerate(vdnas):
        if not isinstance(v, VDNA):
            raise TypeError(f"{what}: argument {i + 1} must be a VDNA, got {type(v).__name__}")
        if v.type not in allowed:
            names = " or ".join(f"'{a}'" for a in allowed)
            raise ValueError(f"{what} needs {names} DNAs; argument {i + 1} is a '{v.type}' DNA ({v.name})")


def _selection(vdna: VDNA, layer, index, neuron_wise: bool, weights) -> Selection:
    """The selected (layer, indices) pairs, validating the selection keywords."""
    if index is not None and layer is None:
        raise ValueError("use_neuron_index needs use_neurons_from_layer (the layer the index refers to)")
    if neuron_wise and index is not None:
        raise ValueError("return_neuron_wise cannot be combined with use_neuron_index (a single neuron)")
    if neuron_wise and weights is not None:
        raise ValueError("weights apply to the aggregated distance; they cannot be used with return_neuron_wise")
    if layer is not None:
        vdna.check_layer(layer)
        if index is not None:
            return [(layer, np.array([vdna.check_neuron(layer, index)], dtype=np.int64))]
        return [(layer, None)]
    return [(l, None) for l in vdna.neurons_list]


def _selected_weights(weights, vdna: VDNA, layer, index, unit: str = "neuron"):
    """``weights`` as the flat array of the selection (one per selected neuron, or per selected layer for
    ``unit="layer"``). NeuronWeights and {layer: values} dicts are checked against ``vdna`` and cut to
    the selection; flat arrays are returned as they are (checked later against the selection's size)."""
    from collections.abc import Mapping

    from .neuron_weights import NeuronWeights

    if weights is None or not isinstance(weights, (NeuronWeights, Mapping)):
        return weights
    if index is not None and layer is None:
        raise ValueError("use_neuron_index needs use_neurons_from_layer (the layer the index refers to)")
    layers = [layer] if layer is not None else list(vdna.neurons_list)
    for l in layers:
        vdna.check_layer(l)
    if isinstance(weights, NeuronWeights):
        weights.check_compatible(vdna)
        if unit == "layer":
            if weights.granularity != "layer":
                raise ValueError("FD between layer Gaussians weighs layers: use weights with one value per layer "
                                 "(NeuronWeights granularity='layer'), or NFD for neuron weights")
            return np.array([weights.layer(l)[0] for l in layers])
        if weights.granularity == "layer":  # a layer's weight spread evenly over its neurons
            per_layer = {l: np.full(int(vdna.neurons_list[l]), weights.layer(l)[0] / int(vdna.neurons_list[l]))
                         for l in layers}
        else:
            per_layer = {l: weights.layer(l) for l in layers}
    else:
        unknown = [str(l) for l in weights if l not in vdna.neurons_list]
        if unknown:
            raise ValueError(f"weights name layer(s) {unknown} that the DNA does not have; its layers are "
                             f"{list(vdna.neurons_list)}")
        missing = [l for l in layers if l not in weights]
        if missing:
            raise ValueError(f"weights have no values for layer(s) {missing}")
        per_layer = {}
        for l in layers:
            w = np.asarray(weights[l])
            if w.dtype.kind not in "iuf":
                raise TypeError(f"weights of layer '{l}' must be numbers, got dtype {w.dtype}")
            expected = (1,) if unit == "layer" else (int(vdna.neurons_list[l]),)
            if w.reshape(-1).shape != expected or (unit == "neuron" and w.ndim != 1):
                what = "one weight (FD weighs layers)" if unit == "layer" else f"{expected[0]} weights, one per neuron"
                raise ValueError(f"weights of layer '{l}' must be {what}; got shape {w.shape}")
            per_layer[l] = w.reshape(-1)
        if unit == "layer":
            return np.concatenate([per_layer[l] for l in layers])
    if index is not None:
        return per_layer[layer][[vdna.check_neuron(layer, index)]]
    return np.concatenate([per_layer[l] for l in layers])


def _selected_count(vdna: VDNA, selection: Selection) -> int:
    return sum(int(vdna.neurons_list[l]) if idx is None else len(idx) for l, idx in selection)


def _check_weights(weights, n: int, unit: str = "neuron") -> Optional[np.ndarray]:
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.dtype.kind not in "iuf":
        raise TypeError(f"weights must be numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.ndim == 0:
        w = w.reshape(1)
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(f"weights must have one entry per selected {unit} ({n}), got shape {np.shape(weights)}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise ValueError(f"weights must be finite and >= 0; weights[{int(bad[0])}] = {w[bad[0]]}")
    return w


def _aggregate(values: np.ndarray, weights) -> np.float64:
    w = _check_weights(weights, values.shape[0])
    if w is None:
        return np.float64(np.mean(values))
    return np.float64(np.dot(w, values))


def _emd_to_many(reference: VDNA, candidates: List[VDNA], selection: Selection, weights) -> np.ndarray:
    total = _selected_count(reference, selection)
    w = _check_weights(weights, total)
    out = np.zeros(len(candidates), dtype=np.float64)
    if not candidates:
        return out
    start = 0
    for layer, idx in selection:
        n = int(reference.neurons_list[layer]) if idx is None else len(idx)
        cands = [c.data[layer] for c in candidates]
        if w is None:
            # mean over the selection = Σ_layers (n_l / N) · mean_l
            out += (n / total) * _core.emd_many(reference.data[layer], cands, index=idx)
        else:
            out += _core.emd_many(reference.data[layer], cands, index=idx, weights=w[start:start + n])
        start += n
    return out


def _marginals(vdna: VDNA, layer: str) -> Tuple[np.ndarray, np.ndarray]:
    d = vdna.data[layer]
    if vdna.type == LAYER_GAUSSIAN:
        return d["mu"], np.ascontiguousarray(np.diagonal(d["sigma"]))
    return d["mu"], d["var"]


def _nfd_layer(vdna1: VDNA, vdna2: VDNA, layer: str) -> np.ndarray:
    mu1, var1 = _marginals(vdna1, layer)
    mu2, var2 = _marginals(vdna2, layer)
    return _core.nfd(mu1, var1, mu2, var2)


def _fd_layer(vdna1: VDNA, vdna2: VDNA, layer: str) -> float:
    a, b = vdna1.data[layer], vdna2.data[layer]
    return float(_core.fd(a["mu"], a["sigma"], b["mu"], b["sigma"]))
