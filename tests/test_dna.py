"""VDNA objects: distribution names, accessors, repr, merge."""
import numpy as np
import pytest

import vdna
from vdna.dna import VDNAActivationRanges, VDNAGauss, VDNAHist, VDNALayerGauss, get_vdna, parse_distribution_name

from dna_factory import NEURONS, make_dna

TOTAL = sum(NEURONS.values())


@pytest.fixture
def rng():
    return np.random.default_rng(99)


@pytest.mark.parametrize(
    "name, cls, kind",
    [
        ("histogram-1000", VDNAHist, "histogram"),
        ("histogram-1", VDNAHist, "histogram"),
        ("gaussian", VDNAGauss, "gaussian"),
        ("layer-gaussian", VDNALayerGauss, "layer-gaussian"),
        ("activation-ranges", VDNAActivationRanges, "activation-ranges"),
    ],
)
def test_get_vdna(name, cls, kind):
    v = vdna.get_vdna(name)
    assert type(v) is cls and isinstance(v, vdna.VDNA)
    assert v.type == kind and v.name == name
    assert v.num_images == 0 and v.device == "cpu" and v.loaded_from_path == "NotLoaded"
    if kind == "histogram":
        assert v.hist_nb_bins == int(name.split("-")[1])


@pytest.mark.parametrize(
    "name, message",
    [
        ("histogram-0", ">= 1"),
        ("histogram--3", "positive integer"),
        ("histogram-1.5", "positive integer"),
        ("histogram-", "positive integer"),
        ("histogram", "unknown distribution"),
        ("Gaussian", "unknown distribution"),
        ("kde", "unknown distribution"),
    ],
)
def test_bad_distribution_names(name, message):
    with pytest.raises(ValueError, match=message):
        get_vdna(name)
    with pytest.raises(TypeError):
        parse_distribution_name(3)


def test_histogram_accessors(rng):
    v = make_dna("histogram-6", rng)
    assert v.get_neuron_dist("block_1", 2).shape == (1, 6)
    np.testing.assert_array_equal(v.get_neuron_dist("block_1", 2)[0], v.data["block_1"][2])
    assert v.get_all_neurons_in_layer_dist("conv.a").shape == (3, 6)
    allh = v.get_all_neurons_dists()
    assert allh.shape == (TOTAL, 6)
    np.testing.assert_array_equal(allh[3:], v.data["block_1"])


def test_gaussian_and_ranges_accessors(rng):
    for kind, keys in (("gaussian", ("mu", "var")), ("activation-ranges", ("min", "max"))):
        v = make_dna(kind, rng)
        one = v.get_neuron_dist("block_1", 4)
        assert list(one) == list(keys) and one[keys[0]] == v.data["block_1"][keys[0]][4]
        layer = v.get_all_neurons_in_layer_dist("conv.a")
        assert layer[keys[1]].shape == (3,)
        allv = v.get_all_neurons_dists()
        assert allv[keys[0]].shape == (TOTAL,)
        np.testing.assert_array_equal(allv[keys[1]][:3], v.data["conv.a"][keys[1]])


def test_layer_gaussian_accessors(rng):
    v = make_dna("layer-gaussian", rng)
    one = v.get_neuron_dist("block_1", 1)
    assert one["mu"] == v.data["block_1"]["mu"][1] and one["sigma"] == v.data["block_1"]["sigma"][1, 1]
    layer = v.get_all_neurons_in_layer_dist("block_1")
    assert layer["mu"].shape == (5,) and layer["sigma"].shape == (5, 5)
    allv = v.get_all_neurons_dists()
    assert list(allv) == list(NEURONS) and allv["conv.a"]["sigma"].shape == (3, 3)


def test_accessor_errors(rng):
    v = make_dna("gaussian", rng)
    with pytest.raises(ValueError, match="layer 'x' is not in this DNA"):
        v.get_all_neurons_in_layer_dist("x")
    with pytest.raises(ValueError, match="neuron index 5 is out of range for layer 'block_1'"):
        v.get_neuron_dist("block_1", 5)
    with pytest.raises(TypeError, match="integer"):
        v.get_neuron_dist("block_1", True)


def test_repr_is_readable(rng):
    v = make_dna("histogram-6", rng, num_images=12)
    v.meta["nan_counts"] = {"conv.a": 3, "block_1": 0}
    text = repr(v)
    assert text.startswith("VDNA(") and "name='histogram-6'" in text and "feature_extractor='toy_net'" in text
    assert "num_images=12" in text and "layers=2" in text and f"neurons={TOTAL}" in text and "nan_values=3" in text


