"""Customised comparisons (paper Sec. 5.3-5.4): which neurons see an attribute, and weights that make a
distance ignore it.

A *pair* is ``(dna_with, dna_without)``: DNAs of two image sets that differ by one attribute (images
with and without hats, real and generated images, ...). Its *unit distances* dₙ are the per-neuron
distances (EMD for histograms, NFD for Gaussians and layer Gaussians) or, with
``granularity="layer"``, the per-layer distances (FD for layer Gaussians; the mean over the layer's
neurons for EMD and NFD).

- :func:`sensitivity`: the mean of dₙ over pairs of one attribute; with ``baseline=`` pairs (two
  samples of one population), a signal-to-noise ratio
  ``snr_n = s_n / (b_n + 0.01 * mean_layer(b))``, where s_n is the neuron's mean distance over the
  attribute pairs and b_n over the baseline pairs; the floor (1% of the mean baseline distance of the
  neuron's layer) keeps neurons that barely vary (dead ones: s = b = 0) from dividing by zero.
- :func:`sensitivity_deviation`: Δ = 1 − D_W / D_avg for any pair (Eq. 6), with D_W = Σₙ wₙ dₙ and
  D_avg = mean dₙ (the distance of uniform weights 1/N, so that uniform weights give Δ = 0).
- :func:`learn_weights`: weights minimising |1 − Δ_a| + mean_b |Δ_b| (Eq. 7; averaged over the ``ignore``
  pairs of attribute a, mean over the ``keep`` pairs b), exactly, as a linear program.
- :func:`evaluate_weights`: removal (mean Δ over ``ignore``) and deviation (mean |Δ| over ``keep``), to be
  measured on pairs of held-out images.
- :func:`choose_learning_settings`: ``regularization`` and ``max_weight`` for :func:`learn_weights` by
  cross-validation over independent sets of pairs.
- :func:`attribute_dnas`: the with/without DNAs of many attributes from one forward pass per image.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .dna import VDNA, check_comparable
from .neuron_weights import GRANULARITIES, NeuronWeights

SNR_FLOOR = 0.01  # the baseline floor, as a fraction of the layer's mean baseline distance
SOLVERS = ("lp", "adam")
DEFAULT_REGULARIZATION = 0.1
DEFAULT_MAX_WEIGHT = 4.0

Pair = Tuple[VDNA, VDNA]


# ---------------------------------------------------------------------------------------- pairs
class PairDistances:
    """The unit distances of one ``(dna_with, dna_without)`` pair, computed once and small (no histograms).

    Accepted wherever a pair of DNAs is: make them when many pairs must be held at once (large
    extractors, many attributes) and drop the DNAs. ``granularities``: which unit distances to compute
    ("neuron": EMD or NFD per neuron; "layer": per layer, FD for layer Gaussians, which costs one
    matrix square root per layer). ``layer_distances``: ``{layer: value}`` for some or all layers, layer
    distances computed elsewhere by the same definition (e.g. FD from the samples themselves,
    :func:`vdna.frechet.fd_of_samples`, which :func:`attribute_dnas` uses), taken instead of computing
    them; the other layers are computed.
    """

    def __init__(self, dna_with: VDNA, dna_without: VDNA, granularities: Sequence[str] = GRANULARITIES, *,
                 layer_distances: Optional[Mapping] = None):
        from .distances import metric_function
        from .dna import HISTOGRAM, META_RANGES_SHA256

        for j, v in enumerate((dna_with, dna_without)):
            if not isinstance(v, VDNA):
                raise TypeError(f"a pair holds two VDNAs; element {j} is a {type(v).__name__}")
        if dna_with.type != dna_without.type:
            raise ValueError(f"a pair holds two DNAs of one type, got '{dna_with.type}' and '{dna_without.type}'")
        check_comparable(dna_with, dna_without, "pair")
        granularities = tuple(granularities)
        if not granularities or any(g not in GRANULARITIES for g in granularities):
            raise ValueError(f"granularities must be a non-empty subset of {GRANULARITIES}, got {granularities!r}")
        self.type = dna_with.type
        self.hist_nb_bins = getattr(dna_with, "hist_nb_bins", None)
        self.feature_extractor_name = dna_with.feature_extractor_name
        self.neurons_list = {l: int(c) for l, c in dna_with.neurons_list.items()}
        self.ranges_sha256 = dna_with.meta.get(META_RANGES_SHA256) if self.type == HISTOGRAM else None
        self.metrics = {g: _unit_metric(dna_with, g) for g in granularities}
        self._d = {}
        for g in granularities:
            fn = metric_function(self.metrics[g])
            if g == "neuron":
                d = {l: np.asarray(x, dtype=np.float64).reshape(-1)
                     for l, x in fn(dna_with, dna_without, return_neuron_wise=True).items()}
            else:
                given = dict(layer_distances or {})
                unknown = [l for l in given if l not in self.neurons_list]
                if unknown:
                    raise ValueError(f"layer_distances: unknown layer(s) {unknown}; the DNAs' layers are "
                                     f"{list(self.neurons_list)}")
                for l, v in given.items():
                    if not (np.isfinite(float(v)) and float(v) >= 0):
                        raise ValueError(f"layer_distances of layer '{l}' is {v}; distances are finite and >= 0")
                d = {l: np.array([float(given[l]) if l in given else
                                  float(fn(dna_with, dna_without, use_neurons_from_layer=l))])
                     for l in self.neurons_list}
            for x in d.values():
                x.setflags(write=False)
            self._d[g] = d

    @classmethod
    def from_distances(cls, distances: Mapping, feature_extractor_name: str, dna_type: str = "histogram",
                       hist_nb_bins: Optional[int] = None) -> "PairDistances":
        """Per-neuron distances computed elsewhere (``{layer: (C,) array}``, EMD for histograms, NFD for
        Gaussians): for pairs whose DNAs are not at hand, and for benchmarks of learning at scale."""
        from .distances import NEURON_METRIC

        if dna_type not in NEURON_METRIC:
            raise ValueError(f"dna_type must be one of {sorted(NEURON_METRIC)}, got {dna_type!r}")
        if not isinstance(distances, Mapping) or not distances:
            raise ValueError("distances must be a non-empty mapping {layer: (C,) array}")
        self = cls.__new__(cls)
        self.type, self.hist_nb_bins, self.ranges_sha256 = dna_type, hist_nb_bins, None
        self.feature_extractor_name = str(feature_extractor_name)
        d = {}
        for layer, x in distances.items():
            x = np.array(x, dtype=np.float64)
            if x.ndim != 1 or x.size == 0:
                raise ValueError(f"layer '{layer}': expected a 1-D array of per-neuron distances, got shape {x.shape}")
            if not np.all(np.isfinite(x)) or np.any(x < 0):
                raise ValueError(f"layer '{layer}': distances must be finite and >= 0")
            x.setflags(write=False)
            d[str(layer)] = x
        self.neurons_list = {l: int(x.shape[0]) for l, x in d.items()}
        self.metrics = {"neuron": NEURON_METRIC[dna_type]}
        self._d = {"neuron": d}
        return self

    def distances(self, granularity: str = "neuron") -> Dict[str, np.ndarray]:
        """``{layer: distances}``: (C,) per neuron, or (1,) per layer."""
        if granularity not in self._d:
            raise ValueError(f"these pair distances were made without granularity '{granularity}'; make them "
                             f"with PairDistances(a, b, granularities=('neuron', 'layer'))")
        return self._d[granularity]

    def flat(self, granularity: str = "neuron") -> np.ndarray:
        """The distances in network order, as one array."""
        return _flat(self.distances(granularity))

    def check_comparable(self, other: "PairDistances", what: str) -> None:
        """ValueError unless ``other`` compares the same neurons the same way."""
        if other.type != self.type:
            raise ValueError(f"{what} compares '{other.type}' DNAs but the others are '{self.type}': all DNAs of a "
                             "comparison must be of one type")
        if other.feature_extractor_name != self.feature_extractor_name:
            raise ValueError(f"{what} comes from extractor '{other.feature_extractor_name}', the others from "
                             f"'{self.feature_extractor_name}'")
        if other.hist_nb_bins != self.hist_nb_bins:
            raise ValueError(f"{what} has {other.hist_nb_bins} bins, the others {self.hist_nb_bins}")
        if other.neurons_list != self.neurons_list:
            raise ValueError(f"{what} has another neurons list than the others")
        if self.ranges_sha256 and other.ranges_sha256 and self.ranges_sha256 != other.ranges_sha256:
            raise ValueError(f"{what} was binned with other activation ranges than the others")

    def __repr__(self) -> str:
        return (f"PairDistances({self.type}, extractor='{self.feature_extractor_name}', "
                f"{sum(self.neurons_list.values())} neurons, {'/'.join(self.metrics.values())})")


def check_pairs(pairs, what: str = "pairs", allow_empty: bool = False, like: Optional[PairDistances] = None,
                granularity: str = "neuron") -> List[PairDistances]:
    """``pairs`` (one ``(a, b)`` tuple, a PairDistances, or a list of them) as a list of PairDistances,
    checked: every element a pair of DNAs, all of one type (and bin count), extractor, neurons list and
    activation ranges (as ``like`` if given)."""
    if isinstance(pairs, PairDistances) or (isinstance(pairs, tuple) and len(pairs) == 2
                                            and all(isinstance(x, VDNA) for x in pairs)):
        pairs = [pairs]
    if isinstance(pairs, (VDNA, str, bytes, Mapping)) or not hasattr(pairs, "__iter__"):
        raise TypeError(f"{what} must be a list of (dna_with, dna_without) pairs, got {type(pairs).__name__}")
    pairs = list(pairs)
    if not pairs and not allow_empty:
        raise ValueError(f"{what} is empty: give at least one (dna_with, dna_without) pair")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, PairDistances):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"{what}[{i}] must be a (dna_with, dna_without) pair, got {type(pair).__name__}")
            for j, v in enumerate(pair):
                if not isinstance(v, VDNA):
                    raise TypeError(f"{what}[{i}][{j}] must be a VDNA, got {type(v).__name__}")
            if like is not None and pair[0].type != like.type:
                raise ValueError(f"{what}[{i}] compares '{pair[0].type}' DNAs but the others are '{like.type}': all "
                                 "DNAs of a comparison must be of one type")
            try:
                pair = PairDistances(pair[0], pair[1], (granularity,))
            except ValueError as exc:
                raise ValueError(f"{what}[{i}]: {exc}") from exc
        if like is None:
            like = pair
        else:
            like.check_comparable(pair, f"{what}[{i}]")
        pair.distances(granularity)  # made with this granularity?
        out.append(pair)
    return out


def _unit_metric(v: VDNA, granularity: str = "neuron") -> str:
    from .distances import metric_name

    return metric_name(v, neuron_wise=granularity == "neuron")


def unit_distances(pair, granularity: str = "neuron") -> Dict[str, np.ndarray]:
    """``{layer: distances}`` of one pair: per neuron ((C,) arrays; EMD or NFD), or per layer ((1,) arrays;
    EMD or NFD averaged over the layer's neurons, FD for layer Gaussians)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'neuron' or 'layer', got {granularity!r}")
    return check_pairs([pair], "pair", granularity=granularity)[0].distances(granularity)


def _flat(per_layer: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in per_layer.values()])


