"""DNA files written by the reference package (vdna 0.1.1) load with our loader, to the exact values.

The files in tests/fixtures/reference/ and its expected.json were made by the reference package
itself (tests/fixtures/reference/make_fixtures.py, run in a separate environment with vdna==0.1.1);
nothing here needs the reference installed. expected.json also holds the reference's own EMD / NFD /
FD between pairs of those files, which ours must reproduce.
"""
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

import vdna

REF_DIR = Path(__file__).parent / "fixtures" / "reference"
EXPECTED = json.loads((REF_DIR / "expected.json").read_text())
FIXTURES = EXPECTED["fixtures"]
STEMS = sorted(FIXTURES)
PICKLING_STEMS = [s for s in STEMS if FIXTURES[s]["placeholder_keys"]]

# npz key of each statistic, per type ("{layer}" for histograms).
STAT_KEYS = {
    "histogram": {None: "{layer}"},
    "gaussian": {"mu": "mu-{layer}", "var": "var-{layer}"},
    "layer-gaussian": {"mu": "mu-{layer}", "sigma": "sigma-{layer}"},
    "activation-ranges": {"min": "min-{layer}", "max": "max-{layer}"},
}

# The reference's JSON keys, in its order (the reference package vdna 0.1.1; docs/design.md, "Files").
REFERENCE_JSON_KEYS = [
    "time_of_compute", "vdna_version", "distribution", "type", "name", "data_settings",
    "extraction_settings", "num_images", "feature_extractor_name", "neurons_list",
]


def _load(stem):
    return vdna.load_vdna_from_files(str(REF_DIR / stem))


def _expected_array(stem, key):
    entry = FIXTURES[stem]["arrays"][key]
    return np.array(entry["values"], dtype=entry["dtype"]).reshape(entry["shape"])


def _loaded_stat(dna, layer, stat):
    value = dna.data[layer] if stat is None else dna.data[layer][stat]
    return np.asarray(value)


