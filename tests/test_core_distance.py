"""The C core's distances (vdna._core.emd / emd_many / nfd / fd) against independent references:
scipy.stats.wasserstein_distance, direct NumPy formulas, scipy.linalg.sqrtm, and hand-worked values.

Tolerances: EMD is a sum of B terms each within a few ulps of the NumPy value, so rtol 1e-12 (with
atol 1e-12 for values near 0) leaves a wide margin over rounding and still catches any
normalisation or indexing error (those are O(1/B) or larger). FD vs sqrtm: both are backward
stable on well-conditioned inputs; 1e-8 relative is the agreement the contract asks for.
"""
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vdna._native import _core


def emd_numpy(h1, h2):
    """Per-row EMD in bins: normalise, cumulative sum of the difference, sum of absolute values."""
    h1 = np.asarray(h1, dtype=np.float64)
    h2 = np.asarray(h2, dtype=np.float64)
    p1 = h1 / h1.sum(axis=1, keepdims=True)
    p2 = h2 / h2.sum(axis=1, keepdims=True)
    return np.abs(np.cumsum(p1 - p2, axis=1)).sum(axis=1)


def emd_scipy(h1, h2):
    """Per-row 1-D Wasserstein distance between the bin indices weighted by the counts."""
    bins = np.arange(h1.shape[1], dtype=np.float64)
    return np.array([scipy.stats.wasserstein_distance(bins, bins, a, b) for a, b in zip(h1, h2)])