def _unflat(flat: np.ndarray, like: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    sizes = [np.asarray(v).size for v in like.values()]
    return dict(zip(like, np.split(flat, np.cumsum(sizes)[:-1])))


# ---------------------------------------------------------------------------------------- sensitivity
def sensitivity(pairs, baseline=None, granularity: str = "neuron") -> Dict[str, np.ndarray]:
    """``{layer: (C,) array}``: how much each neuron (or layer) tells the two sides of the pairs apart.

    ``pairs``: one or more ``(dna_with, dna_without)`` pairs of one attribute (or their
    :class:`PairDistances`); the result is the unit distance averaged over them. With ``baseline``
    (pairs of DNAs of one population, e.g. two random halves of the images without the attribute), the
    result is the signal-to-noise ratio ``s / (b + 0.01 * mean_layer(b))`` (see the module docstring), so
    that a neuron that is merely noisy is not taken for a sensitive one.
    ``NeuronWeights.top_k(sensitivity(...), k, like=dna)`` selects the k most sensitive neurons (paper
    Fig. 6, 7).
    """
    pairs = check_pairs(pairs, "pairs", granularity=granularity)
    s = _mean_distances(pairs, granularity)
    if baseline is None:
        return s
    baseline = check_pairs(baseline, "baseline", like=pairs[0], granularity=granularity)
    return signal_to_noise(s, _mean_distances(baseline, granularity))


def _mean_distances(pairs: List[PairDistances], granularity: str) -> Dict[str, np.ndarray]:
    layers = pairs[0].distances(granularity)
    return {l: np.mean([p.distances(granularity)[l] for p in pairs], axis=0) for l in layers}


def signal_to_noise(signal: Mapping[str, np.ndarray], noise: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``signal / (noise + SNR_FLOOR * mean of the layer's noise)``, layer by layer (0 where both are 0)."""
    if list(signal) != list(noise):
        raise ValueError("signal and noise must have the same layers")
    all_noise = _flat(noise)
    if not np.all(np.isfinite(all_noise)) or not np.any(all_noise > 0):
        raise ValueError("the baseline distances are all zero or not finite (are the baseline DNAs identical?); "
                         "a baseline needs two different samples of one population")
    out = {}
    for layer, s in signal.items():
        b = np.asarray(noise[layer], dtype=np.float64)
        floor = SNR_FLOOR * (b.mean() if b.mean() > 0 else all_noise.mean())
        out[layer] = np.asarray(s, dtype=np.float64) / (b + floor)
    return out


# ---------------------------------------------------------------------------------------- Δ and evaluation
def _like(pair):
    """What a pair's weights must match: its first DNA, or the PairDistances itself."""
    if isinstance(pair, PairDistances):
        return pair
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], VDNA):
        return pair[0]
    raise TypeError(f"a pair must be (dna_with, dna_without) or PairDistances, got {type(pair).__name__}")


def _as_weights(weights, like) -> NeuronWeights:
    if isinstance(weights, NeuronWeights):
        weights.check_compatible(like)
        return weights
    if isinstance(weights, Mapping):
        return NeuronWeights.from_dict(weights, like)
    return NeuronWeights.from_array(weights, like)


def _deviation(w: np.ndarray, d: np.ndarray, where: str) -> float:
    d_avg = float(np.mean(d))
    if not d_avg > 0:
        raise ValueError(f"{where}: the two DNAs do not differ (mean distance {d_avg}); Δ = 1 - D_W / D_avg "
                         "is undefined")
    return 1.0 - float(np.dot(w, d)) / d_avg


def sensitivity_deviation(weights, pair) -> float:
    """Δ = 1 − D_W / D_avg of one pair (paper Eq. 6): 0 when the weighted distance keeps the plain mean's
    value, 1 when the weights remove it entirely (negative when they enlarge it).

    ``weights``: NeuronWeights, ``{layer: array}`` or a flat array (neurons, or layers); layer weights
    use per-layer distances (FD for layer Gaussians)."""
    w = _as_weights(weights, _like(pair))
    pair = check_pairs([pair], "pair", granularity=w.granularity)[0]
    return _deviation(w.to_array(), pair.flat(w.granularity), "pair")


def evaluate_weights(weights, ignore=(), keep=()) -> dict:
    """How well ``weights`` ignore one attribute and keep the others, on any pairs (held-out ones!).

    Returns ``{"removal": mean Δ over ignore, "deviation": mean |Δ| over keep, "loss": mean |1 − Δ| over
    ignore + deviation, "ignore": [Δ per pair], "keep": [Δ per pair]}``; a statistic whose pairs were not
    given is None.
    """
    for name, pairs in (("ignore", ignore), ("keep", keep)):
        if isinstance(pairs, (VDNA, str, bytes, Mapping)) or not hasattr(pairs, "__iter__"):
            raise TypeError(f"{name} must be a list of pairs, got {type(pairs).__name__}")
    ignore, keep = list(ignore), list(keep)
    if not ignore and not keep:
        raise ValueError("evaluate_weights needs at least one pair (ignore or keep)")
    w = _as_weights(weights, _like((ignore or keep)[0]))
    ignore = check_pairs(ignore, "ignore", allow_empty=True, granularity=w.granularity)
    keep = check_pairs(keep, "keep", allow_empty=True, like=ignore[0] if ignore else None, granularity=w.granularity)
    flat = w.to_array()
    d_ignore = [_deviation(flat, p.flat(w.granularity), f"ignore[{i}]") for i, p in enumerate(ignore)]
    d_keep = [_deviation(flat, p.flat(w.granularity), f"keep[{i}]") for i, p in enumerate(keep)]
    removal = float(np.mean(d_ignore)) if d_ignore else None
    deviation = float(np.mean(np.abs(d_keep))) if d_keep else None
    loss = None
    if d_ignore and d_keep:
        loss = float(np.mean(np.abs(1.0 - np.array(d_ignore)))) + deviation
    return {"removal": removal, "deviation": deviation, "loss": loss, "ignore": d_ignore, "keep": d_keep}


# ---------------------------------------------------------------------------------------- learning
def learn_weights(ignore, keep, *, granularity: str = "neuron", solver: str = "lp",
                  regularization: float = DEFAULT_REGULARIZATION, max_weight: Optional[float] = DEFAULT_MAX_WEIGHT,
                  seed: int = 0, steps: int = 2000, learning_rate: float = 0.01) -> NeuronWeights:
    """Weights whose distance ignores one attribute and keeps the others (paper Sec. 5.3, Eq. 7).

    ``ignore``: ``(dna_with_a, dna_without_a)`` pairs whose weighted distance must vanish; ``keep``: pairs
    (one or more per other attribute) whose distance must keep its value (DNA pairs or
    :class:`PairDistances`). With d̂ = d / mean(d) for each pair (so that uniform weights 1/N give
    d̂·w = 1 and Δ = 1 − d̂·w), the loss minimised is

        mean_ignore (d̂_a · w) + mean_keep |1 − d̂_b · w| + regularization · Σₙ |wₙ − 1/N|

    over 0 ≤ wₙ ≤ max_weight / N (Eq. 7 is the first two terms: with w ≥ 0, |1 − Δ_a| = d̂_a · w).
    Σw is not fixed: the keep pairs fix the scale of w (a normalisation constraint would fight them
    when the neurons left after removing attribute a see the others less than average).

    - ``regularization`` (λ ≥ 0): pull towards uniform weights, so that a few neurons are not fitted to
      the noise of the training pairs; in units of the loss (moving every weight away from 1/N costs
      about 2λ).
    - ``max_weight`` (≥ 1, in units of the uniform weight 1/N; None: no bound): no neuron gets more than
      this multiple of its uniform share, so that the kept distances are spread over many neurons.
    - ``solver="lp"`` (default): the exact optimum of this piecewise-linear loss, a linear program solved
      by HiGHS (``scipy.optimize.linprog``; needs SciPy: ``pip install vdna[analysis]``).
      ``solver="adam"``: the paper's method, a non-negative linear layer trained with Adam (torch,
      float64, full batch, ``steps`` steps from uniform weights jittered by 1% with ``seed``; weights
      projected on [0, max_weight/N] after each step). Both are deterministic.
    - ``granularity="layer"``: one weight per layer, on per-layer distances (FD for layer Gaussians).

    Returns NeuronWeights recording in ``meta["learned"]`` the settings and the training loss, removal
    and deviation. Evaluate them on held-out pairs with :func:`evaluate_weights`.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be 'neuron' or 'layer', got {granularity!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be 'lp' or 'adam', got {solver!r}")
    reg = _check_number("regularization", regularization, minimum=0.0)
    cap = None if max_weight is None else _check_number("max_weight", max_weight, minimum=1.0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    ignore = check_pairs(ignore, "ignore", granularity=granularity)
    keep = check_pairs(keep, "keep", like=ignore[0], granularity=granularity)
    like = ignore[0]
    d_ignore = np.stack([_normalised(p.flat(granularity), f"ignore[{i}]") for i, p in enumerate(ignore)])
    d_keep = np.stack([_normalised(p.flat(granularity), f"keep[{i}]") for i, p in enumerate(keep)])

    start = time.perf_counter()
    if solver == "lp":
        w, info = _solve_lp(d_ignore.mean(axis=0), d_keep, reg, cap)
    else:
        w, info = _solve_adam(d_ignore, d_keep, reg, cap, int(seed), int(steps), float(learning_rate))
    seconds = time.perf_counter() - start
    n = w.shape[0]
    dev = np.abs(1.0 - d_keep @ w)
    learned = {
        "solver": solver, "granularity": granularity, "metric": like.metrics[granularity],
        "regularization": reg, "max_weight": cap, "seed": int(seed),
        "ignore_pairs": len(ignore), "keep_pairs": len(keep),
        "training": {"loss": float(np.mean(d_ignore @ w) + dev.mean() + reg * np.abs(w - 1.0 / n).sum()),
                     "removal": float(np.mean(1.0 - d_ignore @ w)), "deviation": float(dev.mean())},
        "seconds": seconds, **info,
    }
    return NeuronWeights(_unflat(w, like.distances(granularity)), like.feature_extractor_name, like.neurons_list,
                         granularity, meta={"learned": learned})


DEFAULT_CV_GRID = {"regularization": (0.0, 0.01, 0.03, 0.1, 0.3), "max_weight": (2.0, 4.0, 16.0, 64.0, None)}


def choose_learning_settings(folds, grid: Optional[Mapping] = None, *, granularity: str = "neuron",
                             solver: str = "lp", **kwargs) -> dict:
    """``regularization`` and ``max_weight`` for :func:`learn_weights`, chosen by cross-validation.

    ``folds``: two or more ``(ignore, keep)`` tuples, each the pairs of one independent set of images
    (e.g. one block of training images; the held-out images must not be among them). For every
    combination of ``grid`` (default :data:`DEFAULT_CV_GRID`: 5 x 5 values), weights are learned on all
    folds but one and the Eq. 7 loss, mean over ignore pairs of |1 − Δ_a| plus mean over keep pairs of
    |Δ_b| (``evaluate_weights(...)["loss"]``, no regularization term), is measured on the fold left
    out; the combination with the lowest mean over folds wins (ties: the earlier in the grid). Returns
    ``{"regularization", "max_weight", "loss", "table"}``, ``table`` holding every combination's mean
    loss. Pass the two settings on to ``learn_weights`` over all folds' pairs. ``kwargs`` go to ``learn_weights`` (e.g. ``seed``).
    """
    folds = list(folds)
    if len(folds) < 2:
        raise ValueError(f"cross-validation needs at least 2 folds of (ignore, keep) pairs, got {len(folds)}")
    for i, fold in enumerate(folds):
        if not (isinstance(fold, (tuple, list)) and len(fold) == 2):
            raise TypeError(f"folds[{i}] must be an (ignore, keep) tuple of pair lists")
    grid = dict(DEFAULT_CV_GRID if grid is None else grid)
    unknown = set(grid) - {"regularization", "max_weight"}
    if unknown or not grid:
        raise ValueError(f"grid takes 'regularization' and 'max_weight' lists, got {sorted(grid)}")
    regs = list(grid.get("regularization", (DEFAULT_REGULARIZATION,)))
    caps = list(grid.get("max_weight", (DEFAULT_MAX_WEIGHT,)))
    if not regs or not caps:
        raise ValueError("every grid list needs at least one value")
    checked = [(check_pairs(ig, f"folds[{i}] ignore", granularity=granularity),
                check_pairs(kp, f"folds[{i}] keep", granularity=granularity)) for i, (ig, kp) in enumerate(folds)]
    table = []
    for reg in regs:
        for cap in caps:
            losses = []
            for k, (ig_out, kp_out) in enumerate(checked):
                ig_in = [p for j, (ig, _) in enumerate(checked) if j != k for p in ig]
                kp_in = [p for j, (_, kp) in enumerate(checked) if j != k for p in kp]
                w = learn_weights(ig_in, kp_in, granularity=granularity, solver=solver, regularization=reg,
                                  max_weight=cap, **kwargs)
                losses.append(evaluate_weights(w, ig_out, kp_out)["loss"])
            table.append({"regularization": float(reg), "max_weight": None if cap is None else float(cap),
                          "loss": float(np.mean(losses)), "fold_losses": [float(x) for x in losses]})
    best = min(table, key=lambda row: row["loss"])  # min keeps the first of equal losses
    return {"regularization": best["regularization"], "max_weight": best["max_weight"], "loss": best["loss"],
            "table": table}


def _check_number(name: str, value, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value}")
    return value


def _normalised(d: np.ndarray, where: str) -> np.ndarray:
    mean = float(np.mean(d))
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{where}: the distances are not finite (NaN in a DNA?)")
    if not mean > 0:
        raise ValueError(f"{where}: the two DNAs do not differ (mean distance {mean}); such a pair cannot "
                         "define Δ = 1 - D_W / D_avg")
    return d / mean


_LP_METHODS = ("highs", "highs-ipm", "highs-ds")


def _solve_lp(a: np.ndarray, keep: np.ndarray, reg: float, cap: Optional[float]):
    """The LP. With w = 1/N + p − m (0 ≤ m ≤ 1/N, 0 ≤ p ≤ (cap − 1)/N) and d̂_b·w − 1 = s⁺_b − s⁻_b
    (s± ≥ 0), and since mean(d̂) = 1 makes d̂·(1/N) = 1:

        minimise  (a + λ)·p + (λ − a)·m + (1/B) Σ_b (s⁺_b + s⁻_b)   [+ the constant 1]
        subject to d̂_b·p − d̂_b·m − s⁺_b + s⁻_b = 0  for every keep pair b.

    At the optimum p_n·m_n = 0 wherever λ > 0, so Σ(p + m) = Σ|w − 1/N|. B rows and 2N + 2B bounded
    columns: the simplex works on a B x B basis, which is what makes 25,600 neurons quick.
    """
    try:
        from scipy import sparse
        from scipy.optimize import linprog
    except ImportError as exc:
        raise ImportError("learn_weights(solver='lp') needs SciPy: `pip install vdna[analysis]` (or "
                          "`pip install scipy`), or use solver='adam'") from exc
    b, n_all = keep.shape
    u = 1.0 / n_all
    # Neurons at distance 0 in every pair (dead ones) only pay the pull λ(p + m) >= 0: their optimum is
    # exactly w = 1/N. They leave the LP: all-zero columns made HiGHS stop with an "unknown" status.
    live = (a != 0) | np.any(keep != 0, axis=0)
    a, keep = a[live], keep[:, live]
    n = int(live.sum())
    c = np.concatenate([a + reg, reg - a, np.full(2 * b, 1.0 / b)])
    eye = sparse.identity(b, format="csc")
    dense = sparse.csc_matrix(keep)
    a_eq = sparse.hstack([dense, -dense, -eye, eye], format="csc")
    upper_p = None if cap is None else (cap - 1.0) * u
    bounds = np.array([(0.0, upper_p)] * n + [(0.0, u)] * n + [(0.0, None)] * (2 * b), dtype=object)
    # The LP is always feasible (w = 1/N, s = 0) and bounded below (c >= 0 on every unbounded column);
    # should HiGHS's default (dual simplex) still stop without an optimum, the interior-point and then
    # the primal simplex solvers are tried before giving up.
    messages = []
    for method in _LP_METHODS:
        res = linprog(c, A_eq=a_eq, b_eq=np.zeros(b), bounds=bounds, method=method)
        if res.status == 0:
            break
        messages.append(f"{method}: {res.message}")
    else:
        raise RuntimeError("the linear program was not solved (" + "; ".join(messages) + ")")
    w = np.full(n_all, u)
    w[live] = u + res.x[:n] - res.x[n:2 * n]
    # HiGHS meets the bounds to its feasibility tolerance (1e-7 relative): w >= 1/N - m can come out a
    # rounding error below 0
    w = np.clip(w, 0.0, None)
    return w, {"iterations": int(getattr(res, "nit", 0)), "lp_method": method}


def _solve_adam(d_ignore: np.ndarray, keep: np.ndarray, reg: float, cap: Optional[float], seed: int, steps: int,
                lr: float):
    try:
        import torch
    except ImportError as exc:
        raise ImportError("learn_weights(solver='adam') needs PyTorch (`pip install torch`); solver='lp' needs "
                          "SciPy only") from exc
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n = d_ignore.shape[1]
    gen = torch.Generator().manual_seed(seed)
    # v = N·w: uniform weights are v = 1, which puts every parameter on the same scale for Adam
    v = (1.0 + 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)).clamp_(min=0.0).requires_grad_(True)
    a = torch.from_numpy(d_ignore.mean(axis=0) / n)
    k = torch.from_numpy(keep / n)
    opt = torch.optim.Adam([v], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = a @ v + (1.0 - k @ v).abs().mean() + reg * (v - 1.0).abs().sum() / n
        loss.backward()
        opt.step()
        with torch.no_grad():
            v.clamp_(min=0.0, max=cap)
    return v.detach().numpy() / n, {"steps": steps, "learning_rate": lr}


# ---------------------------------------------------------------------------------------- DNAs of attributes
def attribute_dnas(images, attributes, feat_extractor_name: str,
                   distributions: Sequence[str] = ("histogram-1000",), *, as_distances: bool = False,
                   batch_size: int = 32, device: Optional[str] = None, backend: str = "auto",
                   activation_ranges=None, processor=None, verbose: bool = False) -> Dict[str, Dict[str, object]]:
    """The ``(with, without)`` DNAs of every attribute, from one forward pass per image.

    ``images``: a sequence of (H, W, 3) uint8 arrays (resized to the extractor's input if needed; a
    lazy sequence is read batch by batch); ``attributes``: ``{name: (n,) bools}`` saying which images
    have each attribute. Returns ``{distribution: {name: (dna_with, dna_without)}}``, or with
    ``as_distances=True`` ``{distribution: {name: PairDistances}}`` (each pair is summarised as soon as
    it is made and its DNAs dropped: the way to hold many attributes of a large extractor).

    Histograms: one accumulator per attribute (its images) plus one for all images, the without-DNA
    being all minus with (exact: counts). Gaussians and layer Gaussians: the per-image mean activations
    are kept (n x N float64) and each subset's DNA is accumulated from them.
    """
    import copy

    from .accumulator import Accumulator
    from .dna import HISTOGRAM, LAYER_GAUSSIAN, META_NAN_COUNTS, parse_distribution_name
    from .frechet import fd_of_samples
    from .processor import VDNAProcessor, _as_pixel_batch, accumulator_for, resolve_device

    n = len(images)
    if n == 0:
        raise ValueError("attribute_dnas: no images")
    if not isinstance(attributes, Mapping) or not attributes:
        raise ValueError("attributes must be a non-empty mapping {name: (n,) booleans}")
    masks = {}
    for name, m in attributes.items():
        m = np.asarray(m)
        if m.shape != (n,) or m.dtype.kind not in "bui":
            raise ValueError(f"attribute '{name}': expected {n} booleans (one per image), got shape {m.shape}")
        m = m.astype(bool)
        if m.all() or not m.any():
            raise ValueError(f"attribute '{name}': every image is on one side; both sides need images")
        masks[str(name)] = m
    if isinstance(distributions, str):
        distributions = [distributions]
    kinds = {d: parse_distribution_name(d)[0] for d in distributions}
    if not kinds:
        raise ValueError("distributions is empty")

    proc = processor if processor is not None else VDNAProcessor()
    dev = resolve_device(device)
    extractor = proc.get_extractor(feat_extractor_name)
    be = proc.get_backend(extractor, dev, backend)
    info = extractor.info
    hist = {d: {"all": accumulator_for(extractor, d, activation_ranges),
                **{a: accumulator_for(extractor, d, activation_ranges) for a in masks}}
            for d, k in kinds.items() if k == HISTOGRAM}
    means = {l: np.empty((n, c)) for l, c in info.neurons_per_layer.items()} if len(hist) < len(kinds) else None

    import torch

    starts = range(0, n, int(batch_size))
    if verbose:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"vdna attribute DNAs ({feat_extractor_name})", unit="batch")
    from . import heap

    with torch.no_grad(), heap.pass_scope():  # freed activations stay in the heap for the next batch
        for s in starts:
            batch = _as_pixel_batch([images[i] for i in range(s, min(n, s + int(batch_size)))], info.input_size, torch)
            acts = {l: x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
                    for l, x in be.forward(batch).items()}
            for accs in hist.values():
                accs["all"].update(acts)
                for a, m in masks.items():
                    sel = np.flatnonzero(m[s:s + len(batch)])
                    if sel.size:
                        accs[a].update({l: x[sel] for l, x in acts.items()})
            if means is not None:
                for l, x in acts.items():
                    axes = tuple(range(2, x.ndim)) if info.layouts.get(l, "channels") == "channels" else (1,)
                    means[l][s:s + len(batch)] = x.mean(axis=axes, dtype=np.float64) if axes else x
            del acts

    def finish(pair):
        return PairDistances(*pair) if as_distances else pair

    out: Dict[str, Dict[str, object]] = {}
    for d, kind in kinds.items():
        out[d] = {}
        if kind == HISTOGRAM:
            total = hist[d].pop("all").compute()
            for a in masks:
                with_a = hist[d].pop(a).compute()
                without = copy.deepcopy(total)
                without.data = {l: total.data[l] - with_a.data[l] for l in total.neurons_list}
                without.num_images = total.num_images - with_a.num_images
                nan_all, nan_with = total.meta.get(META_NAN_COUNTS, {}), with_a.meta.get(META_NAN_COUNTS, {})
                without.meta[META_NAN_COUNTS] = {l: int(nan_all.get(l, 0)) - int(nan_with.get(l, 0)) for l in nan_all}
                out[d][a] = finish((with_a, without))
                del with_a, without
            del total
            continue
        for a, m in masks.items():
            pair = []
            for subset in (m, ~m):
                acc = Accumulator(d, dict(info.neurons_per_layer), feature_extractor_name=info.name)
                acc.update({l: means[l][subset] for l in info.neurons_per_layer})
                pair.append(acc.compute())
            if as_distances and kind == LAYER_GAUSSIAN:
                # layer FDs from the per-image means themselves where that is cheaper (vdna/frechet.py: the
                # same value to rounding); PairDistances computes the other layers with vdna.FD
                layer_fd = {l: fd_of_samples(x[m], x[~m]) for l, x in means.items() if _fd_from_samples_applies(x, m)}
                out[d][a] = PairDistances(*pair, layer_distances=layer_fd)
            else:
                out[d][a] = finish(tuple(pair))
            del pair
    return out


def _fd_from_samples_applies(means: np.ndarray, mask: np.ndarray) -> bool:
    """Whether one layer's FD of the split ``mask`` / ``~mask`` of its (n, C) per-image means should come
    from the means: each side has a covariance (2+ images) but at most C images, so that the n1 x n2
    product and its SVD cost no more than vdna.FD's C x C eigendecompositions (and memory stays within
    C x C); and the means are finite (else vdna.FD decides what NaN or Inf give)."""
    n1, c = int(mask.sum()), means.shape[1]
    return 2 <= n1 <= c and 2 <= len(mask) - n1 <= c and bool(np.isfinite(means).all())


__all__ = ["PairDistances", "sensitivity", "signal_to_noise", "sensitivity_deviation", "evaluate_weights", "learn_weights",
           "choose_learning_settings", "unit_distances", "check_pairs", "attribute_dnas"]
