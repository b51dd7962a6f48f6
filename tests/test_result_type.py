"""The opt-in torch result type (vdna 0.1.1 returned torch tensors): distances, neuron-wise dicts and
the get_*_dist accessors as tensors on the DNA's device; NumPy stays the default."""
import numpy as np
import pytest
import torch

import vdna
from vdna import EMD, FD, NFD, distances_to
from vdna.distances import metric_function
from vdna.results import numpy_results

from dna_factory import make_dna


@pytest.fixture
def result_type(monkeypatch):
    """Each test starts from the default (no explicit choice, no VDNA_RESULTS) and restores it."""
    monkeypatch.delenv("VDNA_RESULTS", raising=False)
    vdna.set_result_type(None)
    yield vdna.set_result_type
    vdna.set_result_type(None)


@pytest.fixture
def pairs():
    rng = np.random.default_rng(11)
    return {kind: (make_dna(kind, rng), make_dna(kind, rng))
            for kind in ("histogram-20", "gaussian", "layer-gaussian", "activation-ranges")}


def _calls(pairs):
    """(name, call) for every distance form 0.1.1 had; each call returns a value or a neuron-wise dict."""
    h, g, lg = pairs["histogram-20"], pairs["gaussian"], pairs["layer-gaussian"]
    return [
        ("EMD", lambda: EMD(*h)),
        ("EMD layer", lambda: EMD(*h, use_neurons_from_layer="block_1")),
        ("EMD neuron", lambda: EMD(*h, use_neurons_from_layer="block_1", use_neuron_index=2)),
        ("EMD neuron-wise", lambda: EMD(*h, return_neuron_wise=True)),
        ("EMD weights", lambda: EMD(*h, weights=np.arange(8.0))),
        ("NFD", lambda: NFD(*g)),
        ("NFD neuron-wise", lambda: NFD(*g, return_neuron_wise=True)),
        ("FD", lambda: FD(*lg)),
        ("FD layer", lambda: FD(*lg, use_neurons_from_layer="conv.a")),
        ("FD neuron-wise", lambda: FD(*lg, return_neuron_wise=True)),
    ]


def _accessors(pairs):
    out = []
    for kind, (a, _) in pairs.items():
        out += [(f"{kind} neuron", lambda a=a: a.get_neuron_dist("block_1", 3)),
                (f"{kind} layer", lambda a=a: a.get_all_neurons_in_layer_dist("conv.a")),
                (f"{kind} all", lambda a=a: a.get_all_neurons_dists())]
    return out


def _assert_torch_equals(got, want, path):
    """``got`` has ``want``'s structure with every leaf a CPU tensor holding exactly ``want``'s values
    (the conversion copies values, it computes nothing: equality is exact)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), path
        for k in want:
            _assert_torch_equals(got[k], want[k], f"{path}[{k!r}]")
        return
    assert isinstance(got, torch.Tensor), f"{path}: {type(got).__name__}"
    assert got.device == torch.device("cpu"), path
    w = np.asarray(want)
    assert tuple(got.shape) == w.shape, path
    assert got.dtype == torch.from_numpy(np.ascontiguousarray(w)).dtype, path
    np.testing.assert_array_equal(got.numpy(), w, err_msg=path)


def test_numpy_is_the_default(result_type, pairs):
    assert vdna.get_result_type() == "numpy"
    for name, call in _calls(pairs) + _accessors(pairs):
        out = call()
        leaves = out.values() if isinstance(out, dict) else [out]
        for leaf in leaves:
            leaf = leaf.values() if isinstance(leaf, dict) else [leaf]
            for x in leaf:
                assert isinstance(x, (np.ndarray, np.generic)), name


@pytest.mark.parametrize("how", ["function", "env"])
def test_torch_results_hold_the_numpy_values(result_type, pairs, monkeypatch, how):
    expected = {name: call() for name, call in _calls(pairs) + _accessors(pairs)}
    if how == "function":
        result_type("torch")
    else:
        monkeypatch.setenv("VDNA_RESULTS", "Torch")
    assert vdna.get_result_type() == "torch"
    for name, call in _calls(pairs) + _accessors(pairs):
        _assert_torch_equals(call(), expected[name], name)
    # 0.1.1 code: neuron-wise results concatenated with torch.cat, scalars used with .item()
    h = pairs["histogram-20"]
    assert torch.equal(EMD(vdna2=h[1], vdna1=h[0]), EMD(*h))  # keywords work too
    per_neuron = torch.cat(list(EMD(*h, return_neuron_wise=True).values()))
    assert per_neuron.shape == (8,)
    assert EMD(*h).item() == pytest.approx(float(expected["EMD"]), abs=0)
    # our own helpers stay NumPy
    assert isinstance(distances_to(h[0], [h[1]]), np.ndarray)
    assert isinstance(metric_function("EMD")(*h), np.floating)
    with numpy_results():
        assert isinstance(EMD(*h), np.floating)
    assert isinstance(EMD(*h), torch.Tensor)


def test_explicit_choice_beats_env_and_none_goes_back(result_type, pairs, monkeypatch):
    h = pairs["histogram-20"]
    monkeypatch.setenv("VDNA_RESULTS", "torch")
    result_type("numpy")
    assert isinstance(EMD(*h), np.floating)
    result_type(None)
    assert isinstance(EMD(*h), torch.Tensor)


def test_tensors_go_to_the_dna_device(result_type, pairs):
    result_type("torch")
    a, b = pairs["gaussian"]
    a.device = b.device = "meta"  # a device that exists everywhere without a GPU
    out = NFD(a, b, return_neuron_wise=True)
    assert all(t.device.type == "meta" for t in out.values())
    assert a.get_all_neurons_in_layer_dist("conv.a")["mu"].device.type == "meta"


def test_bad_choices_are_clear_errors(result_type, pairs, monkeypatch):
    with pytest.raises(ValueError, match="set_result_type must be 'numpy' or 'torch'"):
        result_type("tensorflow")
    monkeypatch.setenv("VDNA_RESULTS", "jax")
    with pytest.raises(ValueError, match="VDNA_RESULTS must be 'numpy' or 'torch'"):
        vdna.get_result_type()
    monkeypatch.setenv("VDNA_RESULTS", "torch")
    a, b = pairs["histogram-20"]
    a.device = "no-such-device:0"
    with pytest.raises(ValueError, match="DNA's device 'no-such-device:0'.*set dna.device"):
        EMD(a, b)
