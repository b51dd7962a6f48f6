"""Customised comparisons: sensitivity, Δ (Eq. 6), learned weights (Eq. 7 as a linear program) and
their evaluation, against hand-worked values and an independent grid search."""
import itertools

import numpy as np
import pytest

from vdna import NeuronWeights, evaluate_weights, learn_weights, sensitivity, sensitivity_deviation
from vdna.customise import PairDistances, signal_to_noise
from vdna.dna import get_vdna

from dna_factory import make_dna

EPS = np.finfo(np.float64).eps
# Tolerances below: Δ of a hand-made pair is a dot product of <= 4 terms of size <= 9, a mean and one
# division, all O(1) after dividing by D_avg: a handful of roundings of relative size eps, so 4-8 eps
# absolute on values of order 1. SNR values are one addition and one division: 2 eps relative.


def gauss(mu, var=None, extractor="toy_net", layers=None):
    """A Gaussian DNA with the given means (one flat array) split over ``layers`` ({name: count})."""
    mu = np.asarray(mu, dtype=np.float64)
    layers = layers or {"l": mu.size}
    var = np.ones_like(mu) if var is None else np.asarray(var, dtype=np.float64)
    v = get_vdna("gaussian")
    v.neurons_list, v.feature_extractor_name, v.num_images = dict(layers), extractor, 10
    start = 0
    for l, c in layers.items():
        v.data[l] = {"mu": mu[start:start + c].copy(), "var": var[start:start + c].copy()}
        start += c
    return v


def pair_with_distances(d, layers=None):
    """A pair of Gaussian DNAs whose NFDs are exactly ``d`` (equal variances: NFD = (μ₁−μ₂)², and the
    square roots of perfect squares below are exact)."""
    d = np.asarray(d, dtype=np.float64)
    return gauss(np.sqrt(d), layers=layers), gauss(np.zeros_like(d), layers=layers)


# ------------------------------------------------------------------------------------------- Δ by hand
def test_delta_by_hand():
    pair = pair_with_distances([1.0, 4.0, 9.0])
    # D_avg = 14/3; w = (1/2, 0, 1/2): D_W = 5, Δ = 1 - 15/14 = -1/14
    assert sensitivity_deviation(np.array([0.5, 0.0, 0.5]), pair) == pytest.approx(-1 / 14, abs=4 * EPS)
    # uniform weights keep the distance: Δ = 0; only neuron 0 with weight 1: D_W = 1, Δ = 1 - 3/14
    assert sensitivity_deviation(NeuronWeights.uniform(pair[0]), pair) == pytest.approx(0.0, abs=4 * EPS)
    assert sensitivity_deviation({"l": np.array([1.0, 0, 0])}, pair) == pytest.approx(11 / 14, abs=4 * EPS)
    assert sensitivity_deviation(np.zeros(3), pair) == 1.0

    res = evaluate_weights(np.array([0.5, 0.0, 0.5]), ignore=[pair], keep=[pair_with_distances([4.0, 1.0, 1.0])])
    # keep pair: D_avg = 2, D_W = 2.5, Δ = -0.25
    assert res["removal"] == pytest.approx(-1 / 14, abs=4 * EPS)
    assert res["deviation"] == pytest.approx(0.25, abs=4 * EPS)
    assert res["loss"] == pytest.approx(1 + 1 / 14 + 0.25, abs=8 * EPS)
    assert res["keep"] == [pytest.approx(-0.25, abs=4 * EPS)]


def test_delta_with_layer_granularity():
    rng = np.random.default_rng(2)
    a, b = make_dna("layer-gaussian", rng), make_dna("layer-gaussian", rng)
    from vdna import FD

    fd = {l: float(FD(a, b, use_neurons_from_layer=l)) for l in a.neurons_list}
    w = NeuronWeights.from_dict({"conv.a": 1.0, "block_1": 0.0}, like=a)
    expected = 1 - fd["conv.a"] / np.mean(list(fd.values()))
    assert sensitivity_deviation(w, (a, b)) == pytest.approx(expected, abs=8 * EPS * (1 + abs(expected)))


