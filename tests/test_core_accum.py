"""vdna._core accumulators against independent NumPy references (tests/reference_binning.py)."""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_binning import neuron_values
from reference_binning import per_image_means as image_means
from reference_binning import reference_histogram as ref_hist
from vdna._native import _core

RNG = np.random.default_rng(1234)


def random_acts(shape, dtype=np.float32, nan_frac=0.0, inf_frac=0.0, scale=3.0):
    x = RNG.standard_normal(shape) * scale
    x[RNG.random(shape) < 0.2] = 0.0  # ReLU-like mass at zero
    if nan_frac:
        x[RNG.random(shape) < nan_frac] = np.nan
    if inf_frac:
        m = RNG.random(shape) < inf_frac
        x[m] = np.where(RNG.random(m.sum()) < 0.5, np.inf, -np.inf)
    return x.astype(dtype)


def random_ranges(C):
    mins = -RNG.random(C) * 4
    maxs = RNG.random(C) * 4
    mins[0] = maxs[0] = 0.5  # degenerate range: half = 1e-8
    return mins, maxs


# The float32 histogram kernels this CPU runs (the tests of the float32 paths run each of them; the
# rest run under the process's choice: "auto", or VDNA_HIST_KERNEL).
HIST_KERNELS = [k for k in ("portable", "avx2", "avx512") if _core.hist_kernel_available(k)]


@contextlib.contextmanager
def hist_kernel(name):
    before = _core.hist_kernel()
    _core.set_hist_kernel(name)
    try:
        yield
    finally:
        _core.set_hist_kernel(before)


@pytest.fixture(params=HIST_KERNELS)
def kernel(request):
    """Runs the test once per float32 kernel this CPU runs, with that kernel set."""
    with hist_kernel(request.param):
        yield request.param


def hist_of(x, mins, maxs, bins, layout="channels"):
    h = _core.HistAccumulator(mins, maxs, bins, layout=layout)
    h.update(x)
    return h


# ----------------------------------------------------------------------------- histograms
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bins", [1, 7, 1000])
@pytest.mark.parametrize(
    "layout,shape", [("channels", (3, 5, 4, 6)), ("channels", (9, 5)), ("channels", (2, 5, 300)), ("tokens", (3, 17, 5))]
)
def test_hist_matches_reference(dtype, bins, layout, shape):
    x = random_acts(shape, dtype, nan_frac=0.02, inf_frac=0.02)
    C = shape[1] if layout == "channels" else shape[2]
    mins, maxs = random_ranges(C)
    h = hist_of(x, mins, maxs, bins, layout)
    counts, nans = ref_hist(x, mins, maxs, bins, layout)
    np.testing.assert_array_equal(h.counts, counts)
    np.testing.assert_array_equal(h.nan_counts, nans)
    assert h.num_images == shape[0]
    assert h.counts.dtype == np.int64 and h.counts.shape == (C, bins)
    # every non-NaN value lands in exactly one bin
    assert h.counts.sum() + h.nan_counts.sum() == x.size


def float32_thresholds(mins, maxs, bins):
    """(C, bins-1) float32: the smallest float32 of each bin k >= 1 per neuron, by bisection over the
    ordered float32 bit patterns with the float64 NumPy formula (independent of the C core)."""
    lo_, hi_ = 1.2 * np.asarray(mins, np.float64), 1.2 * np.asarray(maxs, np.float64)
    centre, half = ((lo_ + hi_) / 2)[:, None], ((hi_ - lo_) / 2 + 1e-8)[:, None]
    k = np.arange(1, bins, dtype=np.int64)[None, :]

    def key_to_f32(key):  # inverse of the order-preserving map float32 -> uint32
        u = np.where(key & 0x80000000, key & 0x7FFFFFFF, ~key & 0xFFFFFFFF).astype(np.uint32)
        return u.view(np.float32)

    def bin_of(xf):
        z = np.clip((xf.astype(np.float64) - centre) / half, -1.0, 1.0)
        return np.minimum(bins - 1, np.floor((z + 1) * bins / 2))

    shape = (len(mins), bins - 1)
    lo = np.full(shape, 0x007FFFFF, np.int64)  # key of -inf: bin 0 < k
    hi = np.full(shape, 0xFF800000, np.int64)  # key of +inf: bin bins-1 >= k
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        up = bin_of(key_to_f32(mid)) >= k
        hi = np.where(up, mid, hi)
        lo = np.where(up, lo, mid)
    return key_to_f32(hi)


