"""EMD / NFD / FD / distances_to through the public API, against independent NumPy/SciPy computations.

Tolerances: all quantities are O(1)-O(10) sums of a few dozen float64 terms, so 1e-12 relative is far
above rounding; FD goes through factors and an SVD (ours) vs scipy's Schur-based sqrtm, both backward
stable on these well-conditioned 3x3 / 5x5 matrices, hence 1e-9.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from vdna import EMD, FD, NFD, distances_to

from dna_factory import NEURONS, make_dna

# EMD/NFD per neuron are sums of <= 1000 float64 terms computed by the core and by NumPy in different
# orders: <= B*eps64 ~ 1e-13 relative; averaging over neurons adds n*eps64 of the mean. 1e-12 keeps a
# margin over rounding on every CPU (no float32 step, no CPU-dependent kernel) and catches any wrong bin,
# weight or selection, which changes the value at the 1e-3 level or more.
RTOL = 1e-12


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def emd_ref(h1, h2):
    """Per-row EMD in bins, via SciPy's 1-D Wasserstein distance on bin positions 0..B-1."""
    pos = np.arange(h1.shape[1], dtype=np.float64)
    return np.array([scipy.stats.wasserstein_distance(pos, pos, a, b) for a, b in zip(h1, h2)])


def nfd_ref(mu1, v1, mu2, v2):
    return (mu1 - mu2) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2)


def fd_ref(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


# ------------------------------------------------------------------------------------------------ EMD
def test_emd_all_layer_neuron_and_neuron_wise(rng):
    a, b = make_dna("histogram-9", rng), make_dna("histogram-9", rng)
    per_layer = {l: emd_ref(a.data[l], b.data[l]) for l in NEURONS}
    everything = np.concatenate([per_layer[l] for l in NEURONS])

    d = EMD(a, b)
    assert isinstance(d, np.float64) and isinstance(float(d), float) and isinstance(d.item(), float)
    np.testing.assert_allclose(d, everything.mean(), rtol=RTOL)
    np.testing.assert_allclose(EMD(a, b, use_neurons_from_layer="block_1"), per_layer["block_1"].mean(), rtol=RTOL)
    np.testing.assert_allclose(
        EMD(a, b, use_neurons_from_layer="conv.a", use_neuron_index=0), per_layer["conv.a"][0], rtol=RTOL
    )
    np.testing.assert_allclose(
        EMD(a, b, use_neurons_from_layer="block_1", use_neuron_index=np.int64(4)), per_layer["block_1"][4], rtol=RTOL
    )
    nw = EMD(a, b, return_neuron_wise=True)
    assert list(nw) == list(NEURONS)
    for l in NEURONS:
        assert nw[l].dtype == np.float64 and nw[l].shape == (NEURONS[l],)
        np.testing.assert_allclose(nw[l], per_layer[l], rtol=RTOL)
    only = EMD(a, b, use_neurons_from_layer="conv.a", return_neuron_wise=True)
    assert list(only) == ["conv.a"]


def test_emd_hand_worked_and_identity(rng):
    a, b = make_dna("histogram-4", rng, neurons={"l": 1}), make_dna("histogram-4", rng, neurons={"l": 1})
    a.data["l"] = np.array([[2, 0, 0, 0]], np.int64)  # all mass in bin 0
    b.data["l"] = np.array([[0, 0, 0, 5]], np.int64)  # all mass in bin 3: it moves 3 bins
    assert EMD(a, b) == 3.0
    assert EMD(a, a) == 0.0


def test_emd_weights_are_a_weighted_sum(rng):
    a, b = make_dna("histogram-9", rng), make_dna("histogram-9", rng)
    per = np.concatenate([emd_ref(a.data[l], b.data[l]) for l in NEURONS])
    w = rng.uniform(0, 2, size=per.size)
    np.testing.assert_allclose(EMD(a, b, weights=w), np.dot(w, per), rtol=RTOL)
    w5 = rng.uniform(0, 2, size=5)
    np.testing.assert_allclose(
        EMD(a, b, use_neurons_from_layer="block_1", weights=w5), np.dot(w5, per[3:]), rtol=RTOL
    )
    np.testing.assert_allclose(
        EMD(a, b, use_neurons_from_layer="block_1", use_neuron_index=2, weights=[0.5]), 0.5 * per[5], rtol=RTOL
    )
    np.testing.assert_allclose(EMD(a, b, weights=np.full(8, 1 / 8)), per.mean(), rtol=RTOL)


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(7), r"one entry per selected neuron \(8\)"),
        (np.ones((2, 4)), "one entry per selected neuron"),
        (np.r_[np.ones(7), -1.0], r"weights\[7\] = -1"),
        (np.r_[np.nan, np.ones(7)], r"finite"),
    ],
)
def test_bad_weights(rng, weights, message):
    a, b = make_dna("histogram-9", rng), make_dna("histogram-9", rng)
    with pytest.raises(ValueError, match=message):
        EMD(a, b, weights=weights)
    g1, g2 = make_dna("gaussian", rng), make_dna("gaussian", rng)
    with pytest.raises(ValueError, match=message):
        NFD(g1, g2, weights=weights)
    with pytest.raises(ValueError, match=message):
        distances_to(a, [b, b], weights=weights)


