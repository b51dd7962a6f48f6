"""Stability curves (vdna.stability): subsets from one pass equal brute force, curve statistics against
NumPy, files, errors."""
import warnings

import numpy as np
import pytest

import vdna
from vdna import procedural
from vdna.processor import VDNAProcessor
from vdna.stability import StabilityCurve, SubsetAccumulator, default_sizes, subset_permutations

import tiny_extractor  # noqa: F401  (registers the "tiny" extractor)
from fd_tolerance import fd_tol, fd_tol_dna

TINY = tiny_extractor.NAME
NL = {"a": 3, "b": 5}
RANGES = {"a": (np.full(3, -2.5), np.full(3, 2.5)), "b": (np.array([-2.0, -1, -3, -2, -2]), np.full(5, 2.0))}
N = 37


def _acts(n, shift=0.0, seed=0, nan=False):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((n, 3, 4, 3)) + shift).astype(np.float32)
    b = (rng.standard_normal((n, 6, 5)) * 1.3 + shift).astype(np.float64)  # tokens layout (N, T, C)
    if nan:
        a[1, 0, 0, 0] = np.nan  # a NaN value: counted, never binned (histograms only: it spoils Gaussians)
    a[2, 1, 1, 1] = 2.5  # exactly the top edge
    a[3, 0, 2, 2] = -2.5  # exactly the bottom edge
    return {"a": a, "b": b[:, :, :5]}


LAYOUTS = {"a": "channels", "b": "tokens"}


