"""Accumulator state as a value: state_dict / load_state_dict / pickling, and exact merges of shards.

Round trips compare the computed DNAs bit for bit (a state holds the exact float64 / int64 values).
Merges of shards are compared with one-process accumulation and with NumPy references
(tests/reference_binning.py for counts; a two-pass float64 computation for moments).
"""
import io
import pickle
import warnings

import numpy as np
import pytest
import torch

from reference_binning import reference_histogram
from vdna import Accumulator
from vdna.accumulator_state import STATE_VERSION

NEURONS = {"conv": 3, "tok": 4}
LAYOUTS = {"conv": "channels", "tok": "tokens"}
KINDS = ["histogram-9", "gaussian", "layer-gaussian", "activation-ranges"]
EPS = np.finfo(np.float64).eps


def ranges():
    return {"conv": (np.array([-1.0, -0.5, 0.0]), np.array([1.0, 2.0, 0.5])),
            "tok": (np.array([-2.0, -2.0, -1.0, -0.1]), np.array([2.0, 0.5, 3.0, 0.1]))}


def new(kind):
    return Accumulator(kind, NEURONS, activation_ranges=ranges() if kind.startswith("histogram") else None,
                       layouts=LAYOUTS, feature_extractor_name="test")


def batch(rng, n):
    b = {"conv": rng.normal(size=(n, 3, 2, 3)) * 1.5, "tok": rng.normal(size=(n, 5, 4)) * 1.5}
    b["conv"][0, 1, 0, 0] = np.nan  # NaN counts must travel with the state
    b["tok"][0, 2, 3] = np.inf
    return b


def results(acc):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = acc.compute()
    return v.data, v.num_images, v.meta["nan_counts"]


def assert_same(a, b):
    da, na, nana = results(a)
    db, nb, nanb = results(b)
    assert na == nb and nana == nanb
    for layer in da:
        if isinstance(da[layer], dict):
            for k in da[layer]:
                np.testing.assert_array_equal(da[layer][k], db[layer][k])  # bit-identical (NaN == NaN here)
        else:
            np.testing.assert_array_equal(da[layer], db[layer])
    for layer in NEURONS:
        np.testing.assert_array_equal(a.nan_counts[layer], b.nan_counts[layer])


def filled(kind, seed=0, batches=3):
    rng = np.random.default_rng(seed)
    acc = new(kind)
    for _ in range(batches):
        acc.update(batch(rng, 4))
    return acc


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips_exactly(kind):
    acc = filled(kind)
    acc.meta["note"] = "kept"
    state = acc.state_dict()
    assert state["version"] == STATE_VERSION and state["num_images"] == 12

    def plain(obj):  # only str / int / NumPy arrays / dicts of them
        if isinstance(obj, dict):
            return all(isinstance(k, str) and plain(v) for k, v in obj.items())
        return isinstance(obj, (str, int, np.ndarray))

    assert plain(state)
    back = Accumulator.from_state_dict(state)
    assert_same(acc, back)
    assert back.meta["note"] == "kept"
    other = new(kind)
    other.load_state_dict(state)
    assert_same(acc, other)
    assert_same(acc, pickle.loads(pickle.dumps(acc)))
    # the state is a copy: changing the accumulator afterwards does not change it
    acc.update(batch(np.random.default_rng(9), 2))
    assert_same(Accumulator.from_state_dict(state), back)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_loads_with_torch_weights_only(kind):
    acc = filled(kind)
    buf = io.BytesIO()
    torch.save(acc.state_dict(as_tensors=True), buf)
    buf.seek(0)
    assert_same(acc, Accumulator.from_state_dict(torch.load(buf, weights_only=True)))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_state_round_trips_and_merging_it_changes_nothing(kind):
    empty = Accumulator.from_state_dict(new(kind).state_dict())
    assert empty.num_images == 0
    acc = filled(kind)
    ref = Accumulator.from_state_dict(acc.state_dict())
    acc.merge(empty)
    assert_same(acc, ref)


def test_load_state_dict_refuses_incompatible_or_corrupt_states_and_changes_nothing():
    acc = filled("histogram-9")
    before = acc.state_dict()
    good = filled("histogram-9", seed=1).state_dict()

    def refused(state, match):
        with pytest.raises(ValueError, match=match):
            acc.load_state_dict(state)
        assert_same(acc, Accumulator.from_state_dict(before))

    refused(filled("gaussian").state_dict(), "distribution_name")
    refused({**good, "neurons_list": {"conv": 3, "tok": 5}}, "neurons_list")
    refused({**good, "version": STATE_VERSION + 1}, "version")
    refused({k: v for k, v in good.items() if k != "layers"}, "lacks")
    refused({**good, "format": "other"}, "format")
    other_ranges = dict(good["layers"])
    other_ranges["tok"] = {**good["layers"]["tok"], "range_maxs": good["layers"]["tok"]["range_maxs"] * 2}
    refused({**good, "layers": other_ranges}, "layer 'tok'.*other activation ranges")
    for field, value, match in [
        ("counts", np.zeros((4, 8), np.int64), r"'counts' has shape \(4, 8\), expected \(4, 9\)"),
        ("counts", good["layers"]["tok"]["counts"].astype(np.float64), "must hold integers"),
        ("counts", -good["layers"]["tok"]["counts"], "tok"),
        ("nan_counts", np.zeros(3, np.int64), "'nan_counts' has shape"),
    ]:
        layers = dict(good["layers"])
        layers["tok"] = {**good["layers"]["tok"], field: value}
        refused({**good, "layers": layers}, match)
    # the settings a DNA file records travel with the state
    assert Accumulator.from_state_dict(good).data_settings == acc.data_settings