def _assert_same_values(got, want, what):
    """Exact equality, whatever width our loader keeps (float32 -> float64 is exact)."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "iu":
        assert got.dtype.kind in "iu", f"{what}: counts loaded as {got.dtype}"
        assert np.array_equal(got.astype(np.int64), want.astype(np.int64)), what
    else:
        assert got.dtype.kind == "f", f"{what}: loaded as {got.dtype}"
        assert got.dtype.itemsize >= want.dtype.itemsize, f"{what}: {want.dtype} narrowed to {got.dtype}"
        assert np.array_equal(got.astype(np.float64), want.astype(np.float64)), what


# ---------------------------------------------------------------------------------------- the fixtures
@pytest.mark.parametrize("stem", STEMS)
def test_fixture_files_hold_what_expected_json_says(stem):
    """Guards the fixtures themselves (independently of our loader), e.g. after regenerating them."""
    fx = FIXTURES[stem]
    meta = json.loads((REF_DIR / f"{stem}.json").read_text())
    assert list(meta) == REFERENCE_JSON_KEYS == fx["json_keys"]
    assert meta["vdna_version"] == "0.1.1"
    with zipfile.ZipFile(REF_DIR / f"{stem}.npz") as zf:
        assert [n[: -len(".npy")] for n in zf.namelist()] == fx["npz_keys"]
    with np.load(REF_DIR / f"{stem}.npz", allow_pickle=False) as npz:
        for key in fx["arrays"]:
            want = _expected_array(stem, key)
            assert npz[key].dtype == want.dtype and np.array_equal(npz[key], want), key
        for key in fx["placeholder_keys"]:
            with pytest.raises(ValueError, match="allow_pickle"):
                npz[key]


# ---------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("stem", STEMS)
def test_reference_metadata_loads(stem):
    fx = FIXTURES[stem]
    dna = _load(stem)
    assert isinstance(dna, vdna.VDNA)
    assert dna.type == fx["type"]
    assert dna.name == fx["name"]
    assert dna.num_images == fx["num_images"]
    assert dna.feature_extractor_name == fx["feature_extractor_name"]
    assert dict(dna.neurons_list) == fx["neurons_list"]
    assert list(dna.neurons_list) == list(fx["neurons_list"])  # network order kept
    if fx["type"] == "histogram":
        assert dna.hist_nb_bins == fx["hist_nb_bins"] == 8
    assert dna.device == "cpu"
    for attr, key in (("data_settings_used", "data_settings"), ("extraction_settings_used", "extraction_settings")):
        settings = getattr(dna, attr)
        assert {k: getattr(settings, k) for k in fx[key]} == fx[key], attr


@pytest.mark.parametrize("stem", STEMS)
def test_reference_arrays_load_exactly(stem):
    fx = FIXTURES[stem]
    dna = _load(stem)
    # Only the layers: the reference's pickled placeholder entries (named like the layers) add nothing.
    assert list(dna.data) == list(fx["neurons_list"])
    n_checked = 0
    for layer in fx["neurons_list"]:
        stats = STAT_KEYS[fx["type"]]
        if fx["type"] != "histogram":
            assert set(dna.data[layer]) == set(stats), layer
        for stat, key_pattern in stats.items():
            key = key_pattern.format(layer=layer)
            _assert_same_values(_loaded_stat(dna, layer, stat), _expected_array(stem, key), f"{stem}:{key}")
            n_checked += 1
    assert n_checked == len(fx["arrays"])  # every array of the file was compared


@pytest.mark.parametrize("stem", STEMS)
def test_reference_accessors(stem):
    fx = FIXTURES[stem]
    dna = _load(stem)
    layer, idx = "block_1", 2
    if fx["type"] == "histogram":
        counts = _expected_array(stem, layer)
        assert np.array_equal(np.asarray(dna.get_neuron_dist(layer, idx)), counts[idx].reshape(1, -1))
        assert np.array_equal(np.asarray(dna.get_all_neurons_in_layer_dist(layer)), counts)
        every = np.concatenate([_expected_array(stem, l) for l in fx["neurons_list"]])
        assert np.array_equal(np.asarray(dna.get_all_neurons_dists()), every)
        assert every.shape == (8, 8)
    elif fx["type"] == "layer-gaussian":
        mu, sigma = _expected_array(stem, f"mu-{layer}"), _expected_array(stem, f"sigma-{layer}")
        one = dna.get_neuron_dist(layer, idx)
        assert float(one["mu"]) == mu[idx] and float(one["sigma"]) == sigma[idx, idx]
        whole = dna.get_all_neurons_in_layer_dist(layer)
        assert np.array_equal(np.asarray(whole["sigma"]), sigma)
    else:
        for stat, key_pattern in STAT_KEYS[fx["type"]].items():
            want = _expected_array(stem, key_pattern.format(layer=layer))
            assert float(dna.get_neuron_dist(layer, idx)[stat]) == want[idx]
            assert np.array_equal(np.asarray(dna.get_all_neurons_in_layer_dist(layer)[stat]), want)
            every = np.concatenate([_expected_array(stem, key_pattern.format(layer=l)) for l in fx["neurons_list"]])
            assert np.array_equal(np.asarray(dna.get_all_neurons_dists()[stat]), every)


@pytest.mark.parametrize("stem", PICKLING_STEMS)
def test_reference_placeholders_are_never_unpickled(stem, monkeypatch):
    fx = FIXTURES[stem]
    assert set(fx["placeholder_keys"]) == set(fx["neurons_list"])  # one pickled {} per layer
    for info in fx["placeholder_keys"].values():
        assert info == {"dtype": "object", "shape": []}

    def tripwire(*args, **kwargs):
        raise AssertionError("something tried to unpickle a DNA file")

    monkeypatch.setattr(pickle, "load", tripwire)
    monkeypatch.setattr(pickle, "loads", tripwire)
    # The tripwire works: unpickling the placeholder the permissive way trips it.
    with np.load(REF_DIR / f"{stem}.npz", allow_pickle=True) as npz:
        with pytest.raises(AssertionError, match="unpickle"):
            npz[next(iter(fx["placeholder_keys"]))]

    dna = _load(stem)
    assert list(dna.data) == list(fx["neurons_list"])


# ---------------------------------------------------------------------------------------- distances
def _distance_cases():
    return sorted(EXPECTED["distances"])


def _tolerance(dtype_name):
    if dtype_name == "torch.float64":
        # Both sides compute in float64; FD differs in method (scipy sqrtm there, factors and an SVD here).
        return dict(rtol=1e-9, atol=1e-12)
    # The reference computed these in float32 (float32 data, float32 result buffers, or
    # torch.Tensor(list) for FD's mean over layers): agreement to float32 precision, with
    # room for the cancellation in v1 + v2 - 2*sqrt(v1*v2).
    return dict(rtol=1e-5, atol=1e-6)  # derived above


def test_self_distances_are_zero():
    hist = _load("ref_histogram-8")
    assert float(vdna.EMD(hist, hist)) == 0.0
    for layer, count in hist.neurons_list.items():
        assert float(vdna.EMD(hist, hist, use_neurons_from_layer=layer)) == 0.0
        assert float(vdna.EMD(hist, hist, use_neurons_from_layer=layer, use_neuron_index=count - 1)) == 0.0
    per_neuron = vdna.EMD(hist, hist, return_neuron_wise=True)
    assert list(per_neuron) == list(hist.neurons_list)
    for layer, values in per_neuron.items():
        assert np.array_equal(np.asarray(values), np.zeros(hist.neurons_list[layer]))

    gauss = _load("ref_gaussian")
    assert float(vdna.NFD(gauss, gauss)) == 0.0  # sqrt(v*v) == v exactly in IEEE arithmetic
    for layer, values in vdna.NFD(gauss, gauss, return_neuron_wise=True).items():
        assert np.array_equal(np.asarray(values), np.zeros(gauss.neurons_list[layer]))

    lg = _load("ref_layer-gaussian")
    assert float(vdna.NFD(lg, lg)) == 0.0
    # FD(a, a) = 2 tr(S) - 2 sum sqrt(eig(S^2)) is 0 up to the eigen-solver's rounding.
    trace = max(float(np.trace(np.asarray(lg.data[l]["sigma"]))) for l in lg.neurons_list)
    assert abs(float(vdna.FD(lg, lg))) <= 1e-12 * trace
    for layer in lg.neurons_list:
        assert abs(float(vdna.FD(lg, lg, use_neurons_from_layer=layer))) <= 1e-12 * trace


@pytest.mark.parametrize("case", _distance_cases())
def test_distances_match_the_reference(case):
    entry = EXPECTED["distances"][case]
    dist = getattr(vdna, case.split("(")[0])
    a, b = _load(entry["a"]), _load(entry["b"])

    want = entry["all"]
    np.testing.assert_allclose(float(dist(a, b)), want["value"], **_tolerance(want["dtype"]))
    for layer, want in entry["per_layer"].items():
        got = float(dist(a, b, use_neurons_from_layer=layer))
        np.testing.assert_allclose(got, want["value"], **_tolerance(want["dtype"]), err_msg=layer)
    if "neuron_wise" in entry:
        want = entry["neuron_wise"]
        got = dist(a, b, return_neuron_wise=True)
        assert list(got) == list(want["value"])
        for layer, values in want["value"].items():
            np.testing.assert_allclose(np.asarray(got[layer]), values, **_tolerance(want["dtype"]), err_msg=layer)
        n = entry["neuron"]
        got = float(dist(a, b, use_neurons_from_layer=n["layer"], use_neuron_index=n["index"]))
        np.testing.assert_allclose(got, n["value"]["value"], **_tolerance(n["value"]["dtype"]))
    # Symmetric, as all three distances are (FD only up to the eigen-solver's rounding).
    np.testing.assert_allclose(float(dist(b, a)), float(dist(a, b)), rtol=1e-9)


# ---------------------------------------------------------------------------------------- saving back
@pytest.mark.parametrize("stem", STEMS)
def test_resaved_reference_dna_keeps_the_reference_layout(stem, tmp_path):
    """What the reference's loader needs from our files, checked without the reference installed.

    (check_our_files_load_in_reference.py runs the reference itself on our files.)
    """
    fx = FIXTURES[stem]
    dna = _load(stem)
    dna.save(str(tmp_path / "resaved"))
    meta = json.loads((tmp_path / "resaved.json").read_text())
    # Its keys in its order; anything of ours only under top-level keys it ignores.
    assert list(meta)[: len(REFERENCE_JSON_KEYS)] == REFERENCE_JSON_KEYS
    # It rebuilds DataSettings(**d) / ExtractionSettings(**d): exactly these fields, same values.
    assert meta["data_settings"] == fx["data_settings"]
    assert meta["extraction_settings"] == fx["extraction_settings"]
    for key in ("type", "name", "num_images", "feature_extractor_name", "neurons_list"):
        assert meta[key] == fx[key], key
    assert meta["distribution"] == ({"hist_nb_bins": fx["hist_nb_bins"]} if fx["type"] == "histogram" else {})

    with np.load(tmp_path / "resaved.npz", allow_pickle=False) as npz:
        keys = list(npz.files)
        if fx["type"] == "histogram":
            # Its histogram loader takes every key of the .npz as a layer: nothing else may be there.
            assert keys == list(fx["neurons_list"])
            assert all(npz[k].dtype == np.int32 for k in keys)  # counts fit int32: written as int32
        else:
            assert sorted(keys) == sorted(fx["arrays"])  # no placeholders written back
        for key in fx["arrays"]:
            _assert_same_values(npz[key], _expected_array(stem, key), f"resaved {stem}:{key}")
    # and it loads again here, with every check of a load (a float32 covariance saved in float64
    # keeps its float32 rounding: the PSD tolerance allows for it)
    again = vdna.load_vdna_from_files(str(tmp_path / "resaved"))
    for layer in dna.data:
        a, b = dna.data[layer], again.data[layer]
        for k in (a if isinstance(a, dict) else [None]):
            np.testing.assert_array_equal(np.asarray(b if k is None else b[k]), np.asarray(a if k is None else a[k]))
