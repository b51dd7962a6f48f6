"""Benchmark the C core's distances against the reference implementations.

    python benchmarks/bench_distances.py [--neurons 15104] [--bins 1000] [--dim 2048]

EMD: vdna._core.emd vs the reference package's ``earth_movers_distance`` (vdna 0.1.1, torch).
The reference is fetched with ``pip download --no-deps vdna==0.1.1`` into a temporary folder and
its ``vdna/utils/stats.py`` is loaded by path, so it never replaces the installed package.
FD: vdna._core.fd vs the classic ``scipy.linalg.sqrtm(s1 @ s2)`` formula (run once: it is slow),
their agreement, and FD on singular covariances (N < d) checked against the nuclear-norm identity.
Targets are printed as PASS/FAIL (not asserted): EMD >= 5x faster than the reference; FD >= 10x
faster than sqrtm and within 1e-8 relative of it on well-conditioned inputs.
"""
import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import scipy.linalg

from vdna._native import _core


def best_time(fn, repeat):
    """Smallest wall time of `repeat` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def load_reference_stats(workdir):
    """The reference package's vdna/utils/stats.py as a module, without installing it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "vdna==0.1.1", "-d", workdir], check=True
    )
    wheels = glob.glob(os.path.join(workdir, "vdna-0.1.1*.whl"))
    if not wheels:
        raise SystemExit(f"pip download gave no vdna 0.1.1 wheel in {workdir}: {os.listdir(workdir)}")
    with zipfile.ZipFile(wheels[0]) as zf:
        path = zf.extract("vdna/utils/stats.py", os.path.join(workdir, "unpacked"))
    spec = importlib.util.spec_from_file_location("vdna_reference_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verdict(ok):
    return "PASS" if ok else "FAIL"


def bench_emd(ref_stats, n_neurons, n_bins):
    import torch

    rng = np.random.default_rng(0)
    # histogram-like counts: a smooth bump per neuron plus noise, some empty bins
    centres = rng.uniform(0.2, 0.8, size=(n_neurons, 1)) * n_bins
    x = np.arange(n_bins)[None, :]
    h1 = rng.poisson(200.0 * np.exp(-0.5 * ((x - centres) / (0.1 * n_bins)) ** 2)).astype(np.int64)
    h2 = rng.poisson(200.0 * np.exp(-0.5 * ((x - centres - 5) / (0.12 * n_bins)) ** 2)).astype(np.int64)
    h1[:, 0] += 1  # no empty rows (the reference would divide by zero)
    h2[:, -1] += 1
    t1, t2 = torch.from_numpy(h1), torch.from_numpy(h2)

    print(f"EMD: {n_neurons} neurons x {n_bins} bins, int64 counts")
    t_ref, ref = best_time(lambda: ref_stats.earth_movers_distance(t1, t2), 3)
    t_ours, ours = best_time(lambda: _core.emd(h1, h2), 5)
    _core.set_num_threads(1)
    try:
        t_ours1, _ = best_time(lambda: _core.emd(h1, h2), 3)
    finally:
        _core.set_num_threads(0)
    diff = np.abs(ref.numpy() - ours).max()
    speedup = t_ref / t_ours
    print(f"  reference earth_movers_distance (torch {torch.__version__}, {torch.get_num_threads()} threads): "
          f"{t_ref * 1e3:8.1f} ms")
    print(f"  vdna._core.emd ({_core.get_num_threads()} threads):  {t_ours * 1e3:8.1f} ms   "
          f"(1 thread: {t_ours1 * 1e3:.1f} ms, {t_ref / t_ours1:.1f}x)")
    print(f"  speed-up {speedup:.1f}x; max |difference| {diff:.2e} (mean EMD {ours.mean():.3f} bins)")
    print(f"  [{verdict(speedup >= 5.0)}] EMD >= 5x faster than the reference")
    print(f"  [{verdict(diff <= 1e-10)}] EMD agrees with the reference (max |difference| <= 1e-10)")


def sample_covariance(rng, n, d, scale=1.0):
    x = rng.normal(size=(n, d)) * scale
    mu = x.mean(axis=0)
    c = x - mu
    return mu, c, (c.T @ c) / (n - 1)


def bench_fd(d):
    rng = np.random.default_rng(1)
    print(f"FD: dimension {d}")
    mu1, _, s1 = sample_covariance(rng, 4 * d, d)  # well-conditioned: eigenvalues ~0.25 .. 2.25
    mu2, _, s2 = sample_covariance(rng, 4 * d, d, scale=1.1)
    mu2 += 0.05

    t_ours, ours = best_time(lambda: _core.fd(mu1, s1, mu2, s2), 3)
    t0 = time.perf_counter()
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    diff = mu1 - mu2
    ref = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    t_ref = time.perf_counter() - t0
    rel = abs(ours - ref) / abs(ref)
    speedup = t_ref / t_ours
    print(f"  scipy.linalg.sqrtm(s1 @ s2) formula: {t_ref:8.2f} s   FD = {ref:.12g}")
    print(f"  vdna._core.fd:                      {t_ours:8.2f} s   FD = {ours:.12g}")
    print(f"  speed-up {speedup:.1f}x; relative difference {rel:.2e}")
    print(f"  [{verdict(speedup >= 10.0)}] FD >= 10x faster than sqrtm")
    print(f"  [{verdict(rel <= 1e-8)}] FD agrees with sqrtm to 1e-8 relative")

    # singular covariances: N < d samples. Reference: sum_i sqrt(lambda_i) is the nuclear norm of
    # C1 C2^T / (n - 1) (C centred samples), an independent, well-conditioned computation.
    n = 100
    mu1, c1, s1 = sample_covariance(rng, n, d)
    mu2, c2, s2 = sample_covariance(rng, n, d, scale=1.2)
    t_sing, sing = best_time(lambda: _core.fd(mu1, s1, mu2, s2), 1)
    nuclear = np.linalg.svd(c1 @ c2.T / (n - 1), compute_uv=False).sum()
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * nuclear)
    same = _core.fd(mu1, s1, mu1, s1)
    rel_sing = abs(sing - want) / abs(want)
    ok = np.isfinite(sing) and sing >= 0 and np.isfinite(same) and same >= -1e-9 * np.trace(s1)
    print(f"  N={n} < d: FD = {sing:.12g} in {t_sing:.2f} s (nuclear-norm reference {want:.12g}, "
          f"relative difference {rel_sing:.2e}); FD(x, x) = {same:.3e}")
    print(f"  [{verdict(ok)}] FD finite and non-negative with N < d")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=15104)
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args()
    print(f"CPUs: {os.cpu_count()}, core threads: {_core.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="vdna-ref-") as workdir:
        ref_stats = load_reference_stats(workdir)
        bench_emd(ref_stats, args.neurons, args.bins)
    bench_fd(args.dim)


if __name__ == "__main__":
    main()
