"""vdna.NeuronWeights: constructors, checks, files, and their use as ``weights=`` in every distance."""
import json

import numpy as np
import pytest

import vdna
from vdna import EMD, FD, NFD, NeuronWeights, distances_to
from vdna.files import save_vdna

from dna_factory import NEURONS, make_dna

EPS = np.finfo(np.float64).eps
N = sum(NEURONS.values())


def _sum_tol(n, magnitude):
    # a float64 sum/dot of n terms of size <= magnitude: at most n rounding steps of eps * |partial sum|
    return 4 * n * EPS * magnitude


@pytest.fixture
def hists():
    rng = np.random.default_rng(7)
    return make_dna("histogram-16", rng), make_dna("histogram-16", rng), make_dna("histogram-16", rng)


# ------------------------------------------------------------------------------------------- constructors
def test_uniform_is_the_plain_mean(hists):
    a, b, c = hists
    w = NeuronWeights.uniform(a)
    assert w.nonzero() == N and w.granularity == "neuron"
    np.testing.assert_array_equal(w.to_array(), np.full(N, 1.0 / N))
    # EMD in bins is at most 16: the weighted sum and the mean are both N-term reductions of values <= 16
    assert abs(EMD(a, b, weights=w) - EMD(a, b)) <= _sum_tol(N, 16.0)
    np.testing.assert_allclose(distances_to(a, [b, c], weights=w), distances_to(a, [b, c]), rtol=0,
                               atol=_sum_tol(N, 16.0))
    wl = NeuronWeights.uniform(a, granularity="layer")
    assert wl.to_dict() == {"conv.a": 0.5, "block_1": 0.5}


def test_from_dict_top_k_layers(hists):
    a = hists[0]
    per = {"conv.a": np.array([0.0, 1.0, 2.0]), "block_1": np.arange(5.0)}
    w = NeuronWeights.from_dict(per, like=a)
    np.testing.assert_array_equal(w.layer("block_1"), np.arange(5.0))
    d = w.to_dict()
    d["conv.a"][0] = 99.0  # a copy: the weights do not change
    assert w.layer("conv.a")[0] == 0.0
    assert w.normalized().total() == pytest.approx(1.0, abs=_sum_tol(N, 1.0))
    # one division each, by a sum of 8 small integers that is exact (13): at most 1 rounding, 2 eps to spare
    np.testing.assert_allclose(w.normalized().to_array(), w.to_array() / 13.0, rtol=2 * EPS)

    scores = {"conv.a": np.array([5.0, 1.0, 9.0]), "block_1": np.array([0.0, 7.0, 2.0, 9.0, -1.0])}
    top = NeuronWeights.top_k(scores, 3, like=a)
    # by hand: the 3 highest are conv.a[2]=9, block_1[3]=9 (ties in network order), block_1[1]=7
    np.testing.assert_array_equal(top.layer("conv.a"), [0, 0, 1 / 3])
    np.testing.assert_array_equal(top.layer("block_1"), [0, 1 / 3, 0, 1 / 3, 0])
    assert top.nonzero() == 3

    lw = NeuronWeights.layers(a, ["block_1"])
    np.testing.assert_array_equal(lw.to_array(), [0, 0, 0] + [0.2] * 5)
    assert EMD(a, hists[1], weights=lw) == pytest.approx(EMD(a, hists[1], use_neurons_from_layer="block_1"),
                                                         abs=_sum_tol(5, 16.0))


@pytest.mark.parametrize("bad, match", [
    (-1.0, ">= 0"), (np.nan, ">= 0"), (np.inf, ">= 0"),
])
def test_rejects_negative_nan_inf(hists, bad, match):
    per = {"conv.a": np.array([0.1, bad, 0.2]), "block_1": np.ones(5)}
    with pytest.raises(ValueError, match=match):
        NeuronWeights.from_dict(per, like=hists[0])
    flat = np.ones(N)
    flat[4] = bad
    with pytest.raises(ValueError, match=">= 0"):
        EMD(hists[0], hists[1], weights=flat)


