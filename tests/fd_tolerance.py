"""Tolerance for comparing two routes to one Fréchet distance (shared by the FD tests)."""
import numpy as np

EPS = np.finfo(np.float64).eps


def fd_tol(mu_a, sig_a, mu_b, sig_b):
    """Absolute tolerance of an FD computed by two eigenvalue routes. tr √M (M = A^½ B A^½, ||M|| <= tr A tr B)
    sums C square roots of eigenvalues known to ~C eps ||M||; a (near-)zero eigenvalue (rank-deficient sample
    covariance) turns that into up to √(C eps ||M||) each: 2 C √(C eps trA trB). The other terms are sums of
    C magnitudes: 100 C eps (trA + trB + |Δμ|²)."""
    c = len(mu_a)
    ta, tb = float(np.trace(sig_a)), float(np.trace(sig_b))
    d2 = float(np.sum((np.asarray(mu_a) - mu_b) ** 2))
    return 2 * c * np.sqrt(c * EPS * ta * tb) + 100 * c * EPS * (ta + tb + d2)


def fd_tol_dna(a, b, layers=None):
    layers = list(a.neurons_list) if layers is None else layers
    return max(fd_tol(a.data[l]["mu"], a.data[l]["sigma"], b.data[l]["mu"], b.data[l]["sigma"]) for l in layers)