def test_merge_histograms_and_ranges_exact(rng):
    a, b = make_dna("histogram-6", rng, num_images=3), make_dna("histogram-6", rng, num_images=4)
    a.meta = {"nan_counts": {"conv.a": 1, "block_1": 0}, "skipped_files": ["a.png"], "resize_mode": "clean"}
    b.meta = {"nan_counts": {"conv.a": 2, "block_1": 5}, "skipped_files": ["b.png"]}
    m = a.merge(b)
    assert type(m) is VDNAHist and m.num_images == 7 and m.name == "histogram-6"
    for l in NEURONS:
        np.testing.assert_array_equal(m.data[l], a.data[l] + b.data[l])
    assert m.meta == {"nan_counts": {"conv.a": 3, "block_1": 5}, "skipped_files": ["a.png", "b.png"],
                      "resize_mode": "clean"}
    # the inputs are untouched
    assert a.num_images == 3 and a.meta["nan_counts"]["conv.a"] == 1

    r1, r2 = make_dna("activation-ranges", rng), make_dna("activation-ranges", rng)
    r = r1.merge(r2)
    for l in NEURONS:
        np.testing.assert_array_equal(r.data[l]["min"], np.minimum(r1.data[l]["min"], r2.data[l]["min"]))
        np.testing.assert_array_equal(r.data[l]["max"], np.maximum(r1.data[l]["max"], r2.data[l]["max"]))


def _gaussians_from_samples(kind, per_image_means):
    """A DNA whose statistics are computed directly (NumPy) from per-image mean vectors {layer: (N, C)}."""
    v = get_vdna(kind)
    v.feature_extractor_name = "toy_net"
    v.neurons_list = {l: x.shape[1] for l, x in per_image_means.items()}
    v.num_images = next(iter(per_image_means.values())).shape[0]
    for l, x in per_image_means.items():
        if kind == "gaussian":
            v.data[l] = {"mu": x.mean(0), "var": x.var(0, ddof=1) if len(x) > 1 else np.zeros(x.shape[1])}
        else:
            v.data[l] = {"mu": x.mean(0), "sigma": np.cov(x.T) if len(x) > 1 else np.zeros((x.shape[1],) * 2)}
    return v


@pytest.mark.parametrize("kind", ["gaussian", "layer-gaussian"])
@pytest.mark.parametrize("n1, n2", [(6, 9), (1, 5), (1, 1)])
def test_merge_gaussians_equals_statistics_of_the_union(rng, kind, n1, n2):
    # A large common offset: the merge must stay accurate when |mean| >> spread. Both sides are float64
    # two-pass/Chan computations on 15 values; 1e-12 relative (of the largest entry) is far above rounding.
    xs = {l: 1e3 + rng.normal(size=(n1 + n2, c)) for l, c in NEURONS.items()}
    a = _gaussians_from_samples(kind, {l: x[:n1] for l, x in xs.items()})
    b = _gaussians_from_samples(kind, {l: x[n1:] for l, x in xs.items()})
    whole = _gaussians_from_samples(kind, xs)
    m = a.merge(b)
    assert m.num_images == n1 + n2 and type(m) is type(whole)
    for l in NEURONS:
        for key in whole.data[l]:
            scale = np.abs(whole.data[l][key]).max()
            # Merged vs whole: float64 states reduced in another order, <= n*eps64 relative to the scale (~1e-14).
            np.testing.assert_allclose(m.data[l][key], whole.data[l][key], rtol=1e-12, atol=1e-12 * scale)


def test_merge_with_an_empty_dna(rng):
    a = make_dna("gaussian", rng, num_images=5)
    empty = make_dna("gaussian", rng, num_images=0)
    m = a.merge(empty)
    assert m.num_images == 5
    np.testing.assert_array_equal(m.data["block_1"]["var"], a.data["block_1"]["var"])


def test_merge_incompatible(rng):
    a = make_dna("histogram-6", rng)
    with pytest.raises(ValueError, match="merge: different distribution types"):
        a.merge(make_dna("gaussian", rng))
    with pytest.raises(ValueError, match="different bin counts"):
        a.merge(make_dna("histogram-5", rng))
    with pytest.raises(ValueError, match="different feature extractors"):
        a.merge(make_dna("histogram-6", rng, extractor="other"))
    with pytest.raises(ValueError, match="different neuron lists"):
        a.merge(make_dna("histogram-6", rng, neurons={"conv.a": 3}))