def test_rejects_bad_shapes_and_layers(hists):
    a = hists[0]
    with pytest.raises(ValueError, match="layers"):
        NeuronWeights.from_dict({"conv.a": np.ones(3)}, like=a)
    with pytest.raises(ValueError, match="3 weight"):
        NeuronWeights.from_dict({"conv.a": np.ones(4), "block_1": np.ones(5)}, like=a)
    with pytest.raises(ValueError, match="one per neuron"):
        NeuronWeights.from_array(np.ones(N + 1), like=a)
    with pytest.raises(ValueError, match="k must be"):
        NeuronWeights.top_k({"conv.a": np.ones(3), "block_1": np.ones(5)}, 0, like=a)
    with pytest.raises(ValueError, match="NaN"):
        NeuronWeights.top_k({"conv.a": np.array([1, np.nan, 2]), "block_1": np.ones(5)}, 1, like=a)
    with pytest.raises(ValueError, match="all zero"):
        NeuronWeights.from_array(np.zeros(N), like=a).normalized()
    with pytest.raises(ValueError, match="does not have"):
        EMD(a, hists[1], weights={"conv.a": np.ones(3), "nope": np.ones(5)})


def test_mismatched_extractor_or_neurons(hists):
    a, b, _ = hists
    other_ext = make_dna("histogram-16", np.random.default_rng(1), extractor="other_net")
    other_neurons = make_dna("histogram-16", np.random.default_rng(1), neurons={"conv.a": 3, "block_1": 6})
    w = NeuronWeights.uniform(a)
    with pytest.raises(ValueError, match="extractor 'toy_net'.*'other_net'"):
        EMD(other_ext, other_ext, weights=w)
    with pytest.raises(ValueError, match="neurons list"):
        EMD(other_neurons, other_neurons, weights=w)
    with pytest.raises(ValueError, match="neurons list"):
        distances_to(other_neurons, [other_neurons], weights=w)


# ------------------------------------------------------------------------------------------- distances
def test_weighted_distances_match_numpy(hists):
    a, b, c = hists
    rng = np.random.default_rng(3)
    flat = rng.uniform(0, 1, N)
    w = NeuronWeights.from_array(flat, like=a)
    per = EMD(a, b, return_neuron_wise=True)
    expected = float(np.dot(flat, np.concatenate([per[l] for l in NEURONS])))
    tol = _sum_tol(N, 16.0)
    for form in (w, w.to_dict(), flat):
        assert abs(EMD(a, b, weights=form) - expected) <= tol
    # one layer: that layer's weights, not renormalised
    exp_layer = float(np.dot(w.layer("block_1"), per["block_1"]))
    assert abs(EMD(a, b, use_neurons_from_layer="block_1", weights=w) - exp_layer) <= tol
    assert abs(EMD(a, b, use_neurons_from_layer="block_1", use_neuron_index=2, weights=w)
               - w.layer("block_1")[2] * per["block_1"][2]) <= tol
    many = distances_to(a, [b, c], weights=w)
    assert abs(many[0] - expected) <= tol

    ga, gb = make_dna("gaussian", rng), make_dna("gaussian", rng)
    perg = NFD(ga, gb, return_neuron_wise=True)
    flatg = np.concatenate([perg[l] for l in NEURONS])
    mag = float(flatg.max())
    assert abs(NFD(ga, gb, weights=w) - np.dot(flat, flatg)) <= _sum_tol(N, mag)
    # layer weights used with NFD weigh each layer's mean distance
    wl = NeuronWeights.from_dict({"conv.a": 0.25, "block_1": 2.0}, like=ga)
    exp = 0.25 * perg["conv.a"].mean() + 2.0 * perg["block_1"].mean()
    assert abs(NFD(ga, gb, weights=wl) - exp) <= _sum_tol(N, 2 * mag)


