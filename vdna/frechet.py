"""Fréchet distances from factors of sample covariances, for many FDs of sample sets at once.

``vdna.FD`` (the C core) takes two C x C covariances and costs two eigendecompositions per call. When
the covariances come from samples (per-image mean vectors), their factors are at hand: Σ = XcᵀXc/(n−1)
with Xc the n centred samples, so F = Xcᵀ/√(n−1). tr √(Σ₁^½ Σ₂ Σ₁^½) is the nuclear norm of F₁ᵀF₂ for
any factors Σᵢ = FᵢFᵢᵀ (docs/design.md, "The Fréchet distance"), and F₁ᵀF₂ is only n₁ x n₂ (or r x n):

* :func:`fd_of_samples`: the FD between the Gaussians of two sample sets (customised comparisons: the
  layer FD of every (with, without) pair of an attribute);
* :class:`_FrechetToReference`: FDs from many sample sets (stability curves' subsets) to one fixed
  Gaussian given by its covariance (the subsets' SVDs in the core, spread over its threads).

No condition number is squared (no eigenvalue of a Gram matrix is taken); the results agree with
``vdna.FD`` to rounding (tests derive the tolerance from the traces).
"""
from __future__ import annotations

import numpy as np

from ._native import _core


def _centred_nuclear_norm(points: np.ndarray) -> float:
    """Sum of the singular values of the (n, r) points centred on their mean, by the core (the two-stage
    reduction vdna.FD uses). Points whose mean is already 0 lose only rounding to the re-centring."""
    n = points.shape[0]
    return float(_core.centred_nuclear_norms(points, np.array([0, n]), np.arange(n))[0])


def fd_of_samples(x1, x2) -> float:
    """FD between N(mean(x1), cov(x1)) and N(mean(x2), cov(x2)) (unbiased covariances, as a
    layer-Gaussian DNA holds them) from the samples themselves: ``x1`` (n1 x C) and ``x2`` (n2 x C),
    finite, n1, n2 >= 2. Costs one n1 x C by C x n2 product and the singular values of the result (the
    core's SVD route, as for every FD)."""
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    if x1.ndim != 2 or x2.ndim != 2 or x1.shape[1] != x2.shape[1]:
        raise ValueError(f"fd_of_samples: expected two (n, C) arrays with the same C, got {x1.shape} and {x2.shape}")
    n1, n2 = x1.shape[0], x2.shape[0]
    if n1 < 2 or n2 < 2:
        raise ValueError(f"fd_of_samples: each set needs at least 2 samples (a covariance), got {n1} and {n2}")
    if not (np.isfinite(x1).all() and np.isfinite(x2).all()):
        raise ValueError("fd_of_samples: the samples hold NaN or Inf")
    mu1, mu2 = x1.mean(axis=0), x2.mean(axis=0)
    xc1, xc2 = x1 - mu1, x2 - mu2
    diff = mu1 - mu2
    tr1 = float(np.einsum("ij,ij->", xc1, xc1)) / (n1 - 1)
    tr2 = float(np.einsum("ij,ij->", xc2, xc2)) / (n2 - 1)
    nuclear = _centred_nuclear_norm(xc1 @ xc2.T) / np.sqrt((n1 - 1) * (n2 - 1))
    return max(0.0, float(diff @ diff) + tr1 + tr2 - 2.0 * nuclear)  # a rounding-level negative is 0, as in vdna.FD


