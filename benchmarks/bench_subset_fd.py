"""The stability curve's Gaussian read-out: FDs of many nested subsets to one reference, by the core's
threaded ``centred_nuclear_norms`` against the previous NumPy route, timed in the same run.

    python benchmarks/bench_subset_fd.py [--neurons 2048] [--images 2000] [--reference 2000] [--repeats 2]

The data are random (a 2048-neuron layer of per-image mean vectors with a decaying spectrum; the reference
from as many other images, so its covariance has rank images - 1): the cost does not depend on the values.
Subsets: the default geometric grid (10 to all images) as nested prefixes of ``--repeats`` random
permutations, the full set once (as ``SubsetAccumulator`` does). Both routes share the projection of the
images onto the reference factor; the baseline then takes each subset's block centred in NumPy and
``numpy.linalg.svd(compute_uv=False)`` (LAPACK dgesdd on NumPy's OpenBLAS threads), the route used before.
Prints both times, the ratio, and the largest difference between the two routes' FDs relative to the FD.
"""
import argparse
import time

import numpy as np

from vdna._native import _core
from vdna.frechet import _FrechetToReference
from vdna.stability import default_sizes, subset_permutations


def numpy_route(frechet, mus, rows_list):
    out = []
    for mu, rows in zip(mus, rows_list):
        n = len(rows)
        block = frechet._points[rows]
        nuclear = float(np.linalg.svd(block - block.mean(axis=0), compute_uv=False).sum()) if n > 1 else 0.0
        out.append(frechet._fd(mu, frechet._samples[rows], nuclear))
    return np.array(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=2048)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--reference", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    c = args.neurons
    scale = np.geomspace(1.0, 1e-3, c)
    x = rng.standard_normal((args.images, c)) * scale + 0.5
    ref = rng.standard_normal((args.reference, c)) * scale * 1.1 + 0.45
    frechet = _FrechetToReference(ref.mean(axis=0), np.cov(ref, rowvar=False))
    t0 = time.perf_counter()
    frechet.project(x)
    t_project = time.perf_counter() - t0
    sizes = default_sizes(args.images)
    perms = subset_permutations(args.images, args.repeats, 0)
    rows_list = [np.arange(args.images)] + [perms[r, :s] for r in range(args.repeats) for s in sizes
                                            if s < args.images]
    mus = [x[rows].mean(axis=0) for rows in rows_list]
    print(f"{c} neurons, {args.images} images, reference rank {frechet._reference_factor().shape[1]}, "
          f"{len(rows_list)} subsets (sizes {sizes.tolist()}); projection (shared) {t_project:.2f} s; "
          f"core threads {_core.get_num_threads()}")
    t0 = time.perf_counter()
    base = numpy_route(frechet, mus, rows_list)
    t_numpy = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = frechet.subset_distances(mus, rows_list)
    t_core = time.perf_counter() - t0
    rel = float(np.max(np.abs(ours - base) / np.abs(base)))
    print(f"NumPy route (previous): {t_numpy:.2f} s")
    print(f"core route (now):       {t_core:.2f} s")
    print(f"speed-up: {t_numpy / t_core:.2f}x; largest relative FD difference {rel:.1e}")


if __name__ == "__main__":
    main()
