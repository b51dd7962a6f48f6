"""The tests' one independent NumPy reference for the normative binning and per-image means.

Written directly from the documented rules (docs/design.md "Normative semantics"), in float64, with no
code shared with the C core or the device accumulators that the tests check against it.
"""
import numpy as np


def neuron_values(x, layout="channels"):
    """(samples, C) float64: every value each neuron saw, for (N, C, *spatial) or (N, T, C) input."""
    x = np.asarray(x, dtype=np.float64)
    if layout == "channels":
        return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    return x.reshape(-1, x.shape[2])


def reference_histogram(x, mins, maxs, bins, layout="channels"):
    """(counts (C, bins) int64, NaN counts (C,) int64) of activations ``x``.

    lo = 1.2*min, hi = 1.2*max, centre = (lo+hi)/2, half = (hi-lo)/2 + 1e-8, z = (x-centre)/half
    clamped to [-1, 1], bin = min(B-1, floor((z+1)*B/2)); NaN counted apart, +-Inf to the end bins.
    """
    v = neuron_values(x, layout)
    lo, hi = 1.2 * np.asarray(mins, np.float64), 1.2 * np.asarray(maxs, np.float64)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 + 1e-8
    with np.errstate(invalid="ignore"):
        z = (v - centre) / half
    nan = np.isnan(z)
    z = np.clip(z, -1.0, 1.0)
    b = np.minimum(bins - 1, np.floor((z + 1) * bins / 2))
    counts = np.zeros((v.shape[1], bins), np.int64)
    for c in range(v.shape[1]):
        counts[c] = np.bincount(b[~nan[:, c], c].astype(np.int64), minlength=bins)
    return counts, nan.sum(axis=0).astype(np.int64)


def per_image_means(x, layout="channels"):
    """(N, C) float64: each image's mean over its spatial positions (channels) or tokens."""
    x = np.asarray(x, dtype=np.float64)
    if layout == "channels":
        return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2)
    return x.mean(axis=1)