@pytest.mark.parametrize("bins", [1, 2, 7, 1000, 10000])
def test_hist_float32_values_on_and_next_to_every_threshold(bins, kernel):
    """Every float32 bin threshold and its float32 neighbours, plus extremes (+-inf, +-max, denormals,
    +-0, NaN) land where the float64 formula puts them, in every path: tokens float32 (16-neuron
    blocks plus leftovers), channels float32, the same values as float64; 1 and 2 threads; each
    float32 kernel."""
    rng = np.random.default_rng(bins)
    C = 19
    mins = (rng.random(C) - 0.5) * 20
    maxs = mins + rng.random(C) * 10
    mins[1::5], maxs[1::5] = 0.0, rng.random(len(mins[1::5])) * 4  # ReLU-like
    maxs[2::5] = 1 + rng.random(len(maxs[2::5]))
    mins[2::5] = -maxs[2::5]  # symmetric: x = 0 gives t = bins/2 exactly
    mins[3::5] = maxs[3::5]  # min == max: half = 1e-8
    mins[4], maxs[4] = 1000.5, 1000.501  # narrow, far from zero
    thr = float32_thresholds(mins, maxs, bins)
    vals = np.concatenate(
        [np.nextafter(thr, np.float32(-np.inf)), thr, np.nextafter(thr, np.float32(np.inf))], axis=1
    )
    tiny = np.finfo(np.float32).smallest_subnormal
    extremes = np.array(
        [np.inf, -np.inf, np.finfo(np.float32).max, -np.finfo(np.float32).max, tiny, -tiny,
         np.finfo(np.float32).tiny, 0.0, -0.0, np.nan, 1e30, -1e30], np.float32)
    vals = np.concatenate([vals, np.broadcast_to(extremes, (C, len(extremes)))], axis=1)  # (C, S)
    vals = vals[:, rng.permutation(vals.shape[1])]
    want_counts, want_nans = ref_hist(vals.T[None], mins, maxs, bins, layout="tokens")
    assert want_counts.sum() == C * (vals.shape[1] - 1)
    arrays = [(vals.T[None].copy(), "tokens"), (vals[None].copy(), "channels"), (vals[None].astype(np.float64), "channels")]
    before = _core.get_num_threads()
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            for x, layout in arrays:
                h = hist_of(x, mins, maxs, bins, layout=layout)
                np.testing.assert_array_equal(h.counts, want_counts, err_msg=f"{layout} {x.dtype} {threads}")
                np.testing.assert_array_equal(h.nan_counts, want_nans)
    finally:
        _core.set_num_threads(before)


def test_hist_values_on_bin_edges():
    # min -5, max 5 -> lo -6, hi 6 (1.2*5 == 6.0), centre 0, half 6 + 1e-8; B = 4: interior edges at
    # x = -half/2, 0, half/2 exactly (halving is exact). A value on an edge goes to the upper bin.
    assert 1.2 * 5 == 6.0
    half = 6 + 1e-8
    x = np.array([0.0, -half / 2, half / 2, -half, half, np.nextafter(-half / 2, -np.inf), 1e300, -np.inf, np.inf, np.nan])
    h = hist_of(x.reshape(1, 1, -1), [-5.0], [5.0], 4)
    np.testing.assert_array_equal(h.counts, [[3, 1, 1, 4]])  # -half, below -half/2, -inf | -half/2 | 0 | the rest
    np.testing.assert_array_equal(h.nan_counts, [1])
    counts, _ = ref_hist(x.reshape(1, 1, -1), [-5.0], [5.0], 4)
    np.testing.assert_array_equal(h.counts, counts)


def test_hist_edges_many_bins():
    # values constructed on every interior edge of B = 1000 bins, in float64, against the formula
    B, mins, maxs = 1000, np.array([-2.0, 0.0]), np.array([3.0, 1e-3])
    lo, hi = 1.2 * mins, 1.2 * maxs
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + 1e-8
    k = np.arange(B + 1) / B * 2 - 1
    x = (centre[None, :] + k[:, None] * half[None, :]).T[None]  # (1, 2, B+1)
    h = hist_of(x, mins, maxs, B)
    np.testing.assert_array_equal(h.counts, ref_hist(x, mins, maxs, B)[0])


