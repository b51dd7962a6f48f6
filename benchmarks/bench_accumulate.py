"""Accumulation throughput: vdna's C core against the reference package and NumPy.

Times, in one run and on the same float32 arrays:
  * HistAccumulator.update vs the reference vdna 0.1.1 ``histogram_per_channel`` (with the
    normalisation (x - centre) / half that the reference applies before it, as it does),
  * HistAccumulator.update vs ``arr.sum()`` (a memory-bound floor),
  * CovAccumulator.update vs NumPy ``X.T @ X`` on a (10000, 2048) float64 matrix.
The channels (ResNet-50) inputs are max(0, standard normal): post-ReLU maps with half their
values exactly 0, as real ResNet activations have (40-70% zeros) and as the histogram code sees
them; the tokens (ViT) inputs are plain standard normal (GELU outputs have no exact zeros).
Prints each ratio and PASS/FAIL against the targets (hist >= 30x the reference and within 4x of
arr.sum(); covariance >= 0.5x NumPy's throughput). It reports, it does not assert.

The reference is fetched with ``pip download --no-deps vdna==0.1.1`` into a cache directory and
its ``vdna/utils/stats.py`` is loaded by path, so it never replaces the installed package.
Needs torch (the reference uses it). Run: ``python benchmarks/bench_accumulate.py``.
"""
import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from vdna._native import _core

BINS = 1000
RESNET50_LAYERS = [(32, 256, 56, 56), (32, 512, 28, 28), (32, 1024, 14, 14), (32, 2048, 7, 7)]
VIT_B_LAYER = (64, 197, 768)
VIT_B_LAYERS = 13


def load_reference_stats(cache_dir):
    """The reference package's utils/stats.py as a module, without installing the package."""
    os.makedirs(cache_dir, exist_ok=True)
    wheels = [f for f in os.listdir(cache_dir) if f.startswith("vdna-0.1.1") and f.endswith(".whl")]
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "vdna==0.1.1", "-d", cache_dir],
            check=True,
        )
        wheels = [f for f in os.listdir(cache_dir) if f.startswith("vdna-0.1.1") and f.endswith(".whl")]
    if not wheels:
        raise RuntimeError(f"pip download did not produce a vdna 0.1.1 wheel in {cache_dir}")
    extract = os.path.join(cache_dir, "unpacked")
    stats_path = os.path.join(extract, "vdna", "utils", "stats.py")
    if not os.path.exists(stats_path):
        with zipfile.ZipFile(os.path.join(cache_dir, wheels[0])) as zf:
            zf.extract("vdna/utils/stats.py", extract)
    spec = importlib.util.spec_from_file_location("vdna_reference_stats", stats_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def relu_like(shape, rng):
    x = rng.standard_normal(shape, dtype=np.float32)
    np.maximum(x, 0, out=x)
    return x


def verdict(ok):
    return "PASS" if ok else "FAIL"


def bench_hist(ref_stats, torch, rng, repeats, ref_repeats):
    print(f"\n== histograms ({BINS} bins), times are the best of {repeats} (reference: {ref_repeats})")
    print(f"{'layer':>22} {'ours ms':>9} {'ref ms':>9} {'sum ms':>8} {'ref/ours':>9} {'ours/sum':>9}")
    totals = {"ours": 0.0, "ref": 0.0, "sum": 0.0}
    cases = [("channels", s, 1) for s in RESNET50_LAYERS] + [("tokens", VIT_B_LAYER, VIT_B_LAYERS)]
    for layout, shape, n_layers in cases:
        x = relu_like(shape, rng) if layout == "channels" else rng.standard_normal(shape, dtype=np.float32)
        C = shape[1] if layout == "channels" else shape[2]
        mins = np.full(C, float(x.min()) * 0.9)
        maxs = np.full(C, float(x.max()) * 0.9)
        acc = _core.HistAccumulator(mins, maxs, BINS, layout=layout)
        ours = best_time(lambda: acc.update(x), repeats)
        arr_sum = best_time(lambda: x.sum(), repeats)

        # the reference: normalise as it does (float64 per-neuron centre/half tensors), then bin
        lo, hi = torch.from_numpy(mins * 1.2), torch.from_numpy(maxs * 1.2)
        centre = ((lo + hi) / 2).reshape(1, -1, 1, 1)
        half = ((hi - lo) / 2 + 1e-8).reshape(1, -1, 1, 1)
        t = torch.from_numpy(x)
        if layout == "tokens":
            t = t.permute(0, 2, 1).unsqueeze(3)  # what the reference does with ViT tokens

        def reference():
            normalised = (t - centre) / half
            ref_stats.histogram_per_channel(normalised, hist_nb_bins=BINS, hist_range=[-1.0, 1.0])

        ref = best_time(reference, ref_repeats)
        label = "x".join(map(str, shape)) + (f" x{n_layers}" if n_layers > 1 else "")
        print(f"{label:>22} {ours * 1e3 * n_layers:9.1f} {ref * 1e3 * n_layers:9.1f} {arr_sum * 1e3 * n_layers:8.2f}"
              f" {ref / ours:9.1f} {ours / arr_sum:9.2f}")
        totals["ours"] += ours * n_layers
        totals["ref"] += ref * n_layers
        totals["sum"] += arr_sum * n_layers
    speedup = totals["ref"] / totals["ours"]
    vs_sum = totals["ours"] / totals["sum"]
    print(f"{'all layers':>22} {totals['ours'] * 1e3:9.1f} {totals['ref'] * 1e3:9.1f} {totals['sum'] * 1e3:8.2f}"
          f" {speedup:9.1f} {vs_sum:9.2f}")
    print(f"target hist >= 30x faster than the reference: {speedup:.1f}x  {verdict(speedup >= 30)}")
    print(f"target hist within 4x of arr.sum():           {vs_sum:.2f}x  {verdict(vs_sum <= 4)}")


def bench_cov(rng, repeats):
    n, C = 10_000, 2048
    print(f"\n== covariance of {n} x {C} per-image vectors (float64), best of {repeats}")
    X = rng.standard_normal((n, C))
    acc = _core.CovAccumulator(C)

    def ours():
        acc.reset()
        acc.update(X)

    t_ours = best_time(ours, repeats)
    t_np = best_time(lambda: X.T @ X, repeats)
    ratio = t_np / t_ours
    print(f"CovAccumulator.update {t_ours * 1e3:8.1f} ms   numpy X.T @ X {t_np * 1e3:8.1f} ms   throughput ratio {ratio:.2f}")
    print(f"target covariance >= 0.5x numpy X.T@X throughput: {ratio:.2f}x  {verdict(ratio >= 0.5)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ref-repeats", type=int, default=1)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "vdna-bench-reference"))
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("this benchmark needs torch (the reference package uses it)")
    ref_stats = load_reference_stats(args.cache)
    rng = np.random.default_rng(0)
    print(f"threads: vdna core {_core.get_num_threads()}, torch {torch.get_num_threads()}; CPUs {os.cpu_count()}")
    bench_hist(ref_stats, torch, rng, args.repeats, args.ref_repeats)
    bench_cov(rng, args.repeats)


if __name__ == "__main__":
    main()