def test_gaussian_states_are_checked():
    acc = filled("layer-gaussian")
    good = acc.state_dict()
    asym = {**good["layers"]["conv"], "m2": good["layers"]["conv"]["m2"] + np.triu(np.ones((3, 3)), 1)}
    with pytest.raises(ValueError, match="conv"):
        new("layer-gaussian").load_state_dict({**good, "layers": {**good["layers"], "conv": asym}})
    with pytest.raises(ValueError, match="count 11 differs"):
        bad = {**good["layers"]["conv"], "count": 11}
        new("layer-gaussian").load_state_dict({**good, "layers": {**good["layers"], "conv": bad}})


def shard_run(kind, x, parts, batch_size):
    """Accumulate x in ``parts`` shards (each in batches of ``batch_size``), merged in order."""
    accs = []
    for idx in np.array_split(np.arange(len(x["conv"])), parts):
        acc = new(kind)
        for s in range(0, len(idx), batch_size):
            acc.update({k: v[idx[s:s + batch_size]] for k, v in x.items()})
        # every shard travels as a state (as across processes or through a checkpoint)
        accs.append(Accumulator.from_state_dict(acc.state_dict()))
    for other in accs[1:]:
        accs[0].merge(other)
    return accs[0]


def test_merged_shard_counts_are_bit_identical_to_one_process_and_to_numpy():
    rng = np.random.default_rng(5)
    x = {"conv": rng.normal(size=(301, 3, 2, 3)) * 1.5, "tok": rng.normal(size=(301, 5, 4))}
    x["conv"][7, 2] = np.nan
    one, merged = shard_run("histogram-9", x, 1, 64), shard_run("histogram-9", x, 7, 13)
    assert_same(one, merged)
    for layer, layout in LAYOUTS.items():
        counts, nans = reference_histogram(x[layer], *ranges()[layer], 9, layout)
        np.testing.assert_array_equal(merged.compute().data[layer], counts)
        np.testing.assert_array_equal(merged.nan_counts[layer], nans)
    r_one, r_merged = shard_run("activation-ranges", x, 1, 64), shard_run("activation-ranges", x, 5, 7)
    assert_same(r_one, r_merged)


@pytest.mark.parametrize("kind", ["gaussian", "layer-gaussian"])
def test_merged_moments_far_from_zero_match_one_process_and_a_two_pass_reference(kind):
    # Data = M + y with y on a 2^-20 grid and |y| < 2^3, so M + y is exact in float64 for M = 1e6
    # (53-bit mantissa: 2^20 * 2^20 < 2^53): the reference mean is M + mean(y) and the reference
    # (co)variance that of y, computed two-pass about zero, accurate to ~N*eps relative.
    rng = np.random.default_rng(8)
    n, mean, sigma = 4000, 1e6, 1.0
    y = {"conv": np.round(rng.normal(size=(n, 3)) * sigma * 2**20) / 2**20,
         "tok": np.round(rng.normal(size=(n, 1, 4)) * sigma * 2**20) / 2**20}
    x = {k: mean + v for k, v in y.items()}
    assert all(np.array_equal(x[k] - mean, y[k]) for k in y)
    one, merged = shard_run(kind, x, 1, 64), shard_run(kind, x, 7, 50)

    def chan_bound(sizes):
        # Chan's merge adds na*nb/n * delta^2 to M2, delta = difference of two float64 means of
        # magnitude ~M, each rounded by <= eps*M: |error| <= 2 * (na*nb/n) * |delta| * 2 eps M with
        # |delta| ~ sigma * sqrt(n/(na*nb)), i.e. <= 4 eps M sigma sqrt(n_k) for a merge giving n_k
        # images; summed over the merges and divided by the final M2 = n sigma^2.
        return sum(4 * EPS * (mean / sigma) * np.sqrt(k) for k in sizes) / n

    def merge_sizes(parts, batch_size):
        sizes, done = [], 0
        for idx in np.array_split(np.arange(n), parts):
            sizes += [min(s + batch_size, len(idx)) for s in range(batch_size, len(idx), batch_size)]
            done += len(idx)
            sizes.append(done)
        return sizes

    # gaussian: Chan merges of batches and of shards. layer-gaussian: shifted sums within a shard
    # (n outer products of O(sigma) deviations, <= n eps relative), Chan merges between shards (a
    # state holds (count, mean, M2), so the shift is the rounded mean).
    if kind == "gaussian":
        tol_one, tol_merged = chan_bound(merge_sizes(1, 64)), chan_bound(merge_sizes(7, 50))
    else:
        tol_one, tol_merged = n * EPS, n * EPS + chan_bound([s for s in merge_sizes(7, n)])
    for layer in NEURONS:
        ym = y[layer].reshape(n, -1)
        ref_mu = mean + ym.mean(axis=0)
        ref_s = ym.var(axis=0, ddof=1) if kind == "gaussian" else np.cov(ym.T)
        for acc, tol in ((one, tol_one), (merged, tol_merged)):
            d = acc.compute().data[layer]
            s = d["var"] if kind == "gaussian" else d["sigma"]
            # mean: each merge rounds a weighted average of two means of magnitude ~M: <= 2 eps M each
            np.testing.assert_allclose(d["mu"], ref_mu, rtol=0, atol=2 * (n // 50 + 8) * EPS * mean)
            np.testing.assert_allclose(s, ref_s, rtol=0, atol=tol * sigma**2)
    # A naive sum / sum-of-squares merge would be off by ~eps (M/sigma)^2 = 1e-4: far outside tol.
    assert max(tol_one, tol_merged) < 1e-8
