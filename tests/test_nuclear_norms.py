"""vdna._core.centred_nuclear_norms (the SVDs of a stability curve's subsets) against NumPy's SVD."""
import numpy as np
import pytest

from vdna import _native
from vdna._native import _core

EPS = np.finfo(np.float64).eps


def _numpy_norm(points, rows):
    x = points[rows]
    if len(rows) < 2:
        return 0.0
    return float(np.linalg.svd(x - x.mean(axis=0), compute_uv=False).sum())


def _tol(points, rows):
    # Both routes are backward stable: each of the k = min(N, r) singular values is exact for a matrix
    # within p(m, k) eps ||A||_2 of the centred A (m = max(N, r)); with p(m, k) taken as m + k the sums
    # agree within 2 k (m + k) eps smax. Each route's mean is off by rounding, at most N eps |x|max per
    # coordinate; subtracting it from every point adds a rank-one ΔA = 1 δᵀ, which moves the nuclear
    # norm by at most ||ΔA||_* = sqrt(N) |δ| <= sqrt(N r) N eps |x|max, once per route.
    x = points[rows]
    if len(rows) < 2:
        return 0.0
    n, r = x.shape
    m, k = max(n, r), min(n, r)
    smax = float(np.linalg.svd(x - x.mean(axis=0), compute_uv=False)[0])
    return 2 * k * (m + k) * EPS * smax + 2 * np.sqrt(n * r) * n * EPS * float(np.abs(x).max())


def _call(points, subsets):
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in subsets])]).astype(np.int64)
    index = np.concatenate([np.asarray(s, dtype=np.int64) for s in subsets]) if subsets else np.zeros(0, np.int64)
    return _core.centred_nuclear_norms(points, offsets, index)


@pytest.mark.parametrize("n, r", [(300, 40), (300, 150), (90, 200), (500, 100)])
def test_against_numpy_both_orientations_and_routes(n, r):
    # subsets of 2..n points: tall and wide blocks, with min(N, r) at or below 64 (dgesdd) and above
    # it (the two-stage reduction); points far from 0 relative to their spread, a decaying spectrum
    rng = np.random.default_rng(n * 7 + r)
    points = rng.standard_normal((n, r)) * np.geomspace(1.0, 1e-6, r) + 3.0
    subsets = [rng.permutation(n)[:size] for size in (2, 3, 17, 64, 65, 130, n)]
    subsets.append(np.repeat(subsets[3], 2))  # every point twice
    got = _call(points, subsets)
    for value, rows in zip(got, subsets):
        assert abs(value - _numpy_norm(points, rows)) <= _tol(points, rows)


def test_hand_worked_and_degenerate_subsets():
    # centred columns (1, -1, 0, 0) and (0, 0, 2, -2) are orthogonal: singular values √2 and 2√2
    points = np.array([[6.0, 7.0], [4.0, 7.0], [5.0, 9.0], [5.0, 5.0]])
    got = _call(points, [[0, 1, 2, 3], [], [2], [1, 1], [3, 2, 1, 0]])
    assert got[0] == pytest.approx(3 * np.sqrt(2.0), rel=64 * EPS)
    assert got[1] == got[2] == got[3] == 0.0
    assert got[4] == pytest.approx(got[0], rel=64 * EPS)
    assert _call(points, []).shape == (0,)
    # zero dimensions: every norm is 0
    assert _call(np.zeros((3, 0)), [[0, 1, 2]]).tolist() == [0.0]


def test_input_conversion_and_thread_independence():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((200, 160))
    points = base[:, ::2]  # non-contiguous: converted, same values as a contiguous copy
    subsets = [rng.permutation(200)[:s] for s in (10, 100, 150, 200, 90)]
    want = _call(np.ascontiguousarray(points), subsets)
    np.testing.assert_array_equal(_call(points, subsets), want)
    ints = rng.integers(-5, 5, size=(50, 8))
    np.testing.assert_array_equal(_call(ints, [np.arange(50)]), _call(ints.astype(np.float64), [np.arange(50)]))
    try:
        for threads in (1, 2, 3):
            _core.set_num_threads(threads)
            np.testing.assert_array_equal(_call(points, subsets), want)
    finally:
        _core.set_num_threads(0)  # the default: one per CPU


def test_blas_thread_setting_is_restored():
    lib = _native._blas_handle
    get, put = lib.scipy_openblas_get_num_threads, lib.scipy_openblas_set_num_threads
    before = get()
    try:
        put(2)
        _call(np.random.default_rng(0).standard_normal((100, 80)), [np.arange(100), np.arange(70)])
        assert get() == 2
    finally:
        put(before)


def test_errors_name_the_problem():
    points = np.ones((4, 2))
    with pytest.raises(ValueError, match=r"index\[1\] = 4"):
        _core.centred_nuclear_norms(points, np.array([0, 2]), np.array([0, 4]))
    with pytest.raises(ValueError, match="offsets decrease at subset 1"):
        _core.centred_nuclear_norms(points, np.array([0, 3, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="offsets end at 3 but index has 2"):
        _core.centred_nuclear_norms(points, np.array([0, 3]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"offsets\[0\] is 1"):
        _core.centred_nuclear_norms(points, np.array([1, 2]), np.array([0, 1]))
    bad = points.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="point 2 has a non-finite"):
        _core.centred_nuclear_norms(bad, np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="points must be a 2-D"):
        _core.centred_nuclear_norms(np.ones(4), np.array([0, 1]), np.array([0]))
    with pytest.raises(TypeError, match="index must hold integers"):
        _core.centred_nuclear_norms(points, np.array([0, 1]), np.array([0.5]))