# ------------------------------------------------------------------------------------------- sensitivity
def test_sensitivity_is_the_mean_and_snr_formula():
    layers = {"x": 2, "y": 2}
    p1, p2 = pair_with_distances([1.0, 4.0, 0.0, 9.0], layers), pair_with_distances([9.0, 0.0, 0.0, 1.0], layers)
    s = sensitivity([p1, p2])
    np.testing.assert_array_equal(s["x"], [5.0, 2.0])
    np.testing.assert_array_equal(s["y"], [0.0, 5.0])
    base = pair_with_distances([1.0, 1.0, 0.0, 4.0], layers)
    snr = sensitivity([p1, p2], baseline=[base])
    # floor = 0.01 * mean of the layer's baseline distances: x: 0.01, y: 0.02
    np.testing.assert_allclose(snr["x"], [5.0 / 1.01, 2.0 / 1.01], rtol=2 * EPS)
    np.testing.assert_allclose(snr["y"], [0.0, 5.0 / 4.02], rtol=2 * EPS)
    # one pair given bare, and top_k of the SNR picks the neuron the noise does not explain
    assert NeuronWeights.top_k(snr, 1, like=p1[0]).layer("x")[0] == 1.0
    np.testing.assert_array_equal(sensitivity(p1)["x"], [1.0, 4.0])
    with pytest.raises(ValueError, match="all zero"):
        signal_to_noise(s, {"x": np.zeros(2), "y": np.zeros(2)})


def test_sensitivity_of_histograms_is_emd():
    rng = np.random.default_rng(0)
    a, b = make_dna("histogram-8", rng), make_dna("histogram-8", rng)
    from vdna import EMD

    s = sensitivity([(a, b)])
    for l, e in EMD(a, b, return_neuron_wise=True).items():
        np.testing.assert_array_equal(s[l], e)


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(1)
    h1, h2 = make_dna("histogram-8", rng), make_dna("histogram-8", rng)
    g1, g2 = make_dna("gaussian", rng), make_dna("gaussian", rng)
    other = make_dna("histogram-8", rng, extractor="other_net")
    with pytest.raises(ValueError, match="empty"):
        sensitivity([])
    with pytest.raises(ValueError, match="empty"):
        learn_weights([], [(h1, h2)])
    with pytest.raises(ValueError, match="one type"):
        sensitivity([(h1, g1)])
    with pytest.raises(ValueError, match="one type"):
        learn_weights([(h1, h2)], [(g1, g2)])
    with pytest.raises(ValueError, match="extractor"):
        learn_weights([(h1, h2)], [(other, other)])
    with pytest.raises(TypeError, match="pair"):
        sensitivity([h1])
    with pytest.raises(ValueError, match="do not differ"):
        learn_weights([(h1, h2)], [(h1, h1)])
    with pytest.raises(ValueError, match="solver"):
        learn_weights([(h1, h2)], [(h2, h1)], solver="sgd")
    with pytest.raises(ValueError, match="regularization"):
        learn_weights([(h1, h2)], [(h2, h1)], regularization=-1)
    with pytest.raises(ValueError, match="granularity"):
        learn_weights([(h1, h2)], [(h2, h1)], granularity="pixel")
    with pytest.raises(ValueError, match=">= 0"):
        sensitivity_deviation(np.full(8, np.nan), (h1, h2))
    with pytest.raises(ValueError, match="extractor"):
        sensitivity_deviation(NeuronWeights.uniform(other), (h1, h2))


# ------------------------------------------------------------------------------------------- learning
def _loss(w, d_ignore, d_keep, reg):
    """The objective, written independently of the LP: Eq. 7 plus the pull towards uniform weights."""
    n = d_ignore.shape[1]
    dev_a = [1 - w @ d / d.mean() for d in d_ignore]
    dev_b = [1 - w @ d / d.mean() for d in d_keep]
    return np.mean(np.abs(1 - np.array(dev_a))) + np.mean(np.abs(dev_b)) + reg * np.abs(w - 1 / n).sum()