def test_weights_with_neuron_wise_result_is_an_error(rng):
    a, b = make_dna("histogram-9", rng), make_dna("histogram-9", rng)
    with pytest.raises(ValueError, match="return_neuron_wise"):
        EMD(a, b, return_neuron_wise=True, weights=np.ones(8))


# ------------------------------------------------------------------------------------------------ NFD
def test_nfd_against_numpy(rng):
    a, b = make_dna("gaussian", rng), make_dna("gaussian", rng)
    per = {l: nfd_ref(a.data[l]["mu"], a.data[l]["var"], b.data[l]["mu"], b.data[l]["var"]) for l in NEURONS}
    allv = np.concatenate([per[l] for l in NEURONS])
    np.testing.assert_allclose(NFD(a, b), allv.mean(), rtol=RTOL)
    np.testing.assert_allclose(NFD(a, b, use_neurons_from_layer="conv.a"), per["conv.a"].mean(), rtol=RTOL)
    one = NFD(a, b, use_neurons_from_layer="conv.a", use_neuron_index=1)
    np.testing.assert_allclose(one, per["conv.a"][1], rtol=RTOL)
    nw = NFD(a, b, return_neuron_wise=True)
    for l in NEURONS:
        np.testing.assert_allclose(nw[l], per[l], rtol=RTOL)
    w = rng.uniform(0, 1, 8)
    np.testing.assert_allclose(NFD(a, b, weights=w), np.dot(w, allv), rtol=RTOL)
    assert NFD(a, a) == pytest.approx(0.0, abs=1e-15)


def test_nfd_on_layer_gaussian_uses_the_covariance_diagonal(rng):
    a, b = make_dna("layer-gaussian", rng), make_dna("layer-gaussian", rng)
    per = np.concatenate([
        nfd_ref(a.data[l]["mu"], np.diag(a.data[l]["sigma"]), b.data[l]["mu"], np.diag(b.data[l]["sigma"]))
        for l in NEURONS
    ])
    np.testing.assert_allclose(NFD(a, b), per.mean(), rtol=RTOL)