def fd_sqrtm(mu1, s1, mu2, s2):
    """The classic FID formula with scipy's matrix square root (reference only)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def random_spd(rng, d, n_samples=None):
    """A well-conditioned SPD matrix (sample covariance of 4d samples, eigenvalues ~0.25..2.25)."""
    n = n_samples or 4 * d
    x = rng.normal(size=(n, d))
    return np.atleast_2d(np.cov(x, rowvar=False))


@pytest.fixture
def restore_threads():
    yield
    _core.set_num_threads(0)


# ---------------------------------------------------------------- EMD: values
def test_emd_hand_values():
    h1 = [[1, 2, 1], [5, 0, 0], [0, 0, 0]]
    h2 = [[0, 1, 3], [0, 0, 5], [1, 0, 0]]
    out = _core.emd(h1, h2)
    assert out.dtype == np.float64 and out.shape == (3,)
    # CDFs (.25, .75, 1) vs (0, .25, 1): .25 + .5 + 0
    assert out[0] == pytest.approx(0.75, abs=1e-15)
    assert out[1] == 2.0  # a delta moved by two bins
    assert np.isnan(out[2])  # an empty histogram has no distribution


@pytest.mark.parametrize("k", [0, 1, 7, 99])
def test_emd_shifted_delta_is_shift(k):
    h1 = np.zeros((1, 100))
    h2 = np.zeros((1, 100))
    h1[0, 0] = 3
    h2[0, k] = 11
    assert _core.emd(h1, h2)[0] == k
    assert _core.emd(h2, h1)[0] == k


def test_emd_matches_scipy_wasserstein_and_numpy():
    rng = np.random.default_rng(1)
    h1 = rng.integers(0, 50, size=(40, 33))
    h2 = rng.integers(0, 50, size=(40, 33))
    h2[:, 5:9] = 0  # some empty bins
    ours = _core.emd(h1, h2)
    np.testing.assert_allclose(ours, emd_scipy(h1, h2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, emd_numpy(h1, h2), rtol=1e-12, atol=1e-12)
    f1 = rng.random((10, 7)) * 1e-3
    f2 = rng.random((10, 7)) * 1e5
    np.testing.assert_allclose(_core.emd(f1, f2), emd_scipy(f1, f2), rtol=1e-12, atol=1e-12)


def test_emd_one_bin_and_zero_neurons():
    np.testing.assert_array_equal(_core.emd([[3], [1]], [[5], [2]]), [0.0, 0.0])
    out = _core.emd(np.zeros((0, 4), np.int64), np.zeros((0, 4), np.int64))
    assert out.shape == (0,)


def test_emd_zero_row_is_nan_only_for_that_neuron():
    h1 = np.array([[0, 0, 0], [1, 1, 1]])
    h2 = np.array([[1, 2, 3], [0, 0, 0]])
    out = _core.emd(h1, h2)
    assert np.isnan(out).all()
    out = _core.emd(h1, h1 + [[1, 0, 0], [0, 0, 0]])
    assert np.isnan(out[0]) and out[1] == 0.0


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32, np.int64, np.uint64, np.float16, np.float32, np.float64]
)
def test_emd_count_dtypes(dtype):
    rng = np.random.default_rng(2)
    h1 = rng.integers(0, 100, size=(6, 9))
    h2 = rng.integers(0, 100, size=(6, 9))
    want = emd_numpy(h1, h2)
    np.testing.assert_allclose(_core.emd(h1.astype(dtype), h2.astype(dtype)), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_core.emd(h1.astype(dtype), h2), want, rtol=1e-12, atol=1e-12)


def test_emd_non_contiguous_and_byteswapped():
    rng = np.random.default_rng(3)
    big1 = rng.integers(0, 100, size=(12, 20))
    big2 = rng.integers(0, 100, size=(20, 12)).astype(np.float64)
    h1 = big1[::2, ::-2]  # strided, negative bin stride
    h2 = big2.T[::2, ::-2]  # column-major view
    assert not h1.flags.c_contiguous and not h2.flags.c_contiguous
    want = emd_numpy(h1, h2)
    np.testing.assert_allclose(_core.emd(h1, h2), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(_core.emd(h1.astype(">i8"), h2.astype(">f8")), _core.emd(h1, h2))
    # unaligned data, and strides that are not a multiple of the element size (record fields)
    raw = np.zeros(6 * 5 * 8 + 1, np.uint8)[1:].view(np.int64).reshape(6, 5)
    raw[:] = big1[:6, :5]
    assert not raw.flags.aligned
    np.testing.assert_array_equal(_core.emd(raw, big1[:6, :5]), 0.0)
    rec = np.zeros((6, 5), dtype=[("pad", "u1"), ("count", "<f8")])["count"]
    rec[:] = h2[:6, :5]
    assert rec.strides[1] % 8 != 0
    np.testing.assert_array_equal(_core.emd(rec, h2[:6, :5]), 0.0)


def test_emd_huge_counts():
    rng = np.random.default_rng(4)
    h1 = rng.integers(0, 2**10, size=(5, 16)) << 40  # > 2^40, exact int64 totals
    h2 = rng.integers(1, 2**10, size=(5, 16)) << 41
    np.testing.assert_allclose(_core.emd(h1, h2), emd_numpy(h1, h2), rtol=1e-12, atol=1e-12)
    # counts above 2^53 (not exact as doubles) still give the exact CDFs (.5, .5, 1) vs (0, 1, 1)
    e = _core.emd([[2**61 + 1, 0, 2**61 + 1]], [[0, 2**62 + 3, 0]])
    assert e[0] == pytest.approx(1.0, abs=1e-15)


# ---------------------------------------------------------------- EMD: properties
hist_rows = hnp.arrays(np.int64, (3, 12), elements=st.integers(0, 10**6)).map(lambda a: a + (a.sum(1) == 0)[:, None])


@settings(max_examples=150, deadline=None)
@given(a=hist_rows, b=hist_rows, c=hist_rows, scale=st.integers(1, 10**6))
def test_emd_metric_properties(a, b, c, scale):
    ab, ba = _core.emd(a, b), _core.emd(b, a)
    np.testing.assert_array_equal(_core.emd(a, a), 0.0)  # identity, exactly
    np.testing.assert_array_equal(ab, ba)  # symmetry, exactly (p1 - p2 = -(p2 - p1))
    assert np.all(ab <= _core.emd(a, c) + _core.emd(c, b) + 1e-12)  # triangle inequality
    np.testing.assert_allclose(_core.emd(a * scale, b), ab, rtol=1e-12, atol=1e-12)  # scale invariance
    np.testing.assert_allclose(_core.emd(a.astype(np.float64) / scale, b), ab, rtol=1e-12, atol=1e-12)
    assert np.all(ab >= 0) and np.all(ab <= a.shape[1] - 1 + 1e-12)


# ---------------------------------------------------------------- emd_many
def _many_setup(seed=5, k=4, c=70, b=11):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 30, size=(c, b))
    cands = rng.integers(0, 30, size=(k, c, b))
    return ref, cands


def test_emd_many_matches_loop_of_emd():
    ref, cands = _many_setup()
    per = np.stack([_core.emd(ref, c) for c in cands])
    np.testing.assert_allclose(_core.emd_many(ref, cands), per.mean(axis=1), rtol=1e-13)
    idx = np.array([3, 3, 0, 69, 12])
    np.testing.assert_allclose(_core.emd_many(ref, cands, index=idx), per[:, idx].mean(axis=1), rtol=1e-13)
    w = np.array([0.5, 2.0, 0.0, 1.0, 3.25])
    np.testing.assert_allclose(_core.emd_many(ref, cands, idx, w), per[:, idx] @ w, rtol=1e-13)
    w_all = np.linspace(0, 1, ref.shape[0])
    np.testing.assert_allclose(_core.emd_many(ref, cands, weights=w_all), per @ w_all, rtol=1e-13)


def test_emd_many_sequence_and_mixed_dtypes():
    ref, cands = _many_setup()
    seq = [cands[0].astype(np.float32), cands[1].astype(np.uint16), cands[2][:, ::-1].copy()[:, ::-1], cands[3]]
    np.testing.assert_array_equal(_core.emd_many(ref, seq), _core.emd_many(ref, cands))
    np.testing.assert_array_equal(_core.emd_many(ref, tuple(seq)), _core.emd_many(ref, cands))
    assert _core.emd_many(ref, []).shape == (0,)
    assert _core.emd_many(ref, np.zeros((0,) + ref.shape)).shape == (0,)


def test_emd_many_nan_for_empty_selected_neuron():
    ref, cands = _many_setup(k=2)
    ref[7] = 0
    out = _core.emd_many(ref, cands)
    assert np.isnan(out).all()
    out = _core.emd_many(ref, cands, index=[0, 1, 2])
    assert np.isfinite(out).all()


def test_thread_count_independence(restore_threads):
    ref, cands = _many_setup(seed=6, k=5, c=1000, b=40)
    results = []
    for n in (1, 2, 3):
        _core.set_num_threads(n)
        results.append((_core.emd(ref, cands[0]), _core.emd_many(ref, cands), _core.emd_many(ref, cands, weights=np.arange(1000.0))))
    for other in results[1:]:
        for x, y in zip(results[0], other):
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- EMD errors
def test_emd_errors():
    good = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"same .* shape.*\(3, 4\) and \(3, 5\)"):
        _core.emd(good, np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"h1 must be a 2-D"):
        _core.emd(np.ones(4), np.ones(4))
    bad = good.copy()
    bad[1, 2] = -1
    with pytest.raises(ValueError, match=r"h2 has a negative count at neuron 1, bin 2"):
        _core.emd(good, bad)
    with pytest.raises(ValueError, match=r"h1 has a negative count at neuron 1, bin 2"):
        _core.emd(bad.astype(np.int32), good)
    for v in (np.nan, np.inf):
        bad = good.copy()
        bad[2, 0] = v
        with pytest.raises(ValueError, match=r"h1 has a non-finite count at neuron 2, bin 0"):
            _core.emd(bad, good)
    with pytest.raises(TypeError, match=r"h1 must hold histogram counts.*complex128"):
        _core.emd(good.astype(complex), good)
    with pytest.raises(TypeError, match=r"h2 .*bool"):
        _core.emd(good, good > 0)
    with pytest.raises(ValueError, match=r"n_bins >= 1"):
        _core.emd(np.ones((3, 0)), np.ones((3, 0)))
    with pytest.raises(ValueError, match="overflow"):
        _core.emd([[2**63 - 1, 1]], [[1, 1]])


def test_emd_many_errors():
    ref, cands = _many_setup(k=2, c=5, b=4)
    with pytest.raises(ValueError, match=r"candidates has shape \(2, 5, 5\) but reference has shape \(5, 4\)"):
        _core.emd_many(ref, np.ones((2, 5, 5)))
    with pytest.raises(ValueError, match=r"candidates\[1\] has shape \(4, 4\)"):
        _core.emd_many(ref, [cands[0], np.ones((4, 4))])
    with pytest.raises(ValueError, match=r"candidates must be a 3-D"):
        _core.emd_many(ref, cands[0])
    with pytest.raises(ValueError, match=r"index\[1\] = 5 is out of range for 5 neurons"):
        _core.emd_many(ref, cands, index=[0, 5])
    with pytest.raises(ValueError, match=r"index\[0\] = -1 is out of range"):
        _core.emd_many(ref, cands, index=[-1])
    with pytest.raises(TypeError, match=r"index must hold integers.*float64"):
        _core.emd_many(ref, cands, index=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"selection is empty"):
        _core.emd_many(ref, cands, index=np.array([], np.int64))
    with pytest.raises(ValueError, match=r"weights has 3 values but the selection has 2 neurons"):
        _core.emd_many(ref, cands, index=[0, 1], weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"weights has 2 values but the selection has 5 neurons"):
        _core.emd_many(ref, cands, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"weights\[1\] = -1.*finite and >= 0"):
        _core.emd_many(ref, cands, index=[0, 1], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"weights\[0\] = nan"):
        _core.emd_many(ref, cands, index=[0, 1], weights=[np.nan, 1.0])
    bad = cands.copy()
    bad[1, 3, 2] = -4
    with pytest.raises(ValueError, match=r"candidates\[1\] has a negative count at neuron 3, bin 2"):
        _core.emd_many(ref, bad)
    bad_ref = ref.astype(np.float64)
    bad_ref[4, 0] = np.nan
    with pytest.raises(ValueError, match=r"reference has a non-finite count at neuron 4, bin 0"):
        _core.emd_many(bad_ref, cands)


# ---------------------------------------------------------------- NFD
def test_nfd_matches_numpy_and_hand_values():
    out = _core.nfd([0.0, 1.0, 3.0], [1.0, 4.0, 0.0], [0.0, -1.0, 1.0], [1.0, 9.0, 4.0])
    np.testing.assert_allclose(out, [0.0, 5.0, 8.0], atol=1e-14)
    rng = np.random.default_rng(7)
    mu1, mu2 = rng.normal(size=(2, 200)) * 10
    v1, v2 = rng.random((2, 200)) * 5
    want = (mu1 - mu2) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2)
    # the core uses (sqrt v1 - sqrt v2)^2, equal up to the rounding of the cancelling form
    np.testing.assert_allclose(_core.nfd(mu1, v1, mu2, v2), want, rtol=1e-12, atol=1e-12 * (v1 + v2).max())


def test_nfd_equal_variances_exactly_zero_and_nonnegative():
    v = np.array([1e-300, 0.3, 7.0, 1e300])
    np.testing.assert_array_equal(_core.nfd(np.zeros(4), v, np.zeros(4), v), 0.0)
    assert np.all(_core.nfd(np.zeros(4), v, np.zeros(4), v * (1 + 1e-15)) >= 0)


def test_nfd_nan_propagates_and_errors():
    out = _core.nfd([np.nan, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 2.0])
    assert np.isnan(out[0]) and out[1] == pytest.approx((1 - np.sqrt(2)) ** 2)
    with pytest.raises(ValueError, match=r"negative variance at neuron 1"):
        _core.nfd([0.0, 0.0], [1.0, -1.0], [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"var2 has 3 neurons but mu1 has 2"):
        _core.nfd([0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"mu1 must be a 1-D"):
        _core.nfd([[0.0]], [1.0], [0.0], [1.0])
    with pytest.raises(TypeError, match=r"var1 must hold real numbers"):
        _core.nfd([0.0], np.array([1j]), [0.0], [1.0])


# ---------------------------------------------------------------- FD
@pytest.mark.parametrize("d", [1, 2, 5, 20, 64])
def test_fd_matches_sqrtm_formula(d):
    rng = np.random.default_rng(8 + d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.normal(size=(2, d))
    ours = _core.fd(mu1, s1, mu2, s2)
    assert isinstance(ours, float)
    assert ours == pytest.approx(fd_sqrtm(mu1, s1, mu2, s2), rel=1e-8)
    assert _core.fd(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-10)


def test_fd_hand_values():
    # diagonal covariances: the sum of the per-dimension NFDs (1+1) + 0 + (4+0.25) + 9
    mu1, mu2 = np.array([1.0, 2, 3, 4]), np.array([0.0, 2, 5, 4])
    v1, v2 = np.array([1.0, 4, 0.25, 9]), np.array([4.0, 4, 1, 0])
    assert _core.fd(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(15.25, abs=1e-12)
    assert _core.fd(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(_core.nfd(mu1, v1, mu2, v2).sum(), abs=1e-12)
    # S1 = I, S2 with eigenvalues 1 and 3
    assert _core.fd([0, 0], np.eye(2), [0, 0], [[2, 1], [1, 2]]) == pytest.approx(4 - 2 * np.sqrt(3), abs=1e-14)
    # an indefinite S1 has its negative eigenvalue clipped: sqrt part diag(2, 0)
    assert _core.fd([0, 0], np.diag([4.0, -1.0]), [0, 0], np.diag([1.0, 9.0])) == pytest.approx(9.0, abs=1e-13)
    assert _core.fd(np.zeros(0), np.zeros((0, 0)), np.zeros(0), np.zeros((0, 0))) == 0.0


def test_fd_identical_is_zero():
    rng = np.random.default_rng(9)
    s = random_spd(rng, 50)
    mu = rng.normal(size=50)
    assert abs(_core.fd(mu, s, mu, s)) < 1e-12 * np.trace(s)


@pytest.mark.parametrize("n,d", [(2, 10), (10, 60), (30, 200)])
def test_fd_rank_deficient_covariances(n, d):
    """N < d: singular covariances. Reference: the nonzero eigenvalues of S1^(1/2) S2 S1^(1/2) are
    those of S1 S2 = X1^T X1 X2^T X2 / (n-1)^2, i.e. the squared singular values of
    X1 X2^T / (n-1) (X centred samples), so sum sqrt(lambda) is that matrix's nuclear norm."""
    rng = np.random.default_rng(10 + d)
    x1 = rng.normal(size=(n, d))
    x2 = rng.normal(size=(n, d)) * 1.5 + 0.2
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mu1, x2 - mu2
    s1, s2 = c1.T @ c1 / (n - 1), c2.T @ c2 / (n - 1)
    nuclear = np.linalg.svd(c1 @ c2.T / (n - 1), compute_uv=False).sum()
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * nuclear)
    ours = _core.fd(mu1, s1, mu2, s2)
    assert np.isfinite(ours) and ours >= 0
    assert ours == pytest.approx(want, rel=1e-7)
    same = _core.fd(mu1, s1, mu1, s1)
    assert np.isfinite(same) and abs(same) <= 1e-12 * np.trace(s1)