def _grid_loss(points, d_ignore, d_keep, reg):
    """_loss at many points at once (rows of ``points``)."""
    n = d_ignore.shape[1]
    a = points @ (d_ignore / d_ignore.mean(axis=1, keepdims=True)).T  # |1 - Δ_a| = D_W / D_avg (w >= 0)
    b = np.abs(1 - points @ (d_keep / d_keep.mean(axis=1, keepdims=True)).T)
    return a.mean(axis=1) + b.mean(axis=1) + reg * np.abs(points - 1 / n).sum(axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_lp_is_no_worse_than_a_grid_of_feasible_points(seed, reg):
    rng = np.random.default_rng(seed)
    n, cap = 3, 3.0
    d_ignore = rng.uniform(0.1, 2.0, size=(2, n))
    d_keep = rng.uniform(0.1, 2.0, size=(3, n))
    w = learn_weights([pair_with_distances(d) for d in d_ignore], [pair_with_distances(d) for d in d_keep],
                      regularization=reg, max_weight=cap).to_array()
    assert np.all(w >= 0) and np.all(w <= cap / n * (1 + 1e-7))  # HiGHS's primal feasibility tolerance 1e-7
    lp = _loss(w, d_ignore, d_keep, reg)
    grid = np.linspace(0.0, cap / n, 31)
    points = np.array(list(itertools.product(grid, repeat=n)))  # (31^3, 3) feasible weights
    best = min(_grid_loss(points, d_ignore, d_keep, reg).min(), _loss(points[0], d_ignore, d_keep, reg))
    # the LP optimum is at most the grid's best; HiGHS's optimality tolerance (1e-7, relative to costs of
    # order 1) bounds how far above the true optimum it may stop
    assert lp <= best + 1e-6
    assert lp <= _loss(np.full(n, 1 / n), d_ignore, d_keep, reg) + 1e-6
    # the loss the LP reports is the loss of the weights it returns
    nw = learn_weights([pair_with_distances(d) for d in d_ignore], [pair_with_distances(d) for d in d_keep],
                       regularization=reg, max_weight=cap)
    assert nw.meta["learned"]["training"]["loss"] == pytest.approx(lp, abs=1e-12)


def test_lp_finds_the_obvious_solution():
    # neuron 0 sees only attribute a, neurons 1-3 see only attribute b: ignore a, keep b
    ignore = [pair_with_distances([4.0, 0.0, 0.0, 0.0])]
    keep = [pair_with_distances([0.0, 1.0, 1.0, 1.0])]
    w = learn_weights(ignore, keep, regularization=0.0, max_weight=None)
    ev = evaluate_weights(w, ignore, keep)
    assert w.layer("l")[0] == 0.0
    assert ev["removal"] == pytest.approx(1.0, abs=1e-9) and ev["deviation"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_lp_leaves_dead_neurons_at_the_uniform_weight(reg):
    """Neurons at distance 0 in every pair (dead ones) leave the LP and keep w = 1/N, which is optimal
    (they only pay the pull to uniform); the result is no worse than a grid over the live neurons."""
    rng = np.random.default_rng(3)
    n, dead = 6, [1, 4]
    d_ignore = rng.uniform(0.1, 2.0, size=(1, n))
    d_keep = rng.uniform(0.1, 2.0, size=(3, n))
    d_ignore[:, dead] = 0.0
    d_keep[:, dead] = 0.0
    w = learn_weights([pair_with_distances(d) for d in d_ignore], [pair_with_distances(d) for d in d_keep],
                      regularization=reg, max_weight=3.0).to_array()
    np.testing.assert_array_equal(w[dead], 1.0 / n)
    grid = np.linspace(0.0, 3.0 / n, 31)
    live = [i for i in range(n) if i not in dead]
    points = np.zeros((31 ** len(live), n))
    points[:, live] = np.array(list(itertools.product(grid, repeat=len(live))))
    points[:, dead] = 1.0 / n
    best = _grid_loss(points, d_ignore, d_keep, reg).min()
    assert _loss(w, d_ignore, d_keep, reg) <= best + 1e-6  # HiGHS's optimality tolerance, as above


def test_adam_agrees_and_both_are_deterministic():
    rng = np.random.default_rng(9)
    d_ignore, d_keep = rng.uniform(0.1, 2.0, size=(2, 6)), rng.uniform(0.1, 2.0, size=(4, 6))
    ig, kp = [pair_with_distances(d) for d in d_ignore], [pair_with_distances(d) for d in d_keep]
    lp1, lp2 = learn_weights(ig, kp), learn_weights(ig, kp)
    assert lp1 == lp2
    ad1 = learn_weights(ig, kp, solver="adam", steps=100, learning_rate=0.1, seed=3)
    ad2 = learn_weights(ig, kp, solver="adam", steps=100, learning_rate=0.1, seed=3)
    assert ad1 == ad2
    l_lp, l_ad = lp1.meta["learned"]["training"]["loss"], ad1.meta["learned"]["training"]["loss"]
    # Adam approaches the exact optimum from above (its steps of lr=0.01 leave it within a few percent)
    assert l_lp <= l_ad + 1e-9 and l_ad <= l_lp * 1.05 + 1e-3


def test_layer_granularity_and_pair_distances():
    rng = np.random.default_rng(5)
    dnas = [make_dna("layer-gaussian", rng) for _ in range(6)]
    ig = [(dnas[0], dnas[1])]
    kp = [PairDistances(dnas[2], dnas[3]), (dnas[4], dnas[5])]
    w = learn_weights(ig, kp, granularity="layer")
    assert w.granularity == "layer" and w.meta["learned"]["metric"] == "FD"
    ev = evaluate_weights(w, ig, kp)
    assert ev["removal"] == pytest.approx(w.meta["learned"]["training"]["removal"], abs=1e-12)
    wn = learn_weights(ig, kp)
    assert wn.granularity == "neuron" and wn.meta["learned"]["metric"] == "NFD"


def test_pair_distances_from_arrays():
    d = {"x": np.array([1.0, 4.0]), "y": np.array([9.0])}
    p = PairDistances.from_distances(d, "toy_net", "gaussian")
    via_dnas = PairDistances(*pair_with_distances([1.0, 4.0, 9.0], {"x": 2, "y": 1}))
    np.testing.assert_array_equal(p.flat(), via_dnas.flat())
    w = learn_weights([p], [PairDistances.from_distances({"x": [1.0, 1.0], "y": [1.0]}, "toy_net", "gaussian")])
    assert w.neurons_list == {"x": 2, "y": 1}
    with pytest.raises(ValueError, match=">= 0"):
        PairDistances.from_distances({"x": [-1.0]}, "toy_net")
    with pytest.raises(ValueError, match="extractor"):
        learn_weights([p], [PairDistances.from_distances(d, "other", "gaussian")])


def test_guide_names_exist_and_code_parses():
    """docs/customised.md: its Python parses and every vdna name it shows exists; every command it shows
    parses with the real argument parser (the guide's data are not at hand: the loop itself is run by the
    tests above and by tests/test_cli_customise.py)."""
    import ast
    import re
    import shlex
    from pathlib import Path

    import vdna
    import vdna.customise
    import vdna.plots
    import vdna.procedural
    from vdna.cli import build_parser

    text = (Path(__file__).resolve().parent.parent / "docs" / "customised.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert {lang for lang, _ in blocks} == {"python", "bash"}
    for lang, code in blocks:
        if lang == "python":
            ast.parse(code)
        else:
            for line in code.strip().splitlines():
                args = shlex.split(line)
                assert args[0] == "vdna"
                build_parser().parse_args(args[1:])  # exits (SystemExit) on a usage error
    for name in re.findall(r"vdna\.(\w+)\(", text):
        assert hasattr(vdna, name), name
    for name in re.findall(r"`(\w+)\(", text):
        assert any(hasattr(obj, name) for obj in (vdna, vdna.NeuronWeights, vdna.customise, vdna.customise.PairDistances,
                                                   vdna.procedural, vdna.plots)), name


# ------------------------------------------------------------------ settings by cross-validation
def _fold(rng, signal, n=12):
    """One independent image set: the attribute pair (neurons 0-2 see it) and 3 keep pairs, each with
    its own noise (so that weights fitted to one fold's noise do worse on the other)."""
    def pair(base):
        return pair_with_distances(base + rng.gamma(2.0, 0.2, n))

    a = np.full(n, 0.2)
    a[:3] = signal
    return [pair(a)], [pair(np.full(n, 1.0)) for _ in range(3)]


def test_choose_learning_settings_is_the_argmin_of_held_out_fold_losses():
    from vdna import choose_learning_settings

    rng = np.random.default_rng(5)
    folds = [_fold(rng, 3.0), _fold(rng, 3.0)]
    grid = {"regularization": [0.0, 0.1, 1.0], "max_weight": [2.0, None]}
    got = choose_learning_settings(folds, grid)
    assert len(got["table"]) == 6
    # every row recomputed independently: learn on one fold, Δ by hand (1 - d̂·w, d̂ = d / mean d) on the other
    for row in got["table"]:
        losses = []
        for k in (0, 1):
            (ig_in, kp_in), (ig_out, kp_out) = folds[1 - k], folds[k]
            w = learn_weights(ig_in, kp_in, regularization=row["regularization"],
                              max_weight=row["max_weight"]).to_array()
            flats = [PairDistances(*p).flat() for p in ig_out + kp_out]
            delta = [1.0 - (d / d.mean()) @ w for d in flats]
            losses.append(abs(1.0 - delta[0]) + np.mean(np.abs(delta[1:])))
        # the same float64 sums of 12 terms in another order: a few ulps of the O(1) loss
        np.testing.assert_allclose(row["fold_losses"], losses, rtol=0, atol=64 * np.finfo(float).eps)
    best = min(got["table"], key=lambda r: r["loss"])
    assert (got["regularization"], got["max_weight"], got["loss"]) == (best["regularization"], best["max_weight"],
                                                                      best["loss"])
    # a strong pull to uniform weights keeps the attribute's neurons: clearly worse held out here
    worst = [r for r in got["table"] if r["regularization"] == 1.0]
    assert all(r["loss"] > got["loss"] for r in worst)


def test_choose_learning_settings_bad_input():
    from vdna import choose_learning_settings

    rng = np.random.default_rng(0)
    fold = _fold(rng, 3.0)
    with pytest.raises(ValueError, match="at least 2 folds"):
        choose_learning_settings([fold])
    with pytest.raises(ValueError, match="grid takes"):
        choose_learning_settings([fold, fold], {"alpha": [1]})
    with pytest.raises(ValueError, match="at least one value"):
        choose_learning_settings([fold, fold], {"regularization": []})
    with pytest.raises(TypeError, match=r"folds\[1\]"):
        choose_learning_settings([fold, "x"])
