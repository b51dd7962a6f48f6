"""ActivationRanges: parsing every accepted form, validation messages, reference JSON round trip."""
import json

import numpy as np
import pytest

from vdna.ranges import ActivationRanges

from dna_factory import make_dna

MINS = {"block_0": [-1.0, -2.0, 0.0], "last_norm": [-0.5, -3.0]}
MAXS = {"block_0": [1.0, 2.0, 0.0], "last_norm": [4.0, 3.5]}
NEURONS = {"block_0": 3, "last_norm": 2}


def _reference_json():
    return {
        "mins_per_neuron": {l: {str(i): v for i, v in enumerate(vals)} for l, vals in MINS.items()},
        "maxs_per_neuron": {l: {str(i): v for i, v in enumerate(vals)} for l, vals in MAXS.items()},
    }


def _check(r):
    assert r.layers == ["block_0", "last_norm"] and r.neurons_list == NEURONS
    for l in MINS:
        np.testing.assert_array_equal(r.mins[l], MINS[l])
        np.testing.assert_array_equal(r.maxs[l], MAXS[l])
        assert r.mins[l].dtype == np.float64


def test_all_input_forms_agree(tmp_path):
    pairs = ActivationRanges.from_any({l: (np.array(MINS[l], np.float32), MAXS[l]) for l in MINS})
    _check(pairs)
    _check(ActivationRanges.from_any(_reference_json()))
    path = tmp_path / "activation_ranges.json"
    path.write_text(json.dumps(_reference_json()))
    _check(ActivationRanges.from_any(str(path)))
    _check(ActivationRanges.from_any(path))
    dna = make_dna("activation-ranges", np.random.default_rng(0), neurons=NEURONS)
    for l in MINS:
        dna.data[l] = {"min": np.array(MINS[l]), "max": np.array(MAXS[l])}
    _check(ActivationRanges.from_any(dna))
    _check(ActivationRanges.from_any(pairs))
    assert len({r.checksum() for r in (pairs, ActivationRanges.from_any(path))}) == 1


def test_reference_json_keys_out_of_order_are_sorted_numerically():
    obj = {"mins_per_neuron": {"l": {"10": 10.0, "2": 2.0, **{str(i): float(i) for i in range(10) if i != 2}}},
           "maxs_per_neuron": {"l": {str(i): float(i) + 1 for i in range(11)}}}
    r = ActivationRanges.from_any(obj)
    np.testing.assert_array_equal(r.mins["l"], np.arange(11.0))


def test_to_reference_json_round_trip(tmp_path):
    r = ActivationRanges.from_any(_reference_json())
    out = r.to_reference_json()
    assert out == _reference_json()
    path = tmp_path / "r.json"
    path.write_text(json.dumps(out))
    assert ActivationRanges.from_any(path).checksum() == r.checksum()


def test_select_against_neurons_list():
    r = ActivationRanges.from_any(_reference_json(), neurons_list={"last_norm": 2})
    assert r.layers == ["last_norm"]
    with pytest.raises(ValueError, match="no layer 'block_9'"):
        ActivationRanges.from_any(_reference_json(), neurons_list={"block_9": 2})
    with pytest.raises(ValueError, match="layer 'block_0' have 3 neurons, the layer has 4"):
        ActivationRanges.from_any(_reference_json(), neurons_list={"block_0": 4})


@pytest.mark.parametrize(
    "mins, maxs, message",
    [
        ([0.0, 2.0], [1.0, 1.0], r"layer 'l', neuron 1: min 2.0 > max 1.0"),
        ([0.0, np.nan], [1.0, 1.0], r"layer 'l', neuron 1: min is nan"),
        ([0.0, 0.0], [np.inf, 1.0], r"layer 'l', neuron 0: max is inf"),
        ([0.0], [1.0, 1.0], r"1 mins but 2 maxs"),
        ([[0.0]], [[1.0]], r"must be 1-D"),
        ([], [], r"empty"),
    ],
)
def test_bad_values_name_layer_and_neuron(mins, maxs, message):
    with pytest.raises(ValueError, match=message):
        ActivationRanges.from_any({"l": (mins, maxs)})


def test_bad_structures(tmp_path):
    with pytest.raises(TypeError, match="numbers"):
        ActivationRanges.from_any({"l": (["a"], ["b"])})
    with pytest.raises(ValueError, match=r"\(mins, maxs\) pair"):
        ActivationRanges.from_any({"l": [0.0, 1.0, 2.0]})
    with pytest.raises(ValueError, match="missing or malformed 'maxs_per_neuron'"):
        ActivationRanges.from_any({"mins_per_neuron": {}})
    with pytest.raises(ValueError, match="layer 'l' is missing neuron 1"):
        ActivationRanges.from_any({"mins_per_neuron": {"l": {"0": 0.0, "2": 0.0}},
                                   "maxs_per_neuron": {"l": {"0": 1.0, "2": 1.0}}})
    with pytest.raises(TypeError):
        ActivationRanges.from_any(42)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json.*not valid JSON"):
        ActivationRanges.from_any(bad)
    nan_file = tmp_path / "nan.json"
    nan_file.write_text('{"mins_per_neuron": {"l": {"0": NaN}}, "maxs_per_neuron": {"l": {"0": 1.0}}}')
    with pytest.raises(ValueError, match=r"layer 'l', neuron 0: min is nan"):
        ActivationRanges.from_any(nan_file)


def test_input_arrays_are_copied():
    mins, maxs = np.array([0.0, 1.0]), np.array([1.0, 2.0])
    r = ActivationRanges.from_any({"l": (mins, maxs)})
    mins[0] = 5.0
    assert r.mins["l"][0] == 0.0


def test_a_dna_of_another_kind_is_not_ranges():
    with pytest.raises(ValueError, match="got a 'histogram' DNA"):
        ActivationRanges.from_any(make_dna("histogram-3", np.random.default_rng(0)))