def test_fd_accepts_integers_and_non_contiguous():
    rng = np.random.default_rng(11)
    s1, s2 = random_spd(rng, 8), random_spd(rng, 8)
    big = np.zeros((16, 16))
    big[::2, ::2] = s1
    want = _core.fd(np.zeros(8), s1, np.ones(8), s2)
    assert _core.fd(np.zeros(8, np.int32), big[::2, ::2], np.ones(8), np.asfortranarray(s2)) == want


def test_fd_errors():
    eye = np.eye(3)
    z = np.zeros(3)
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(d, d\), got \(3, 2\)"):
        _core.fd(z, eye, z, np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"mu2 must have shape \(d,\), got \(4,\)"):
        _core.fd(z, eye, np.zeros(4), eye)
    with pytest.raises(ValueError, match=r"sigma1 must be a 2-D"):
        _core.fd(z, z, z, eye)
    bad = eye.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"sigma1 has a non-finite value at flat index 5"):
        _core.fd(z, bad, z, eye)
    with pytest.raises(ValueError, match=r"mu2 has a non-finite value"):
        _core.fd(z, eye, np.array([0, np.inf, 0]), eye)
    with pytest.raises(TypeError, match=r"mu1 must hold real numbers.*complex"):
        _core.fd(z.astype(complex), eye, z, eye)