def test_fd_takes_layer_weights(hists):
    rng = np.random.default_rng(4)
    la, lb = make_dna("layer-gaussian", rng), make_dna("layer-gaussian", rng)
    fd_l = {l: FD(la, lb, use_neurons_from_layer=l) for l in NEURONS}
    wl = NeuronWeights.from_dict({"conv.a": 0.25, "block_1": 2.0}, like=la)
    exp = 0.25 * fd_l["conv.a"] + 2.0 * fd_l["block_1"]
    for form in (wl, {"conv.a": 0.25, "block_1": 2.0}, np.array([0.25, 2.0])):
        assert abs(FD(la, lb, weights=form) - exp) <= _sum_tol(2, 2 * max(fd_l.values()))
    with pytest.raises(ValueError, match="granularity='layer'"):
        FD(la, lb, weights=NeuronWeights.uniform(la))
    with pytest.raises(ValueError, match="one weight"):
        FD(la, lb, weights={"conv.a": np.ones(3), "block_1": np.ones(5)})


# ------------------------------------------------------------------------------------------- files
def test_save_load_round_trip_and_csv(tmp_path, hists):
    a = hists[0]
    w = NeuronWeights.from_array(np.random.default_rng(5).uniform(0, 1, N), like=a)
    w.meta = {"note": "test"}
    w.save(tmp_path / "w")
    back = NeuronWeights.load(tmp_path / "w.json")
    assert back == w and back.meta == {"note": "test"}
    assert NeuronWeights.load(tmp_path / "w.npz") == w
    wl = NeuronWeights.from_dict({"conv.a": 0.25, "block_1": 2.0}, like=a)
    wl.save(tmp_path / "wl")
    assert NeuronWeights.load(tmp_path / "wl") == wl

    w.to_csv(tmp_path / "w.csv")
    rows = (tmp_path / "w.csv").read_text().splitlines()
    assert rows[0] == "layer,neuron,weight" and len(rows) == N + 1
    layer, idx, value = rows[5].split(",")  # the 5th neuron: block_1[1]
    assert layer == "block_1" and idx == "1" and float(value) == w.layer("block_1")[1]  # repr round-trips

    # from_file accepts the pair, a flat .npy and a {layer: list} .json, checked against the DNA
    np.save(tmp_path / "flat.npy", w.to_array())
    assert NeuronWeights.from_file(tmp_path / "flat.npy", like=a) == NeuronWeights(w.to_dict(), "toy_net", NEURONS)
    (tmp_path / "d.json").write_text(json.dumps({l: list(map(float, x)) for l, x in w.to_dict().items()}))
    assert NeuronWeights.from_file(tmp_path / "d.json", like=a).to_dict().keys() == w.to_dict().keys()
    assert NeuronWeights.from_file(tmp_path / "w", like=a) == w


def test_files_reject_tampering(tmp_path, hists):
    a = hists[0]
    w = NeuronWeights.uniform(a)
    w.save(tmp_path / "w")
    # another save's .npz beside this .json: the checksum differs
    NeuronWeights.from_array(np.ones(N), like=a).save(tmp_path / "other")
    (tmp_path / "w.npz").write_bytes((tmp_path / "other.npz").read_bytes())
    with pytest.raises(ValueError, match="sha256"):
        NeuronWeights.load(tmp_path / "w")
    # a truncated .npz
    w.save(tmp_path / "t")
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.npz"):
        NeuronWeights.load(tmp_path / "t")
    # an edited neurons list in the .json
    w.save(tmp_path / "e")
    header = json.loads((tmp_path / "e.json").read_text())
    header["neurons_list"]["block_1"] = 6
    (tmp_path / "e.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="e.npz"):
        NeuronWeights.load(tmp_path / "e")
    # a newer format, and a DNA file given as weights
    header = json.loads((tmp_path / "t.json").read_text())
    header["vdna_neuron_weights"]["format_version"] = 99
    (tmp_path / "t.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="upgrade vdna"):
        NeuronWeights.load(tmp_path / "t")
    save_vdna(a, str(tmp_path / "dna"))
    with pytest.raises(ValueError, match="not a neuron weights file"):
        NeuronWeights.load(tmp_path / "dna")
    with pytest.raises(FileNotFoundError):
        NeuronWeights.load(tmp_path / "missing")
    # a pickled object array is never unpickled
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        NeuronWeights.from_file(tmp_path / "obj.npy", like=a)


def test_exported():
    for name in ("NeuronWeights", "sensitivity", "learn_weights", "sensitivity_deviation", "evaluate_weights"):
        assert name in vdna.__all__ and hasattr(vdna, name)
