"""Benchmark the C core's distances against the reference implementations.

    python benchmarks/bench_distances.py [--neurons 15104] [--bins 1000] [--dim 2048]

EMD: vdna._core.emd vs the reference package's ``earth_movers_distance`` (vdna 0.1.1, torch).
The reference is fetched with ``pip download --no-deps vdna==0.1.1`` into a temporary folder and
its ``vdna/utils/stats.py`` is loaded by path, so it never replaces the installed package.
FD: accuracy of vdna._core.fd against an independent oracle on covariances built from known factors
(S1 = A A^T, S2 = B B^T; tr sqrt(S1^(1/2) S2 S1^(1/2)) = the nuclear norm of A^T B, by NumPy's SVD;
the cases and the oracle are those of tests/test_fd_accuracy.py): FID-like, full-rank condition 1e10,
rank-deficient and N < d pairs, with the previous eigenvalue route beside it; then its speed against
the classic ``scipy.linalg.sqrtm(s1 @ s2)`` formula (run once: it is slow) on the FID-like pair.
Targets are printed as PASS/FAIL (not asserted): EMD >= 5x faster than the reference; FD within
1e-9 (tr S1 + tr S2) of the oracle on every case and >= 5x faster than the sqrtm formula (aim 10x).
``--only fd`` skips the EMD part (which downloads the reference package).
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


def load_fd_oracle():
    """tests/test_fd_accuracy.py as a module (loaded by path): its factor constructions and its
    oracle, so the benchmark's accuracy sweep uses the same definitions as the test suite."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "test_fd_accuracy.py")
    spec = importlib.util.spec_from_file_location("vdna_fd_oracle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fd_cases(t, d):
    """(name, mu1, A, mu2, B): covariances A A^T, B B^T from known factors, at dimension d."""
    rng = np.random.default_rng(d)
    power = np.arange(1, d + 1, dtype=np.float64) ** -2.0
    # the FID-like pair: power-law population, N = 5000 samples each (unrotated)
    a, b = t.wishart_factor(rng, power, 5000), t.wishart_factor(rng, power * 1.05, 5000)
    yield "FID-like: power law k^-2, N = 5000 each", np.zeros(d), a, 0.01 * np.sqrt(power), b
    lam = t.spectrum("power", d, 1e10)
    a, b = t.rand_orth(rng, d) * np.sqrt(lam), t.rand_orth(rng, d) * np.sqrt(1.7 * lam)
    yield "full rank, cond 1e10 (power), unrelated eigenvectors", np.zeros(d), a, rng.normal(size=d), b
    lam, u = t.spectrum("geometric", d, 1e10), t.rand_orth(rng, d)
    a, b = t.wishart_factor(rng, lam, 2 * d + 2, u), t.wishart_factor(rng, lam, 2 * d + 2, u)
    yield "full rank, cond ~1e10 (geometric), same population", np.zeros(d), a, 0.1 * np.sqrt(lam), b
    lam = t.spectrum("power", d, 1e4)
    a = (t.rand_orth(rng, d) * np.sqrt(lam)) @ rng.normal(size=(d, d // 2)) / np.sqrt(d // 2)
    b = (t.rand_orth(rng, d) * np.sqrt(lam)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    yield f"rank {d // 2} vs full rank", rng.normal(size=d), a, rng.normal(size=d), b
    scales = np.arange(1, d + 1) ** -1.0
    for n1, n2 in ((100, 100), (d - 1, d + 200)):
        x = rng.normal(size=(n1, d)) * scales + 0.3
        y = (rng.normal(size=(n2, d)) * scales) @ t.rand_orth(rng, d) * 1.2
        yield (f"samples N1 = {n1}, N2 = {n2}", x.mean(axis=0), t.centred_factor(x), y.mean(axis=0),
               t.centred_factor(y))


def previous_route(mu1, s1, mu2, s2):
    """What vdna computed before (NumPy re-implementation): the eigenvalues of B^T S2 B for
    S1 = B B^T (B = the Cholesky factor, or V diag(sqrt w) over S1's eigenvalues w above d eps w_max
    when S1 is singular), which are those of S1^(1/2) S2 S1^(1/2); those at or below
    r eps lambda_max dropped."""
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    try:
        f1 = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(s1)
        keep = w > len(w) * np.finfo(float).eps * w[-1]
        f1 = v[:, keep] * np.sqrt(w[keep])
    lam = np.linalg.eigvalsh(f1.T @ s2 @ f1)
    lam = lam[lam > len(lam) * np.finfo(float).eps * lam[-1]]
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(lam).sum())


def sqrtm_route(mu1, s1, mu2, s2):
    """The classic formula (pytorch-fid, clean-fid): sqrtm(S1 S2), real part."""
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def bench_fd(d):
    """Accuracy of vdna._core.fd against the factor oracle on every case (|FD - oracle| and FD(a, a),
    both over tr S1 + tr S2; contract 1e-9), the previous eigenvalue route beside it; then speed
    against the sqrtm formula on the FID-like pair (target >= 5x, aim 10x)."""
    t = load_fd_oracle()
    print(f"FD: dimension {d}; errors are |FD - oracle| / (tr S1 + tr S2), contract <= {t.BOUND:g}")
    print(f"  {'case':55s} {'FD':>12s} {'vdna':>9s} {'FD(a,a)':>9s} {'previous':>9s} {'prev(a,a)':>9s}")
    worst = 0.0
    fid_pair = None
    for name, mu1, a, mu2, b in fd_cases(t, d):
        s1, s2 = a @ a.T, b @ b.T
        want, scale = t.fd_oracle(mu1, a, mu2, b)
        got = _core.fd(mu1, s1, mu2, s2)
        same = max(_core.fd(mu1, s1, mu1, s1), _core.fd(mu2, s2, mu2, s2))
        err = max(abs(got - want), abs(_core.fd(mu2, s2, mu1, s1) - want)) / scale
        worst = max(worst, err, same / scale)
        prev = abs(previous_route(mu1, s1, mu2, s2) - want) / scale
        prev_same = abs(previous_route(mu1, s1, mu1, s1)) / scale
        print(f"  {name:55s} {want:12.6g} {err:9.1e} {same / scale:9.1e} {prev:9.1e} {prev_same:9.1e}", flush=True)
        if fid_pair is None:
            fid_pair = (mu1, s1, mu2, s2, want, scale)
    print(f"  [{verdict(worst <= t.BOUND)}] FD within {t.BOUND:g} of the oracle on every case, FD(a, a) too "
          f"(worst {worst:.1e})")

    mu1, s1, mu2, s2, want, scale = fid_pair
    t_ours, ours = best_time(lambda: _core.fd(mu1, s1, mu2, s2), 3)
    t0 = time.perf_counter()
    ref = sqrtm_route(mu1, s1, mu2, s2)
    t_ref = time.perf_counter() - t0
    speedup = t_ref / t_ours
    print(f"  speed on the FID-like pair ({d} dimensions):")
    print(f"    scipy.linalg.sqrtm(s1 @ s2) formula: {t_ref:8.2f} s   error {abs(ref - want) / scale:.1e}")
    print(f"    vdna._core.fd:                      {t_ours:8.2f} s   error {abs(ours - want) / scale:.1e}")
    print(f"    speed-up {speedup:.1f}x (aim: 10x)")
    print(f"  [{verdict(speedup >= 5.0)}] FD >= 5x faster than the sqrtm formula")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=15104)
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--only", choices=["emd", "fd"], help="run one of the two benchmarks")
    args = parser.parse_args()
    print(f"CPUs: {os.cpu_count()}, core threads: {_core.get_num_threads()}")
    if args.only != "fd":
        with tempfile.TemporaryDirectory(prefix="vdna-ref-") as workdir:
            ref_stats = load_reference_stats(workdir)
            bench_emd(ref_stats, args.neurons, args.bins)
    if args.only != "emd":
        bench_fd(args.dim)


if __name__ == "__main__":
    main()