# ------------------------------------------------------------------------------------------------- FD
def test_fd_against_scipy_sqrtm(rng):
    a, b = make_dna("layer-gaussian", rng), make_dna("layer-gaussian", rng)
    per_layer = {l: fd_ref(a.data[l]["mu"], a.data[l]["sigma"], b.data[l]["mu"], b.data[l]["sigma"]) for l in NEURONS}
    # FD against SciPy's sqrtm on small well-conditioned covariances (condition number < 1e3 in dna_factory):
    # sqrtm's Schur route is accurate to ~cond * d * eps64 ~ 1e3 * 8 * 1.1e-16 ~ 1e-12 relative of the trace;
    # the FD is a difference of traces ~10x smaller than them, so 1e-9 relative is the derived bound with margin.
    np.testing.assert_allclose(FD(a, b), np.mean(list(per_layer.values())), rtol=1e-9)
    np.testing.assert_allclose(FD(a, b, use_neurons_from_layer="block_1"), per_layer["block_1"], rtol=1e-9)
    w = np.array([0.25, 3.0])
    np.testing.assert_allclose(FD(a, b, weights=w), 0.25 * per_layer["conv.a"] + 3.0 * per_layer["block_1"], rtol=1e-9)
    with pytest.raises(ValueError, match=r"one entry per selected layer \(2\)"):
        FD(a, b, weights=np.ones(8))
    assert FD(a, a) == pytest.approx(0.0, abs=1e-9)


def test_fd_single_neuron_and_neuron_wise_are_1d_frechet(rng):
    a, b = make_dna("layer-gaussian", rng), make_dna("layer-gaussian", rng)
    l = "block_1"
    per = nfd_ref(a.data[l]["mu"], np.diag(a.data[l]["sigma"]), b.data[l]["mu"], np.diag(b.data[l]["sigma"]))
    one = fd_ref(a.data[l]["mu"][3:4], a.data[l]["sigma"][3:4, 3:4], b.data[l]["mu"][3:4], b.data[l]["sigma"][3:4, 3:4])
    # 1-D Fréchet distances are closed forms (a few float64 ops): a few ulp, 1e-12 is the RTOL above.
    np.testing.assert_allclose(FD(a, b, use_neurons_from_layer=l, use_neuron_index=3), one, rtol=1e-12)
    np.testing.assert_allclose(FD(a, b, return_neuron_wise=True)[l], per, rtol=1e-12)


# ---------------------------------------------------------------------------------------- distances_to
def test_distances_to_matches_pairwise_calls(rng):
    ref = make_dna("histogram-9", rng)
    cands = [make_dna("histogram-9", rng) for _ in range(4)]
    got = distances_to(ref, cands)
    assert got.dtype == np.float64 and got.shape == (4,)
    np.testing.assert_allclose(got, [EMD(ref, c) for c in cands], rtol=RTOL)
    sel = dict(use_neurons_from_layer="block_1", use_neuron_index=2)
    np.testing.assert_allclose(distances_to(ref, cands, **sel), [EMD(ref, c, **sel) for c in cands], rtol=RTOL)
    w = rng.uniform(0, 1, 5)
    np.testing.assert_allclose(
        distances_to(ref, cands, use_neurons_from_layer="block_1", weights=w),
        [np.dot(w, emd_ref(ref.data["block_1"], c.data["block_1"])) for c in cands],
        rtol=RTOL,
    )
    assert distances_to(ref, []).shape == (0,)
    assert distances_to(ref, iter(cands[:2])).shape == (2,)


def test_distances_to_gaussians_and_metric_choice(rng):
    g = make_dna("gaussian", rng)
    gs = [make_dna("gaussian", rng) for _ in range(3)]
    np.testing.assert_allclose(distances_to(g, gs), [NFD(g, c) for c in gs], rtol=RTOL)
    lg = make_dna("layer-gaussian", rng)
    lgs = [make_dna("layer-gaussian", rng) for _ in range(3)]
    np.testing.assert_allclose(distances_to(lg, lgs), [FD(lg, c) for c in lgs], rtol=RTOL)
    np.testing.assert_allclose(distances_to(lg, lgs, metric="NFD"), [NFD(lg, c) for c in lgs], rtol=RTOL)
    with pytest.raises(ValueError, match="unknown metric"):
        distances_to(lg, lgs, metric="KL")
    with pytest.raises(ValueError, match="activation-ranges"):
        distances_to(make_dna("activation-ranges", rng), [])
    with pytest.raises(TypeError, match="sequence"):
        distances_to(g, g)