def test_hist_empty_batch_and_one_image():
    mins, maxs = random_ranges(4)
    h = _core.HistAccumulator(mins, maxs, 10)
    h.update(np.zeros((0, 4, 3, 3), np.float32))
    assert h.num_images == 0 and h.counts.sum() == 0
    x = random_acts((1, 4, 3, 3))
    h.update(x)
    assert h.num_images == 1
    np.testing.assert_array_equal(h.counts, ref_hist(x, mins, maxs, 10)[0])


def test_hist_noncontiguous_inputs_give_the_same_counts():
    base = random_acts((4, 6, 8, 10), np.float32, nan_frac=0.01)
    mins, maxs = random_ranges(6)
    views = {
        "strided": base[:, :, ::2, 1::3],
        "negative": base[::-1, :, ::-1, ::-2],
        "channels_last": np.moveaxis(np.ascontiguousarray(np.moveaxis(base, 1, -1)), -1, 1),
        "transposed_spatial": base.transpose(0, 1, 3, 2),
        "neurons_reversed": base[:, ::-1],
        "byteswapped": base.astype(">f4"),
    }
    for name, v in views.items():
        m = maxs[::-1] if name == "neurons_reversed" else maxs
        n = mins[::-1] if name == "neurons_reversed" else mins
        got = hist_of(v, n, m, 50)
        counts, nans = ref_hist(np.ascontiguousarray(v), n, m, 50)
        np.testing.assert_array_equal(got.counts, counts, err_msg=name)
        np.testing.assert_array_equal(got.nan_counts, nans, err_msg=name)


def test_hist_misaligned_buffer():
    raw = np.zeros(4 * 3 * 5 * 4 + 1, np.uint8)
    x = np.frombuffer(raw.data, dtype=np.float32, count=60, offset=1).reshape(4, 3, 5)  # misaligned
    assert not x.flags.aligned
    y = random_acts((4, 3, 5))
    raw[1:] = np.frombuffer(y.tobytes(), np.uint8)
    mins, maxs = random_ranges(3)
    np.testing.assert_array_equal(hist_of(x, mins, maxs, 9).counts, ref_hist(y, mins, maxs, 9)[0])