class _FrechetToReference:
    """Fréchet distances from many sample sets to one fixed Gaussian N(μr, Σr).

    FD = |μ − μr|² + tr Σ + tr Σr − 2 tr √(Σr^½ Σ Σr^½), by the route ``vdna.FD`` takes
    (docs/design.md, "The Fréchet distance"): tr √(Σr^½ Σ Σr^½) is the nuclear norm of FrᵀF for any
    factors Σr = Fr Frᵀ and Σ = F Fᵀ, and a subset's covariance comes factored: Σ = XcᵀXc / (N − 1)
    (Xc: its N per-image mean vectors minus their mean), so F = Xcᵀ / √(N − 1). Fr (C x r:
    eigenvectors scaled by √λ over the r eigenvalues above the core's rank tolerance C·ε·λmax) is
    computed once per reference, and no condition number is squared. The result agrees with
    ``vdna.FD`` to rounding (tests: tolerance derived from the traces); a rounding-level negative is
    returned as 0, as there.

    ``distance(mu, samples)``: one sample set. Many subsets of one set of images (a stability curve):
    ``project(samples)`` once computes the points P = (X − x̄) Fr for all n images (n x r; centred on
    their common mean x̄, so that rounding is relative to the spread, not to the mean);
    ``subset_distances(mus, rows_list)`` then needs, per subset, the nuclear norm of P's rows ``rows``
    centred on their own mean, which is Xc Fr of the subset (centring commutes with the linear map
    Fr): the core's ``centred_nuclear_norms`` computes them all at once, the subsets spread over
    vdna's threads (one SVD of an N x r block each, no C x C work)."""

    def __init__(self, mu, sigma):
        self.mu = np.asarray(mu, dtype=np.float64)
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.trace = float(np.trace(self.sigma))
        self._factor = None
        self._samples = None
        self._points = None

    def _reference_factor(self) -> np.ndarray:
        # C x r: eigenvectors scaled by √λ over the eigenvalues above C·ε·λmax, the core's rank rule
        # (docs/design.md): the others are the rounding noise of a singular covariance (a reference
        # of fewer images than neurons), whose square roots would add √ε-sized errors. Every subset's
        # SVD then has r columns instead of C.
        if self._factor is None:
            w, v = np.linalg.eigh((self.sigma + self.sigma.T) * 0.5)
            keep = w > len(w) * np.finfo(np.float64).eps * max(float(w[-1]), 0.0) if len(w) else w > 0
            self._factor = v[:, keep] * np.sqrt(w[keep])
        return self._factor

    def _fd(self, mu, samples, nuclear_of_xc: float) -> float:
        """FD from the subset's mean ``mu``, its samples and ||Xc Fr||_*."""
        n = samples.shape[0]
        diff = np.asarray(mu, dtype=np.float64) - self.mu
        d2 = float(diff @ diff)
        if n < 2:  # one image: zero covariance
            return d2 + self.trace
        xc = samples - np.asarray(mu, dtype=np.float64)
        tr = float(np.einsum("ij,ij->", xc, xc)) / (n - 1)
        return max(0.0, d2 + tr + self.trace - 2.0 * nuclear_of_xc / np.sqrt(n - 1))

    def distance(self, mu, samples) -> float:
        """FD of the Gaussian of ``samples`` (n x C, mean ``mu``)."""
        x = np.asarray(samples, dtype=np.float64)
        # centred before the product, so that its rounding is relative to the spread, not to the mean
        return self._fd(mu, x, _centred_nuclear_norm((x - x.mean(axis=0)) @ self._reference_factor()))

    def project(self, samples) -> None:
        """Prepare :meth:`subset_distances` for subsets (rows) of ``samples`` (n x C)."""
        x = np.asarray(samples, dtype=np.float64)
        self._samples = x
        self._points = np.ascontiguousarray((x - x.mean(axis=0)) @ self._reference_factor())  # n x r

    def subset_distances(self, mus, rows_list) -> np.ndarray:
        """FDs of the subsets ``rows_list`` (each an array of row indices into the projected samples;
        ``mus``: their mean vectors, in the same order)."""
        if self._points is None:
            raise RuntimeError("_FrechetToReference.subset_distances: call project(samples) first")
        rows_list = [np.asarray(rows, dtype=np.int64) for rows in rows_list]
        if len(mus) != len(rows_list):
            raise ValueError(f"subset_distances: {len(mus)} means for {len(rows_list)} subsets")
        offsets = np.concatenate([[0], np.cumsum([len(rows) for rows in rows_list])]).astype(np.int64)
        index = np.concatenate(rows_list) if rows_list else np.zeros(0, dtype=np.int64)
        nuclear = _core.centred_nuclear_norms(self._points, offsets, index)
        return np.array([self._fd(mu, self._samples[rows], float(nn))
                         for mu, rows, nn in zip(mus, rows_list, nuclear)])