def test_distances_to_checks_every_candidate(rng):
    ref = make_dna("histogram-9", rng)
    other = make_dna("histogram-9", rng, extractor="vgg16")
    with pytest.raises(ValueError, match=r"candidate 1.*different feature extractors"):
        distances_to(ref, [make_dna("histogram-9", rng), other])


# ------------------------------------------------------------------------------------ compatibility
def test_incompatible_dnas_raise_value_error(rng):
    h = make_dna("histogram-9", rng)
    cases = [
        (make_dna("histogram-9", rng, extractor="vgg16"), "different feature extractors"),
        (make_dna("histogram-8", rng), r"different bin counts \(9 and 8\)"),
        (make_dna("histogram-9", rng, neurons={"conv.a": 3, "block_1": 4}), "different neuron lists"),
        (make_dna("histogram-9", rng, neurons={"conv.a": 3}), "different neuron lists"),
    ]
    for other, message in cases:
        with pytest.raises(ValueError, match=message):
            EMD(h, other)
    with pytest.raises(ValueError, match=r"EMD needs 'histogram' DNAs; argument 2 is a 'gaussian'"):
        EMD(h, make_dna("gaussian", rng))
    with pytest.raises(ValueError, match="NFD needs"):
        NFD(h, h)
    with pytest.raises(ValueError, match="FD needs 'layer-gaussian'"):
        FD(make_dna("gaussian", rng), make_dna("gaussian", rng))
    with pytest.raises(TypeError, match="must be a VDNA"):
        EMD(h, h.data)


def test_histograms_binned_with_different_ranges_do_not_compare(rng):
    a, b = make_dna("histogram-9", rng), make_dna("histogram-9", rng)
    a.meta["activation_ranges_sha256"] = "a" * 64
    b.meta["activation_ranges_sha256"] = "b" * 64
    with pytest.raises(ValueError, match="different activation ranges"):
        EMD(a, b)


def test_selection_errors(rng):
    a, b = make_dna("histogram-9", rng), make_dna("histogram-9", rng)
    with pytest.raises(ValueError, match="layer 'nope' is not in this DNA"):
        EMD(a, b, use_neurons_from_layer="nope")
    with pytest.raises(ValueError, match=r"neuron index 3 is out of range for layer 'conv.a' \(3 neurons\)"):
        EMD(a, b, use_neurons_from_layer="conv.a", use_neuron_index=3)
    with pytest.raises(ValueError, match="out of range"):
        EMD(a, b, use_neurons_from_layer="conv.a", use_neuron_index=-1)
    with pytest.raises(ValueError, match="needs use_neurons_from_layer"):
        EMD(a, b, use_neuron_index=0)
    with pytest.raises(ValueError, match="return_neuron_wise cannot be combined"):
        EMD(a, b, use_neurons_from_layer="conv.a", use_neuron_index=0, return_neuron_wise=True)
    with pytest.raises(TypeError, match="integer"):
        EMD(a, b, use_neurons_from_layer="conv.a", use_neuron_index=1.0)
    g = make_dna("layer-gaussian", rng)
    with pytest.raises(ValueError, match="is not in this DNA"):
        FD(g, g, use_neurons_from_layer="nope")


def test_checks_survive_python_O(tmp_path):
    """No input check relies on assert (python -O strips asserts)."""
    script = textwrap.dedent(
        """
        import numpy as np
        from vdna.dna import get_vdna
        from vdna import EMD
        def dna(extractor):
            v = get_vdna("histogram-3"); v.neurons_list = {"l": 1}; v.feature_extractor_name = extractor
            v.num_images = 1; v.data = {"l": np.ones((1, 3), np.int64)}; return v
        try:
            EMD(dna("a"), dna("b"))
        except ValueError as e:
            print("OK", e)
        """
    )
    out = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK") and "different feature extractors" in out.stdout