@pytest.mark.parametrize("bins", [1, 7, 1000])
@pytest.mark.parametrize("row_len", [37, 48, 41])  # contiguous; padded to a 64-byte multiple; padded, odd
def test_hist_tokens_float32_every_start_in_a_cache_line(bins, row_len, kernel):
    """Tokens float32 (the 16-neuron lanes path, which with an intrinsics kernel aligns its blocks to
    64-byte lines and masks the partial ones; each kernel): a view starting at each float of a line, 37 neurons, rows
    padded or not, values on and one ulp beside bin edges, zeros, NaN, +-Inf; the same counts as
    the reference for 1 to 3 threads and batches split anywhere."""
    N, T, C = 4, 30, 37
    mins, maxs = random_ranges(C)
    x = random_acts((N, T, C), nan_frac=0.01, inf_frac=0.01)
    lo, hi = 1.2 * mins, 1.2 * maxs
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + 1e-8
    k = RNG.integers(0, bins + 1, size=(N, T, C))
    edges = (centre + half * (2.0 * k / bins - 1.0)).astype(np.float32)
    step = RNG.integers(-1, 2, size=edges.shape).astype(np.float32)
    edges = np.nextafter(edges, edges + step)  # on the edge, or one ulp either side
    on_edge = RNG.random(x.shape) < 0.3
    x[on_edge] = edges[on_edge]
    counts, nans = ref_hist(x, mins, maxs, bins, layout="tokens")
    old = _core.get_num_threads()
    try:
        for start in range(16):
            raw = np.full(N * T * row_len + 32, np.nan, np.float32)
            base = (-(raw.ctypes.data // 4) + start) % 16  # the view starts `start` floats into a line
            view = raw[base : base + N * T * row_len].reshape(N, T, row_len)[:, :, :C]
            view[...] = x
            assert (view.ctypes.data // 4) % 16 == start
            for threads in (1, 2, 3):
                _core.set_num_threads(threads)
                for cut in (0, 1, N):
                    h = _core.HistAccumulator(mins, maxs, bins, layout="tokens")
                    for part in (view[:cut], view[cut:]):
                        h.update(part)
                    np.testing.assert_array_equal(h.counts, counts, err_msg=f"start {start}, {threads} threads")
                    np.testing.assert_array_equal(h.nan_counts, nans)
    finally:
        _core.set_num_threads(old)


def test_hist_tokens_equals_channels():
    x = random_acts((3, 11, 7))  # (N, T, C)
    mins, maxs = random_ranges(7)
    tok = hist_of(x, mins, maxs, 20, "tokens")
    chan = hist_of(np.moveaxis(x, 2, 1), mins, maxs, 20, "channels")
    np.testing.assert_array_equal(tok.counts, chan.counts)
    assert tok.layout == "tokens" and chan.layout == "channels"


def test_hist_huge_counts_via_add_counts():
    h = _core.HistAccumulator([0.0, 0.0], [1.0, 1.0], 3)
    big = np.array([[2**40, 0, 2**33], [3, 2**31 + 5, 0]], np.int64)
    h.add_counts(big, np.array([2**35, 0]), 7)
    h.add_counts(big, [1, 2], 2**33)
    np.testing.assert_array_equal(h.counts, 2 * big)
    np.testing.assert_array_equal(h.nan_counts, [2**35 + 1, 2])
    assert h.num_images == 7 + 2**33
    with pytest.raises(ValueError, match="overflow"):
        h.add_counts(np.full((2, 3), np.iinfo(np.int64).max, np.int64), [0, 0], 0)
    np.testing.assert_array_equal(h.counts, 2 * big)  # unchanged by the failure
    h.update(np.array([[[0.5], [0.5]]]))
    assert h.counts[0, 1] == 1 and h.counts[1, 1] == 2 * (2**31 + 5) + 1


def test_hist_merge_and_reset():
    mins, maxs = random_ranges(5)
    a_x, b_x = random_acts((3, 5, 6)), random_acts((2, 5, 6))
    a, b = hist_of(a_x, mins, maxs, 16), hist_of(b_x, mins, maxs, 16)
    a.merge(b)
    ref = hist_of(np.concatenate([a_x, b_x]), mins, maxs, 16)
    np.testing.assert_array_equal(a.counts, ref.counts)
    assert a.num_images == 5
    a.reset()
    assert a.num_images == 0 and a.counts.sum() == 0 and a.nan_counts.sum() == 0
    np.testing.assert_array_equal(a.mins, mins)
    np.testing.assert_array_equal(a.maxs, maxs)
    assert a.bins == 16 and a.n_neurons == 5


@pytest.mark.parametrize("spatial", [(7, 7), (14, 14), (5, 40)])
@pytest.mark.parametrize("bins", [2, 10, 1000])
def test_hist_relu_float32_runs(spatial, bins, kernel):
    """Post-ReLU float32 maps (half exact zeros, both signs; the path that counts zeros apart with an
    intrinsics kernel; each kernel), with NaN, +-Inf and values on bin edges: the reference counts, whatever the
    thread count or batch split."""
    rng = np.random.default_rng(7)
    shape = (6, 5) + spatial
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)
    x[rng.random(shape) < 0.3] = -0.0
    mins = np.array([0.0, -2.0, 0.0, -1.0, 0.3])
    maxs = np.array([3.0, 2.0, 0.0, 4.0, 0.3])  # ReLU, symmetric (0 is a bin edge), degenerate
    lo, hi = 1.2 * mins, 1.2 * maxs
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + 1e-8
    edges = (centre[:, None] + half[:, None] * np.linspace(-1, 1, bins + 1)[None, :]).astype(np.float32)
    flat = x.reshape(6, 5, -1)
    for c in range(5):  # some values on the float32 edges of each neuron
        k = min(edges.shape[1], flat.shape[2] // 3)
        flat[1, c, :k] = edges[c, :k]
        flat[2, c, :k] = np.nextafter(edges[c, :k], np.float32(np.inf))
    flat[3, :, :4] = [np.nan, np.inf, -np.inf, np.nan]
    want, want_nan = ref_hist(x, mins, maxs, bins)
    assert want[1, bins // 2] >= np.sum(x[:, 1] == 0)  # zeros (both signs) in the upper bin at the edge
    old = _core.get_num_threads()
    try:
        for threads in (1, 2):
            _core.set_num_threads(threads)
            for cut in (0, 1, 4):
                h = _core.HistAccumulator(mins, maxs, bins)
                h.update(x[:cut])
                h.update(x[cut:])
                np.testing.assert_array_equal(h.counts, want)
                np.testing.assert_array_equal(h.nan_counts, want_nan)
    finally:
        _core.set_num_threads(old)


def test_hist_kernel_choice():
    """The portable kernel always runs; "auto" resolves to one that runs; names are checked."""
    assert HIST_KERNELS[0] == "portable" and _core.hist_kernel() in HIST_KERNELS
    assert _core.hist_kernel_available("auto") and not _core.hist_kernel_available("sse9")
    with pytest.raises(ValueError, match="'sse9' is not a histogram kernel"):
        _core.set_hist_kernel("sse9")
    for name in ("avx2", "avx512"):
        if name not in HIST_KERNELS:
            with pytest.raises(ValueError, match=f"'{name}'"):
                _core.set_hist_kernel(name)
    for name in HIST_KERNELS:
        with hist_kernel(name):
            assert _core.hist_kernel() == name


@pytest.mark.parametrize("value", ["portable", "auto", "sse9"])
def test_hist_kernel_from_the_environment(value):
    """VDNA_HIST_KERNEL sets the kernel of a fresh process; an invalid value fails every update with a
    message naming the variable (so a forced CI run cannot silently test another kernel)."""
    code = (
        "import numpy as np\n"
        "from vdna._native import _core\n"
        "h = _core.HistAccumulator(np.zeros(3), np.ones(3), 10)\n"
        "try:\n"
        "    h.update(np.zeros((1, 3, 4), np.float32))\n"
        "    print('kernel', _core.hist_kernel(), h.counts.sum())\n"
        "except ValueError as exc:\n"
        "    print('error', exc)\n"
    )
    env = dict(os.environ, VDNA_HIST_KERNEL=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    if value == "sse9":
        assert out.startswith("error") and "VDNA_HIST_KERNEL='sse9' is not a histogram kernel" in out
    else:
        name = out.split()[1]
        assert out.split()[0] == "kernel" and out.split()[2] == "12"
        assert name == "portable" if value == "portable" else name in HIST_KERNELS


def _split_counts(x, splits, mins, maxs, bins):
    h = _core.HistAccumulator(mins, maxs, bins)
    for part in np.split(x, splits):
        h.update(part)
    return h.counts


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    cut=st.integers(0, 12),
    bins=st.integers(1, 64),
    spatial=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_hist_merge_equals_sequential_and_split_invariance(n, cut, bins, spatial, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 3, spatial)) * 2).astype(np.float32)
    mins, maxs = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 0.5, 3.0])
    cut = min(cut, n)
    a, b = hist_of(x[:cut], mins, maxs, bins), hist_of(x[cut:], mins, maxs, bins)
    a.merge(b)
    whole = hist_of(x, mins, maxs, bins)
    np.testing.assert_array_equal(a.counts, whole.counts)
    np.testing.assert_array_equal(_split_counts(x, [cut], mins, maxs, bins), whole.counts)
    assert a.num_images == n


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), layout=st.sampled_from(["channels", "tokens"]))
def test_results_independent_of_thread_count(seed, layout):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6, 40, 50)) * 2).astype(np.float32)
    C = 40 if layout == "channels" else 50
    mins, maxs = -np.ones(C), np.ones(C)
    old = _core.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            _core.set_num_threads(threads)
            h = hist_of(x, mins, maxs, 33, layout)
            m = _core.MomentAccumulator(C, layout=layout)
            m.update(x)
            r = _core.RangeAccumulator(C, layout=layout)
            r.update(x)
            results.append((h.counts, m.mean, m.var, r.mins, r.maxs))
    finally:
        _core.set_num_threads(old)
    for first, second in zip(*results):
        np.testing.assert_array_equal(first, second)