def _direct(dist, acts, idx=None):
    acc = vdna.Accumulator(dist, NL, activation_ranges=RANGES if dist.startswith("histogram") else None,
                           layouts=LAYOUTS)
    acc.update({k: v if idx is None else v[idx] for k, v in acts.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the planted NaN
        return acc.compute()


@pytest.fixture(scope="module")
def setup():
    acts = _acts(N)
    refs = [_direct(d, _acts(25, 0.3, seed=1)) for d in ("histogram-16", "layer-gaussian")]
    sa = SubsetAccumulator(NL, N, sizes=[4, 9, 20], repeats=4, seed=3, distributions=("histogram-16", "layer-gaussian"),
                           activation_ranges=RANGES, layouts=LAYOUTS)
    sa.update({k: v[:10] for k, v in acts.items()})
    sa.update({k: v[10:] for k, v in acts.items()})
    curve = sa.compute(refs)
    return acts, refs, sa, curve


# FD/NFD of a subset: the curve re-accumulates Gaussians from per-image mean vectors in other batches than a
# direct accumulation; moments then agree to ~ (images x eps x magnitude). FD's eigenvalue route has a
# relative error ~ C x eps x cond; with C <= 5, unit-scale data and N <= 37 images, 1e-10 relative
# (about 500 eps) bounds both with a wide margin on every CPU.
GAUSS_RTOL = 500 * np.finfo(np.float64).eps


def test_subsets_equal_brute_force(setup):
    acts, (href, gref), sa, curve = setup
    for r, k in [(0, 0), (1, 1), (3, 2), (2, 0)]:
        idx = curve.subset_indices(r, k)
        assert len(idx) == curve.sizes[k] and len(np.unique(idx)) == len(idx)
        h = _direct("histogram-16", acts, idx)
        sub = sa.subset_dna(r, k, "histogram-16")
        for layer in NL:
            np.testing.assert_array_equal(sub.data[layer], h.data[layer])  # counts bit-identical
        assert sub.num_images == len(idx)
        # same core calls in the same order as vdna.EMD: bit-identical distances
        assert curve.values["emd"][r, k] == vdna.EMD(href, h)
        for layer in NL:
            assert curve.values[f"emd/{layer}"][r, k] == vdna.EMD(href, h, use_neurons_from_layer=layer)
        g = _direct("layer-gaussian", acts, idx)
        assert abs(curve.values["fd"][r, k] - vdna.FD(gref, g)) <= fd_tol_dna(gref, g)
        np.testing.assert_allclose(curve.values["nfd"][r, k], vdna.NFD(gref, g), rtol=GAUSS_RTOL)
        for layer in NL:
            assert abs(curve.values[f"fd/{layer}"][r, k] - vdna.FD(gref, g, use_neurons_from_layer=layer)) <= \
                fd_tol_dna(gref, g, [layer])


def test_largest_size_all_images_keeps_the_full_set_once(setup):
    # sizes ending at every image: the largest group of each repeat is not stored, its subset is the
    # full-set table (3 repeats x 2 stored groups + 1 tables); every subset still equals brute force
    acts, (href, _), _, _ = setup
    sa = SubsetAccumulator(NL, N, sizes=[4, 9, N], repeats=3, seed=2, distributions=("histogram-16",),
                           activation_ranges=RANGES, layouts=LAYOUTS)
    assert sa.n_tables == 3 * 2 + 1
    order = np.random.default_rng(1).permutation(N)
    for chunk in np.array_split(order, 4):
        sa.update({k: v[chunk] for k, v in acts.items()}, indices=chunk)
    curve = sa.compute(href)
    for r in range(3):
        for k in range(3):
            idx = curve.subset_indices(r, k)
            h = _direct("histogram-16", acts, idx)
            sub = sa.subset_dna(r, k)
            for layer in NL:
                np.testing.assert_array_equal(sub.data[layer], h.data[layer])
            assert sub.num_images == len(idx)
            assert curve.values["emd"][r, k] == vdna.EMD(href, h)
    full = sa.subset_dna(-1, 0)
    direct = _direct("histogram-16", acts)
    for layer in NL:
        np.testing.assert_array_equal(full.data[layer], direct.data[layer])
    assert curve.full_value("emd") == vdna.EMD(href, direct)


def test_nan_values_are_counted_per_subset_never_binned():
    acts = _acts(N, nan=True)
    sa = SubsetAccumulator(NL, N, sizes=[2, 30], repeats=3, seed=5, distributions=("histogram-16",),
                           activation_ranges=RANGES, layouts=LAYOUTS)
    sa.update(acts)
    for r in range(3):
        for k in range(2):
            idx = np.sort(sa.permutations[r, : sa.sizes[k]])
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                sub = sa.subset_dna(r, k)
            assert any("NaN" in str(w.message) for w in seen) == (1 in idx)
            direct = _direct("histogram-16", acts, idx)
            for layer in NL:
                np.testing.assert_array_equal(sub.data[layer], direct.data[layer])
            assert sub.meta["nan_counts"]["a"] == int(1 in idx)


def test_single_image_and_nan_gaussians():
    acts = {k: v[:1] for k, v in _acts(5).items()}
    refs = [_direct(d, _acts(25, 0.3, seed=1)) for d in ("histogram-16", "layer-gaussian")]
    sa = SubsetAccumulator(NL, 1, repeats=2, distributions=("histogram-16", "layer-gaussian"), activation_ranges=RANGES,
                           layouts=LAYOUTS)
    sa.update(acts)
    curve = sa.compute(refs)
    assert curve.sizes.tolist() == [1]
    assert curve.values["emd"][0, 0] == curve.values["emd"][1, 0] == curve.full_value("emd") == \
        vdna.EMD(refs[0], _direct("histogram-16", acts))
    g = _direct("layer-gaussian", acts)  # one image: zero covariance
    assert abs(curve.full_value("fd") - vdna.FD(refs[1], g)) <= fd_tol_dna(refs[1], g)
    assert curve.stable_size("emd") == 1
    with pytest.raises(ValueError, match="two sizes"):
        curve.extrapolate("emd")
    sa = SubsetAccumulator(NL, N, sizes=[3], repeats=1, distributions=("layer-gaussian",), layouts=LAYOUTS)
    sa.update(_acts(N, nan=True))
    with pytest.raises(ValueError, match="layer 'a': 1 image"):
        sa.compute(refs[1])


def test_full_value_is_all_images(setup):
    acts, (href, gref), sa, curve = setup
    h = _direct("histogram-16", acts)
    assert curve.full_value("emd") == vdna.EMD(href, h)
    full = sa.subset_dna(-1, 0, "histogram-16")
    for layer in NL:
        np.testing.assert_array_equal(full.data[layer], h.data[layer])
    g = _direct("layer-gaussian", acts)
    assert abs(curve.full_value("fd") - vdna.FD(gref, g)) <= fd_tol_dna(gref, g)


@pytest.mark.parametrize("n, n_ref", [(1, 300), (2, 300), (7, 300), (39, 300), (40, 300), (41, 300), (120, 300),
                                      (7, 12), (120, 12)])
def test_fd_to_reference_both_routes_against_the_core(n, n_ref):
    # n_ref = 12 < 40 neurons: a singular reference covariance (rank 11), whose factor keeps only the
    # eigenvalues above the core's rank tolerance
    from vdna.frechet import _FrechetToReference

    rng = np.random.default_rng(n)
    c = 40
    basis = rng.standard_normal((c, c))
    ref = rng.standard_normal((n_ref, c)) @ basis * 0.2 + 1.0
    mu_r, sig_r = ref.mean(axis=0), np.cov(ref, rowvar=False)
    x = rng.standard_normal((n, c)) @ basis * 0.3
    mu = x.mean(axis=0)
    sig = np.cov(x, rowvar=False) if n > 1 else np.zeros((c, c))
    got = _FrechetToReference(mu_r, sig_r).distance(mu, x)
    from vdna._native import _core

    want = float(_core.fd(mu_r, sig_r, mu, sig))
    assert abs(got - want) <= fd_tol(mu_r, sig_r, mu, sig)
    # the same set as a subset (rows in shuffled order) of a larger projected set whose mean is far
    # from the subset's: the curve's route (project once, centre each subset's columns)
    others = rng.standard_normal((50, c)) @ basis * 0.3 + 2.0
    pool = np.concatenate([others[:20], x, others[20:]])
    rows = 20 + rng.permutation(n)
    frechet = _FrechetToReference(mu_r, sig_r)
    frechet.project(pool)
    assert frechet._reference_factor().shape == (c, min(c, n_ref - 1))
    got_sub, got_all = frechet.subset_distances([mu, pool.mean(axis=0)], [rows, np.arange(len(pool))])
    assert abs(got_sub - want) <= fd_tol(mu_r, sig_r, mu, sig)
    pool_sig = np.cov(pool, rowvar=False)
    assert abs(got_all - float(_core.fd(mu_r, sig_r, pool.mean(axis=0), pool_sig))) <= fd_tol(
        mu_r, sig_r, pool.mean(axis=0), pool_sig)


def test_subsets_are_nested_prefixes_of_seeded_permutations(setup):
    _, _, _, curve = setup
    perms = subset_permutations(N, 4, 3)
    np.testing.assert_array_equal(curve.permutations, perms)
    for r in range(4):
        assert sorted(perms[r]) == list(range(N))
        assert set(curve.subset_indices(r, 0)) <= set(curve.subset_indices(r, 1)) <= set(curve.subset_indices(r, 2))


def test_batching_and_arrival_order_do_not_matter(setup):
    acts, refs, _, curve = setup
    sa = SubsetAccumulator(NL, N, sizes=[4, 9, 20], repeats=4, seed=3, distributions=("histogram-16", "layer-gaussian"),
                           activation_ranges=RANGES, layouts=LAYOUTS)
    order = np.random.default_rng(7).permutation(N)
    for chunk in np.array_split(order, 6):
        sa.update({k: v[chunk] for k, v in acts.items()}, indices=chunk)
    other = sa.compute(refs)
    for m in curve.metrics:
        # counts are exact; per-image mean vectors do not depend on batching and are re-accumulated in
        # permutation order, so the Gaussian values are bit-identical too
        np.testing.assert_array_equal(other.values[m], curve.values[m])


def test_memory_mapped_tables_give_the_same_curve(setup, tmp_path):
    acts, refs, _, curve = setup
    sa = SubsetAccumulator(NL, N, sizes=[4, 9, 20], repeats=4, seed=3, distributions=("histogram-16",),
                           activation_ranges=RANGES, layouts=LAYOUTS, max_memory=2000, temp_dir=str(tmp_path))
    assert sa.memory["spilled"] and not any(tmp_path.iterdir())  # tables come with the first update
    sa.update(acts)
    assert sa.memory["spilled"] and any(tmp_path.iterdir())
    other = sa.compute(refs[0])
    np.testing.assert_array_equal(other.values["emd"], curve.values["emd"])
    sa.close()
    assert not any(tmp_path.iterdir())


def test_timings_cover_every_stage(setup):
    _, _, sa, _ = setup
    assert set(sa.timings) == {"histogram counts", "mean vectors", "emd read-out", "gaussian read-out"}
    assert all(v > 0 for v in sa.timings.values())  # every stage ran (update twice, compute once)


def test_tables_that_do_not_fit_spill_layer_by_layer(setup, tmp_path):
    # 13 tables (4 repeats x 3 sizes + the rest) x 16 bins: with 32-bit counts (the plan before the
    # first update, and what _narrow_max = 0 forces) layer b takes 5 x 13 x 16 x 4 = 4160 bytes, layer a
    # 2496; the resident state (histograms only) is 2 x 5 neurons x 16 bins x 8 bytes = 1280 bytes
    acts, refs, _, curve = setup
    sa = SubsetAccumulator(NL, N, sizes=[4, 9, 20], repeats=4, seed=3, distributions=("histogram-16",),
                           activation_ranges=RANGES, layouts=LAYOUTS, max_memory=1280 + 4160 + 100,
                           temp_dir=str(tmp_path))
    sa._narrow_max = 0
    assert sa.memory["table_bytes"] == 2496 + 4160 and sa.memory["resident_bytes"] == 1280
    assert sa.memory["spilled_layers"] == ["a"] and sa.memory["spilled_bytes"] == 2496
    sa.update(acts)
    assert sa.memory["spilled_layers"] == ["a"] and sa.memory["samples_per_image"] == {"a": 12, "b": 6}
    assert isinstance(sa._tables["a"].wide, np.memmap) and not isinstance(sa._tables["b"].wide, np.memmap)
    assert sa._tables["b"].wide.shape == (5, 13, 16)  # neuron-major: (C, tables, bins)
    assert sa._tables["b"].narrow.shape == (5, 0, 16)
    other = sa.compute(refs[0])
    for m in other.metrics:
        np.testing.assert_array_equal(other.values[m], curve.values[m])
    sa.close()
    assert not any(tmp_path.iterdir())


def test_statistics_against_numpy(setup):
    _, _, _, curve = setup
    v = curve.values["emd"]
    np.testing.assert_array_equal(curve.mean("emd"), np.mean(v, axis=0))
    np.testing.assert_array_equal(curve.std("emd"), np.std(v, axis=0))


def _curve(values, full, sizes, n):
    values = np.asarray(values, dtype=np.float64)
    perms = subset_permutations(n, values.shape[0], 0)
    return StabilityCurve(sizes, {"m": values}, {"m": full}, perms, n, 0, ["gaussian"], ["x"])


def test_stable_size_hand_worked():
    # full 10, tol 0.1 -> bound 1. Means 20, 10.5, 12 (fails), 10.2, 10; std at size 4: 0 -> size 40 first
    # from which every larger size passes.
    sizes = [1, 2, 4, 10, 40]
    vals = [[20, 10.0, 12, 10.2, 10], [20, 11.0, 12, 10.2, 10]]
    c = _curve(vals, 10.0, sizes, 40)
    assert c.stable_size("m", tol=0.1) == 10
    assert c.stable_size("m", tol=0.25) == 2  # means 20 | 10.5 | 12 | 10.2 | 10 within 2.5; stds 0, .5, 0...
    vals2 = [[20, 10.0, 12, 10.2, 13], [20, 11.0, 12, 10.2, 13]]
    assert _curve(vals2, 10.0, sizes, 40).stable_size("m", tol=0.1) is None
    with pytest.raises(ValueError, match="tol"):
        c.stable_size("m", tol=0)
    with pytest.raises(KeyError, match="no metric"):
        c.stable_size("emd")


def test_extrapolate_against_polyfit():
    rng = np.random.default_rng(0)
    sizes = np.array([10, 20, 50, 100, 200, 500, 1000])
    vals = 3.0 + 40.0 / sizes[None, :] + 0.01 * rng.standard_normal((5, len(sizes)))
    c = _curve(vals, 3.1, sizes, 2000)
    a, se = c.extrapolate("m")  # sizes >= 100
    use = sizes >= 100
    x = np.repeat(1.0 / sizes[use][None, :], 5, axis=0).ravel()
    coef, cov = np.polyfit(x, vals[:, use].ravel(), 1, cov=True)  # scaled by RSS / (points - 2)
    # a least-squares fit of 20 points: both solvers are backward stable, error ~ cond(X) x eps x |a| with
    # cond(X) < 1e3 here; 1e-9 relative leaves a wide margin
    np.testing.assert_allclose(a, coef[1], rtol=1e-9)
    np.testing.assert_allclose(se, np.sqrt(cov[1, 1]), rtol=1e-9)
    assert abs(a - 3.0) < 5 * se + 1e-3
    # exact data: a recovered, zero standard error
    exact = _curve(np.tile(2.0 + 5.0 / sizes, (3, 1)), 2.0, sizes, 2000)
    a, se = exact.extrapolate("m", min_size=10)
    assert abs(a - 2.0) < 1e-12 and se < 1e-12  # |a| ~ 2, fit of 21 exact points: rounding ~ 1e-15
    with pytest.raises(ValueError, match="two sizes"):
        exact.extrapolate("m", min_size=1000)


def test_save_load_csv(setup, tmp_path):
    _, _, _, curve = setup
    curve.save(tmp_path / "c.npz")
    back = StabilityCurve.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.sizes, curve.sizes)
    np.testing.assert_array_equal(back.permutations, curve.permutations)
    for m in curve.metrics:
        np.testing.assert_array_equal(back.values[m], curve.values[m])
        assert back.full[m] == curve.full[m]
    text = curve.to_csv(tmp_path / "c.csv")
    rows = (tmp_path / "c.csv").read_text().splitlines()
    assert text.splitlines() == rows and rows[0] == "metric,size,repeat,value"
    assert len(rows) == 1 + len(curve.metrics) * (len(curve.sizes) * curve.repeats + 1)
    first = rows[1].split(",")
    assert first[0] == "emd" and int(first[1]) == 4 and float(first[3]) == curve.values["emd"][0, 0]
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        StabilityCurve.load(tmp_path / "bad.npz")


def test_plot(setup, tmp_path):
    pytest.importorskip("matplotlib")  # plots are an optional extra
    _, _, _, curve = setup
    fig = curve.plot(path=tmp_path / "c.png")
    assert len(fig.axes) == 3 and (tmp_path / "c.png").stat().st_size > 0


def test_default_sizes():
    np.testing.assert_array_equal(default_sizes(2000), np.unique(np.rint(np.geomspace(10, 2000, 10)).astype(int)))
    assert default_sizes(2000)[0] == 10 and default_sizes(2000)[-1] == 2000
    np.testing.assert_array_equal(default_sizes(3), [3])


def test_bad_input(setup):
    acts, refs, _, _ = setup
    kw = dict(distributions=("histogram-16",), activation_ranges=RANGES, layouts=LAYOUTS)
    with pytest.raises(ValueError, match="larger than the source"):
        SubsetAccumulator(NL, N, sizes=[5, N + 1], **kw)
    with pytest.raises(ValueError, match="repeats"):
        SubsetAccumulator(NL, N, repeats=0, **kw)
    with pytest.raises(ValueError, match="at least one image"):
        SubsetAccumulator(NL, 0, **kw)
    with pytest.raises(ValueError, match="activation_ranges"):
        SubsetAccumulator(NL, N, distributions=("histogram-16",))
    with pytest.raises(ValueError, match="at most one"):
        SubsetAccumulator(NL, N, distributions=("gaussian", "layer-gaussian"))
    sa = SubsetAccumulator(NL, N, sizes=[5], **kw)
    sa.update({k: v[:5] for k, v in acts.items()})
    with pytest.raises(ValueError, match="given twice"):
        sa.update({k: v[:2] for k, v in acts.items()}, indices=[0, 1])
    with pytest.raises(ValueError, match="not added"):
        sa.compute(refs[0])
    sa.update({k: v[5:] for k, v in acts.items()})
    with pytest.raises(ValueError, match="no reference DNA of type 'histogram-16'"):
        sa.compute(refs[1])
    other_bins = _direct("histogram-8", _acts(5))
    with pytest.raises(ValueError, match="histogram-16"):
        sa.compute(other_bins)
    other_ranges = vdna.Accumulator("histogram-16", NL, activation_ranges={l: (lo - 1, hi) for l, (lo, hi) in
                                                                           RANGES.items()}, layouts=LAYOUTS)
    other_ranges.update(_acts(5))
    ref2 = other_ranges.compute()
    with pytest.raises(ValueError, match="activation ranges"):
        sa.compute(ref2)
    with pytest.raises(ValueError, match="resident state"):
        SubsetAccumulator(NL, N, distributions=("layer-gaussian",), max_memory=10)


def test_core_count_groups_checks_before_changing_anything():
    from vdna._native import _core

    h = _core.HistAccumulator(np.zeros(2), np.ones(2), 4)
    x = np.full((3, 2, 2), 0.3, dtype=np.float32)
    tables = np.zeros((2, 3, 4), dtype=np.uint32)  # neuron-major: (2 neurons, 3 tables, 4 bins)
    imgs, nans = np.zeros(3, dtype=np.int64), np.zeros((3, 2), dtype=np.int64)
    with pytest.raises(ValueError, match="table 3 is not in"):
        h.count_groups(x, np.array([[0], [1], [3]]), tables, imgs, nans)
    with pytest.raises(ValueError, match=r"tables has shape \(3, 2, 4\); expected \(2, n, 4\)"):
        h.count_groups(x, np.array([[0], [1], [2]]), np.zeros((3, 2, 4), dtype=np.uint32), imgs, nans)
    assert not tables.any() and not imgs.any()
    imgs[0] = 2**32 // 2 - 1  # one more image of 2 samples would overflow a 32-bit count
    with pytest.raises(ValueError, match="overflow"):
        h.count_groups(x, np.array([[0], [1], [1]]), tables, imgs, nans)
    imgs[0] = 0
    with pytest.raises(TypeError, match="uint32"):
        h.count_groups(x, np.array([[0], [1], [1]]), tables.astype(np.int64), imgs, nans)
    h.count_groups(x, np.array([[0], [2], [-1]]), tables, imgs, nans)
    # 0.3 in [0, 1] with 4 bins -> bin 1 (t = 1.2); each image: 2 samples per neuron; tables 0 and 2
    expected = np.zeros((2, 3, 4), dtype=np.uint32)
    expected[:, [0, 2], 1] = 2
    np.testing.assert_array_equal(tables, expected)
    np.testing.assert_array_equal(imgs, [1, 0, 1])
    assert h.num_images == 0  # the accumulator itself is unchanged


def test_image_mean_vectors_against_numpy():
    from vdna._native import _core

    x = np.random.default_rng(2).standard_normal((4, 3, 5, 6))[:, :, ::2, :]  # non-contiguous
    x[0, 1, 0, 0] = np.nan
    means, nans = _core.image_mean_vectors(x, 3)
    # 18 samples per mean, unit magnitude: sequential vs pairwise summation differ by < 18 eps
    np.testing.assert_allclose(means, x.mean(axis=(2, 3)), rtol=0, atol=18 * np.finfo(float).eps)
    np.testing.assert_array_equal(nans, [0, 1, 0])
    m2, _ = _core.image_mean_vectors(np.moveaxis(x, 1, -1).reshape(4, 18, 3), 3, layout="tokens")
    np.testing.assert_allclose(m2, means, rtol=0, atol=18 * np.finfo(float).eps)



@pytest.mark.parametrize("n_images", [1, 3, 4, 5, 9])  # the core sums 4 images at a time: every remainder
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_image_means_are_sequential_float64_sums(n_images, dtype):
    # The documented arithmetic: each image's mean is a float64 sum over its samples in sample order,
    # divided by the sample count. Summing several images at once must not change a single bit.
    from vdna._native import _core

    x = (np.random.default_rng(n_images).standard_normal((n_images, 3, 7, 70)) * 1e3).astype(dtype)
    x = x[:, :, :, ::2]  # non-contiguous; 7 x 35 = 245 samples, not a multiple of the core's 256-value blocks
    want = np.empty((n_images, 3))
    for n in range(n_images):
        for c in range(3):
            total = 0.0
            for v in x[n, c].ravel().tolist():  # Python floats: float64, one addition after another
                total += v
            want[n, c] = total / x[n, c].size
    means, _ = _core.image_mean_vectors(x, 3)
    np.testing.assert_array_equal(means, want)


# ---------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def proc():
    return VDNAProcessor()


@pytest.fixture(scope="module")
def imgs():
    return procedural.make_images(14, seed=2, style="base", size=(36, 36))


@pytest.fixture(scope="module")
def tiny_ranges(proc, imgs):
    return vdna.calibrate(imgs, TINY, processor=proc, device="cpu", verbose=False, backend="eager")


def _kw(**kw):
    base = dict(feat_extractor_name=TINY, device="cpu", backend="eager", verbose=False)
    base.update(kw)
    return base


def test_processor_curve_equals_make_vdna_on_recorded_subsets(proc, imgs, tiny_ranges):
    ref_imgs = procedural.make_images(8, seed=3, style="shifted", size=(36, 36))
    curve = proc.stability(imgs, ref_imgs, sizes=[3, 7, 14], repeats=3, seed=1,
                           distributions=("histogram-32", "gaussian"), activation_ranges=tiny_ranges,
                           batch_size=1, num_workers=0, **_kw())
    # batch_size=1: the tiny network's CPU kernels are not batch-invariant, ours are (tested above)
    href = proc.make_vdna(ref_imgs, distribution_name="histogram-32", activation_ranges=tiny_ranges, batch_size=1,
                          **_kw())
    gref = proc.make_vdna(ref_imgs, distribution_name="gaussian", batch_size=1, **_kw())
    for r, k in [(0, 0), (2, 1)]:
        idx = curve.subset_indices(r, k)
        sub = [imgs[i] for i in idx]
        h = proc.make_vdna(sub, distribution_name="histogram-32", activation_ranges=tiny_ranges, batch_size=1, **_kw())
        assert curve.values["emd"][r, k] == vdna.EMD(href, h)
        g = proc.make_vdna(sub, distribution_name="gaussian", batch_size=1, **_kw())
        np.testing.assert_allclose(curve.values["nfd"][r, k], vdna.NFD(gref, g), rtol=GAUSS_RTOL)
    full = proc.make_vdna(imgs, distribution_name="histogram-32", activation_ranges=tiny_ranges, batch_size=1, **_kw())
    assert curve.full_value("emd") == vdna.EMD(href, full)
    # the reference given as DNAs gives the same curve; num_workers does not matter
    again = proc.stability(imgs, [href, gref], sizes=[3, 7, 14], repeats=3, seed=1, activation_ranges=tiny_ranges,
                           batch_size=1, num_workers=2, **_kw())
    np.testing.assert_array_equal(again.values["emd"], curve.values["emd"])
    np.testing.assert_array_equal(again.values["nfd"], curve.values["nfd"])


def test_processor_bad_input(proc, imgs, tiny_ranges):
    ref = proc.make_vdna(imgs[:4], distribution_name="histogram-32", activation_ranges=tiny_ranges, **_kw())
    with pytest.raises(ValueError, match="larger than the source"):
        proc.stability(imgs, ref, sizes=[5, 50], activation_ranges=tiny_ranges, **_kw())
    with pytest.raises(ValueError, match="repeats"):
        proc.stability(imgs, ref, repeats=0, activation_ranges=tiny_ranges, **_kw())
    with pytest.raises(ValueError, match="no reference DNA of type 'layer-gaussian'"):
        proc.stability(imgs, ref, distributions=("layer-gaussian",), **_kw())
    r = vdna.ActivationRanges.from_any(tiny_ranges)
    shifted = {l: (r[l][0] - 1, r[l][1]) for l in tiny_extractor.INFO.neurons_per_layer}
    with pytest.raises(ValueError, match="other activation ranges"):
        proc.stability(imgs, ref, activation_ranges=shifted, **_kw())


def test_guide_runs_as_written(tmp_path, monkeypatch):
    """docs/stability.md: its ```python blocks (not the ```python skip ones) run in order in one namespace."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "stability.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for code in blocks:
        exec(compile(code, "docs/stability.md", "exec"), namespace)
    assert (tmp_path / "curve.csv").is_file() and (tmp_path / "curve.npz").is_file()
    assert 0 <= namespace["d"] <= 20 and namespace["std"] >= 0


# ------------------------------------------------------------------ 16- and 32-bit tables
def test_table_widths_follow_the_count_bound():
    from vdna.subset_tables import NARROW_MAX, table_bytes, table_where

    total = np.array([0, 1, 5, 13107, 13108, 65535])
    # 5 samples per image: 13107 x 5 = 65535 is the largest count a 16-bit table holds; 13108 x 5 is not
    where = table_where(total, 5)
    np.testing.assert_array_equal(where < 0, [True, True, True, True, False, False])
    assert sorted(where[where >= 0]) == [0, 1] and sorted(-1 - where[where < 0]) == [0, 1, 2, 3]
    assert (table_where(total, None) >= 0).all()  # samples unknown: every table 32-bit
    assert table_bytes(3, 10, where) == 3 * 10 * (2 * 4 + 4 * 2)
    assert NARROW_MAX == 2**16 - 1


def test_a_16_bit_table_holds_counts_up_to_its_bound():
    # one neuron, 2 images of 65535 samples each, every value in one bin: the table of the size-1 subset
    # (1 image) reaches 65535 exactly in uint16; the full-set table (131070) is 32-bit
    lay, ranges = {"l": 1}, {"l": (np.zeros(1), np.ones(1))}
    x = np.full((2, 1, 65535), 0.25, dtype=np.float32)
    sa = SubsetAccumulator(lay, 2, sizes=[1, 2], repeats=1, seed=0, distributions=("histogram-4",),
                           activation_ranges=ranges)
    sa.update({"l": x})
    where = sa._tables["l"].where
    assert (where < 0).sum() == 1 and (where >= 0).sum() == 1
    for k in range(2):
        idx = sa.permutations[0, : sa.sizes[k]]
        acc = vdna.Accumulator("histogram-4", lay, activation_ranges=ranges)
        acc.update({"l": x[idx]})
        np.testing.assert_array_equal(sa.subset_dna(0, k).data["l"], acc.compute().data["l"])
    assert sa.subset_dna(0, 0).data["l"].max() == 65535 and sa.subset_dna(0, 1).data["l"].max() == 131070


def _widening_run(setup, tmp_path, max_memory):
    """A SubsetAccumulator (_narrow_max 100: with 2x2 maps, 4 samples, a table of up to 25 images is
    16-bit; with 4x3 maps, 12 samples, one of up to 8) fed the even images with 2x2 maps in layer "a";
    returns it, the odd images' indices and activations (4x3 maps: a second batch that widens tables),
    and a function that checks subsets against make_vdna-style accumulation of exactly their images."""
    acts, _, _, _ = setup
    rng = np.random.default_rng(4)
    small = {"a": rng.standard_normal((N, 3, 2, 2)).astype(np.float32), "b": acts["b"]}
    sa = SubsetAccumulator(NL, N, sizes=[4, 9, 20], repeats=4, seed=3, distributions=("histogram-16",),
                           activation_ranges=RANGES, layouts=LAYOUTS, max_memory=max_memory, temp_dir=str(tmp_path))
    sa._narrow_max = 100
    first, second = np.arange(0, N, 2), np.arange(1, N, 2)
    sa.update({k: v[first] for k, v in small.items()}, indices=first)

    def check_against_brute_force(cells):
        for r, k in cells:
            idx = sa.permutations[r, : sa.sizes[k]]
            acc = vdna.Accumulator("histogram-16", NL, activation_ranges=RANGES, layouts=LAYOUTS)
            for part, data in ((first, small), (second, acts)):
                sel = np.intersect1d(idx, part)
                if len(sel):
                    acc.update({k2: v[sel] for k2, v in data.items()})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                direct = acc.compute()
            sub = sa.subset_dna(r, k)
            for layer in NL:
                np.testing.assert_array_equal(sub.data[layer], direct.data[layer])

    return sa, second, {k: v[second] for k, v in acts.items()}, check_against_brute_force


@pytest.mark.parametrize("spill", [False, True])
def test_tables_widen_when_images_bring_more_samples(setup, tmp_path, spill):
    # a second batch of larger maps widens some of layer "a"'s 16-bit tables; counts stay exact
    sa, second, larger, check = _widening_run(setup, tmp_path, 1300 if spill else 2**30)
    before = sa._tables["a"].where.copy()
    sa.update(larger, indices=second)
    after = sa._tables["a"].where
    assert (before < 0).sum() > (after < 0).sum() > 0  # some tables widened, some stay 16-bit
    assert sa.memory["samples_per_image"] == {"a": 12, "b": 6}
    assert sa._tables["a"].spilled == spill
    if spill:  # the old layout's files are gone: one .u32 and one .u16 file per layer
        assert len(list(next(tmp_path.iterdir()).iterdir())) == 4
    check([(0, 0), (1, 1), (3, 2)])
    sa.close()
    assert not any(tmp_path.iterdir())


def test_widened_tables_that_no_longer_fit_go_to_a_file(setup, tmp_path):
    # the memory plan is made at the first batch; a layer kept in memory whose tables widen later is
    # moved to a memory-mapped file when the wider tables would exceed max_memory (counts stay exact)
    sa, second, larger, check = _widening_run(setup, tmp_path, 2**30)
    assert sa.memory["spilled_layers"] == []
    assert sa.memory["buffer_bytes"] > 0  # the small-map buffer holds the first images, too
    # everything fits, exactly
    sa.max_memory = sa.memory["resident_bytes"] + sa.memory["buffer_bytes"] + sa.memory["table_bytes"]
    before = sa._tables["a"].nbytes
    sa.update(larger, indices=second)
    assert sa._tables["a"].nbytes > before  # widened ...
    assert sa._tables["a"].spilled and not sa._tables["b"].spilled  # ... into a file; "b" did not change
    assert sa.memory["spilled_layers"] == ["a"] and sa.memory["spilled"]
    assert sa.memory["spilled_bytes"] == sa._tables["a"].nbytes
    assert sa.memory["table_bytes"] == sa._tables["a"].nbytes + sa._tables["b"].nbytes
    check([(0, 0), (2, 1), (3, 2)])
    sa.close()
    assert not any(tmp_path.iterdir())


def test_widened_tables_stay_in_memory_with_a_warning_when_the_disk_is_full(setup, tmp_path, monkeypatch):
    sa, second, larger, check = _widening_run(setup, tmp_path, 2**30)
    sa.max_memory = sa.memory["resident_bytes"] + sa.memory["buffer_bytes"] + sa.memory["table_bytes"]
    import shutil as shutil_mod

    monkeypatch.setattr(shutil_mod, "disk_usage", lambda path: shutil_mod._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.warns(ResourceWarning, match="layer 'a' needs wider tables.*stay in memory beyond max_memory"):
        sa.update(larger, indices=second)
    assert not sa._tables["a"].spilled and sa.memory["spilled_layers"] == []
    check([(1, 0), (3, 2)])
    sa.close()


# ------------------------------------------------------------------ small-map layers counted in larger calls
def _counts(sa):
    return {l: [np.array(sa._tables[l].row(t), dtype=np.int64) for t in range(sa.n_tables)] for l in sa.neurons_list}


def test_small_map_layers_are_buffered_and_counted_exactly():
    # layer "a": 17 x 17 = 289 samples per image, counted batch by batch; layer "b": tokens, at most 256
    # samples, buffered and counted 64 images per call (a full buffer, a batch that does not fit, a
    # change of token count, and the read-out flush). Tables equal one all-at-once update's.
    from vdna import stability as st

    n = 150
    rng = np.random.default_rng(8)
    a = rng.standard_normal((n, 3, 17, 17)).astype(np.float32)
    b6, b4 = rng.standard_normal((n, 6, 5)), rng.standard_normal((n, 4, 5))
    kw = dict(sizes=[10, 40, 100], repeats=3, seed=2, distributions=("histogram-16",), activation_ranges=RANGES,
              layouts=LAYOUTS)
    sa = SubsetAccumulator(NL, n, **kw)
    cuts = [0, 30, 80, 100, 120, 150]  # 30 + 50 > 64: flush first; 80..100 with 4 tokens: flush, new buffer
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        b = b4 if lo == 80 else b6
        sa.update({"a": a[lo:hi], "b": b[lo:hi]}, indices=np.arange(lo, hi))
    assert sa._defer_layers == ["b"] and sa.memory["buffer_bytes"] == st._DEFER_IMAGES * 6 * 5 * 8
    assert sa._pending_n > 0  # images still buffered: the read-out counts them first
    direct = SubsetAccumulator(NL, n, **kw)  # reference: tables from calls that bypass the buffer
    direct.update({"a": a[:80], "b": b6[:80]}, indices=np.arange(80))  # >= 64 images: counted at once
    assert direct._pending_n == 0
    direct._defer_layers = []  # (the first update chose them)
    direct.update({"a": a[80:100], "b": b4[80:100]}, indices=np.arange(80, 100))
    direct.update({"a": a[100:], "b": b6[100:]}, indices=np.arange(100, n))
    for r, k in [(0, 0), (1, 2), (2, 1)]:
        sub, want = sa.subset_dna(r, k), direct.subset_dna(r, k)
        for layer in NL:
            np.testing.assert_array_equal(sub.data[layer], want.data[layer])
    assert sa._pending_n == 0
    got, want = _counts(sa), _counts(direct)
    for layer in NL:
        for t in range(sa.n_tables):
            np.testing.assert_array_equal(got[layer][t], want[layer][t])
    for layer in NL:
        np.testing.assert_array_equal(sa._table_images[layer], direct._table_images[layer])
    assert direct._pending_n == 0 and not direct._pending


def test_no_buffer_when_it_would_push_tables_to_disk(tmp_path):
    # tables that just fit max_memory next to the resident state: the buffer would spill one, so
    # every batch is counted as it comes
    from vdna import stability as st

    sa = SubsetAccumulator(NL, N, sizes=[4, 9, 20], repeats=4, seed=3, distributions=("histogram-16",),
                           activation_ranges=RANGES, layouts=LAYOUTS, temp_dir=str(tmp_path))
    acts = _acts(N)
    samples = {"a": 12, "b": 6}
    fit = sa._plan_memory(samples, check_disk=False)
    sa.max_memory = fit["resident_bytes"] + fit["table_bytes"]
    sa.update({k: v[:5] for k, v in acts.items()}, indices=np.arange(5))
    assert sa._defer_layers == [] and sa.memory["buffer_bytes"] == 0 and not sa.memory["spilled"]
    assert sa._pending_n == 0 and sa._table_images["a"].sum() > 0  # counted at once
    assert st._DEFER_SAMPLES >= 12