# ----------------------------------------------------------------------------- moments
@pytest.mark.parametrize("layout,shape", [("channels", (7, 4, 3, 5)), ("channels", (6, 4)), ("tokens", (5, 9, 4))])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_moments_match_numpy(layout, shape, dtype):
    x = random_acts(shape, dtype)
    C = shape[1] if layout == "channels" else shape[2]
    m = _core.MomentAccumulator(C, layout=layout)
    m.update(x[:2])
    m.update(x[2:])
    means = image_means(x, layout)
    # float64 reductions of <= 10^3 exact (widened) values in two orders: <= n*eps64 ~ 1e-13 relative;
    # the variance loses a further digit to cancellation (values ~1, so atol at 1e-13..1e-12 for zeros).
    np.testing.assert_allclose(m.mean, means.mean(axis=0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(m.var, means.var(axis=0, ddof=1), rtol=1e-11, atol=1e-13)
    count, mean, m2 = m.state()
    assert count == shape[0]
    np.testing.assert_allclose(m2, means.var(axis=0, ddof=1) * (shape[0] - 1), rtol=1e-11, atol=1e-12)


def test_moments_one_image_large_mean_nan_and_state():
    m = _core.MomentAccumulator(2)
    with pytest.raises(ValueError, match="no images"):
        m.var
    m.update(np.array([[[1.0, 3.0], [5.0, 5.0]]]))
    np.testing.assert_array_equal(m.mean, [2.0, 5.0])
    np.testing.assert_array_equal(m.var, [0.0, 0.0])
    # mean 1e9, spread 1: the per-image variance survives
    g = _core.MomentAccumulator(1)
    g.update(1e9 + np.arange(5.0).reshape(5, 1))
    # Shifted (first-image) accumulation keeps the spread: deviations 0..4 are exact, so the result is exact
    # but for the mean update's rounding (1e9 * eps64 = 1.1e-7 absolute on the mean, squared away); a naive
    # sum of squares loses everything (1e18 * eps64 = 111 >> 2.5). 1e-9 is far from both.
    np.testing.assert_allclose(g.var, [2.5], rtol=1e-9)
    # NaN propagates and is counted
    g.update(np.array([[np.nan]]))
    assert np.isnan(g.mean[0]) and g.nan_counts[0] == 1
    # set_state replaces the state
    m2 = _core.MomentAccumulator(2)
    m2.set_state(*m.state())
    np.testing.assert_array_equal(m2.mean, m.mean)
    assert m2.num_images == 1
    with pytest.raises(ValueError, match="negative m2"):
        m2.set_state(3, [0.0, 0.0], [1.0, -1.0])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        m2.set_state(3, [0.0, 0.0, 0.0], [1.0, 1.0])


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 10), cut=st.integers(0, 10), seed=st.integers(0, 2**32 - 1))
def test_moments_merge_equals_sequential(n, cut, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 4)) * 5 + 100
    cut = min(cut, n)
    a, b, s = (_core.MomentAccumulator(3) for _ in range(3))
    a.update(x[:cut])
    b.update(x[cut:])
    a.merge(b)
    s.update(x)
    # Merge vs sequential: the same float64 values in two summation orders, mean ~100 with spread 5 over <= 10
    # images: <= n*eps64 ~ 1e-15 relative for the mean; the variance (spread^2 / mean^2 ~ 1/400 of the squared
    # scale) loses ~3 digits to cancellation, hence 1e-9 there.
    np.testing.assert_allclose(a.mean, s.mean, rtol=1e-13)
    if n > 1:
        np.testing.assert_allclose(a.var, s.var, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- covariance
@pytest.mark.parametrize("layout,shape", [("channels", (12, 5, 3, 2)), ("channels", (30, 6)), ("tokens", (9, 4, 5))])
def test_cov_matches_numpy(layout, shape):
    x = random_acts(shape, np.float32)
    C = shape[1] if layout == "channels" else shape[2]
    c = _core.CovAccumulator(C, layout=layout)
    c.update(x[:4])
    c.update(x[4:])
    means = image_means(x, layout)
    np.testing.assert_allclose(c.mean, means.mean(axis=0), rtol=1e-12, atol=1e-13)
    # np.cov goes through BLAS (CPU-dependent blocking) and the core through its own loop: each within
    # n*eps64 ~ 1e-14 relative of the sum of |products|; off-diagonal entries near 0 are relative to the
    # matrix scale (~1), hence the generous 1e-10 / 1e-12 pair.
    np.testing.assert_allclose(c.cov, np.cov(means, rowvar=False), rtol=1e-10, atol=1e-12)
    assert np.array_equal(c.cov, c.cov.T)


def test_cov_large_mean_small_spread():
    rng = np.random.default_rng(5)
    y = rng.standard_normal((2000, 8))
    y[:, 1] += 0.5 * y[:, 0]
    x = 1e6 + y  # mean 1e6, spread 1
    c = _core.CovAccumulator(8)
    for part in np.array_split(x, 7):
        c.update(part)
    # Mean 1e6, spread 1: the inputs x = 1e6 + y are rounded to 1e6*eps64 ~ 1.2e-10, so x - mean differs from
    # y by ~1e-10 per value; products and the 2000-term sum keep that at ~1e-10 * sqrt(2000) ~ 5e-9 absolute.
    # atol 1e-7 (entries ~1) is met by a shifted algorithm and missed by E[x^2]-E[x]^2 (1e12 * eps64 ~ 1e-4).
    np.testing.assert_allclose(c.cov, np.cov(y, rowvar=False), rtol=0, atol=1e-7)  # derived above
    # Means ~1e6: NumPy's pairwise sum errs by ~log2(n)*eps64 ~ 11 * 1.1e-16 ~ 1.2e-15 relative, the core's
    # shifted sum less; 1e-14 leaves a factor 8.
    np.testing.assert_allclose(c.mean, x.mean(axis=0), rtol=1e-14)


def test_cov_merge_with_different_shifts_and_state():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, 4)) + np.array([1e5, -3.0, 0.0, 7.0])
    a, b = _core.CovAccumulator(4), _core.CovAccumulator(4)
    a.update(x[:15])
    b.update(x[15:])  # first images differ -> different shifts
    b.merge(a)
    # One column has mean 1e5: its inputs are rounded to 1e5*eps64 ~ 1e-11 absolute, so centred values and
    # their 40-term products carry ~1e-11 * sqrt(40) relative to spread 1; 1e-9 absolute/relative covers the
    # merge of differently shifted states, which must not lose more than that.
    np.testing.assert_allclose(b.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.mean, x.mean(axis=0), rtol=1e-14)
    count, mean, m2 = b.state()
    assert count == 40 and m2.shape == (4, 4)
    s = _core.CovAccumulator(4)
    s.set_state(count, mean, m2)
    s.update(x[:3])
    ref = np.concatenate([x, x[:3]])
    np.testing.assert_allclose(s.cov, np.cov(ref, rowvar=False), rtol=1e-9, atol=1e-9)
    one = _core.CovAccumulator(4)
    one.update(x[:1])
    np.testing.assert_array_equal(one.cov, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        s.set_state(3, mean, m2 + np.triu(np.ones((4, 4)), 1))
    with pytest.raises(ValueError, match="no images"):
        _core.CovAccumulator(4).cov
    nan = _core.CovAccumulator(2)
    nan.update(np.array([[1.0, np.nan], [2.0, 3.0]]))
    assert np.isnan(nan.mean[1]) and nan.mean[0] == 1.5
    np.testing.assert_array_equal(nan.nan_counts, [0, 1])


# ----------------------------------------------------------------------------- ranges
@pytest.mark.parametrize("layout,shape", [("channels", (3, 4, 5, 6)), ("channels", (3, 4, 100)), ("tokens", (2, 7, 4))])
def test_ranges_match_numpy(layout, shape):
    x = random_acts(shape, np.float32, nan_frac=0.05, inf_frac=0.02)
    C = shape[1] if layout == "channels" else shape[2]
    r = _core.RangeAccumulator(C, layout=layout)
    r.update(x)
    v = neuron_values(x, layout)
    np.testing.assert_array_equal(r.mins, np.nanmin(v, axis=0))
    np.testing.assert_array_equal(r.maxs, np.nanmax(v, axis=0))
    np.testing.assert_array_equal(r.nan_counts, np.isnan(v).sum(axis=0))


def test_ranges_all_nan_neuron_merge_and_state():
    r = _core.RangeAccumulator(2, layout="tokens")
    with pytest.raises(ValueError, match="no images"):
        r.mins
    r.update(np.array([[[1.0, np.nan], [-np.inf, np.nan]]]))
    assert r.mins[0] == -np.inf and r.maxs[0] == 1.0
    assert np.isnan(r.mins[1]) and np.isnan(r.maxs[1])
    s = _core.RangeAccumulator(2, layout="tokens")
    s.set_state(3, [0.0, -2.0], [5.0, 2.0])
    r.merge(s)
    np.testing.assert_array_equal(r.mins, [-np.inf, -2.0])
    np.testing.assert_array_equal(r.maxs, [5.0, 2.0])
    assert r.num_images == 4
    with pytest.raises(ValueError, match="neuron 1"):
        s.set_state(1, [0.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize("kind", ["moments", "cov", "ranges"])
def test_set_state_carries_nan_counts(kind):
    """A state set with NaN counts reports them, merges them by addition, and rejects negative ones
    without changing the accumulator."""
    C = 3
    if kind == "ranges":
        make = lambda: _core.RangeAccumulator(C, layout="tokens")  # noqa: E731
        state = (2, [0.0, -1.0, np.nan], [1.0, 2.0, np.nan])
    else:
        cls = _core.MomentAccumulator if kind == "moments" else _core.CovAccumulator
        make = lambda: cls(C, layout="tokens")  # noqa: E731
        state = (2, [0.0, 1.0, 2.0], [1.0, 2.0, 3.0] if kind == "moments" else np.diag([1.0, 2.0, 3.0]))
    a = make()
    a.set_state(*state, nan_counts=[0, 4, 7])
    np.testing.assert_array_equal(a.nan_counts, [0, 4, 7])
    b = make()
    b.update(np.array([[[1.0, np.nan, 0.5]]]))  # one image, one NaN value for neuron 1
    b.merge(a)
    np.testing.assert_array_equal(b.nan_counts, [0, 5, 7])
    assert b.num_images == 3
    with pytest.raises(ValueError, match="negative NaN count -1 at neuron 2"):
        a.set_state(*state, nan_counts=[0, 0, -1])
    np.testing.assert_array_equal(a.nan_counts, [0, 4, 7])
    with pytest.raises(TypeError, match="nan_counts must hold integers"):
        a.set_state(*state, nan_counts=[0.5, 0, 0])
    with pytest.raises(ValueError, match="nan_counts"):
        a.set_state(*state, nan_counts=[0, 0])
    a.set_state(*state)  # default: no NaN seen
    np.testing.assert_array_equal(a.nan_counts, [0, 0, 0])


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_problem():
    h = _core.HistAccumulator([0.0, 0.0], [1.0, 1.0], 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(N, 2, \*spatial\)"):
        h.update(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="expected"):
        h.update(np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="int64"):
        h.update(np.zeros((2, 2, 4), np.int64))
    with pytest.raises(TypeError, match="complex128"):
        h.update(np.zeros((2, 2), np.complex128))
    t = _core.MomentAccumulator(3, layout="tokens")
    with pytest.raises(ValueError, match=r"\(N, T, 3\)"):
        t.update(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="neuron 1"):
        _core.HistAccumulator([0.0, 2.0], [1.0, 1.0], 4)
    with pytest.raises(ValueError, match="neuron 0"):
        _core.HistAccumulator([np.nan, 0.0], [1.0, 1.0], 4)
    with pytest.raises(ValueError, match="neuron 1"):
        _core.HistAccumulator([0.0, 0.0], [1.0, np.inf], 4)
    with pytest.raises(ValueError, match="bins"):
        _core.HistAccumulator([0.0], [1.0], 0)
    with pytest.raises(ValueError, match="same length"):
        _core.HistAccumulator([0.0], [1.0, 2.0], 3)
    with pytest.raises(ValueError, match="1-D"):
        _core.HistAccumulator([[0.0]], [[1.0]], 3)
    with pytest.raises(ValueError, match="layout"):
        _core.HistAccumulator([0.0], [1.0], 3, layout="nchw")
    with pytest.raises(ValueError, match="n_neurons"):
        _core.CovAccumulator(0)
    with pytest.raises(ValueError, match="bins"):
        h.merge(_core.HistAccumulator([0.0, 0.0], [1.0, 1.0], 5))
    with pytest.raises(ValueError, match="neuron 1"):
        h.merge(_core.HistAccumulator([0.0, 0.0], [1.0, 2.0], 4))
    with pytest.raises(ValueError, match="layout"):
        h.merge(_core.HistAccumulator([0.0, 0.0], [1.0, 1.0], 4, layout="tokens"))
    with pytest.raises(ValueError, match="HistAccumulator"):
        h.merge(_core.MomentAccumulator(2))
    with pytest.raises(ValueError, match="negative count"):
        h.add_counts(-np.ones((2, 4), np.int64), [0, 0], 1)
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        h.add_counts(np.ones((2, 3), np.int64), [0, 0], 1)
    with pytest.raises(TypeError, match="integers"):
        h.add_counts(np.ones((2, 4)), [0, 0], 1)
    with pytest.raises(ValueError, match="num_images"):
        h.add_counts(np.ones((2, 4), np.int64), [0, 0], -1)
    with pytest.raises(ValueError, match="no samples"):
        h.update(np.zeros((1, 2, 0), np.float32))
    assert h.num_images == 0 and h.counts.sum() == 0  # failures changed nothing
