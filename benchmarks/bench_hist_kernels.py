"""Histogram kernels, one by one: each float32 kernel of the C core on each layer shape, against the
reference vdna 0.1.1 ``histogram_per_channel`` in the same run.

The core has three float32 histogram kernels with identical bins (docs/building.md, "Histogram
kernels"): ``portable`` (C loops), ``avx2`` and ``avx512`` (intrinsics; x86-64 only, where the CPU
has them). ``auto``, the default, times them once per process on small batches and keeps the
fastest. This script times every kernel the CPU runs on:
  * a ResNet-50 layer, channels layout (32, 256, 56, 56), post-ReLU (half the values exactly 0),
  * a ViT-B layer, tokens layout (64, 197, 768), standard normal values (GELU has no exact zeros),
with 1,000 bins, and the reference's normalisation + ``histogram_per_channel`` on the same arrays
(loaded as in benchmarks/bench_accumulate.py). It prints the CPU model, a table of milliseconds and
speed-ups, the kernel ``auto`` chose, and PASS/FAIL for the targets:
  * the kernel ``auto`` chose is >= 30x faster than the reference on each shape,
  * the kernel ``auto`` chose is within 15% of the fastest kernel on each shape (the choice is
    made on small in-cache batches, so it may differ from the best on a full layer; 15% is the
    margin we accept for that).
It reports, it does not assert. Run: ``python benchmarks/bench_hist_kernels.py``.
"""
import argparse
import os
import platform
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_accumulate import BINS, best_time, load_reference_stats, relu_like, verdict  # noqa: E402

from vdna._native import _core  # noqa: E402

SHAPES = [("ResNet-50 layer2", "channels", (32, 256, 56, 56)), ("ViT-B tokens", "tokens", (64, 197, 768))]
KERNELS = ("portable", "avx2", "avx512")
TARGET_VS_REFERENCE = 30.0
AUTO_MARGIN = 1.15


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; elsewhere what the platform module says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def reference_fn(ref_stats, torch, x, layout, mins, maxs):
    """The reference's work on x: its float64 normalisation, then histogram_per_channel."""
    lo, hi = torch.from_numpy(mins * 1.2), torch.from_numpy(maxs * 1.2)
    centre = ((lo + hi) / 2).reshape(1, -1, 1, 1)
    half = ((hi - lo) / 2 + 1e-8).reshape(1, -1, 1, 1)
    t = torch.from_numpy(x)
    if layout == "tokens":
        t = t.permute(0, 2, 1).unsqueeze(3)  # what the reference does with ViT tokens

    def run():
        ref_stats.histogram_per_channel((t - centre) / half, hist_nb_bins=BINS, hist_range=[-1.0, 1.0])

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per kernel and shape (best kept)")
    parser.add_argument("--ref-repeats", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="time the kernels only (no torch, no download)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "vdna-bench-reference"))
    args = parser.parse_args()

    torch = ref_stats = None
    if not args.no_reference:
        try:
            import torch
        except ImportError:
            sys.exit("the reference needs torch (or pass --no-reference)")
        ref_stats = load_reference_stats(args.cache)
    kernels = [k for k in KERNELS if _core.hist_kernel_available(k)]
    forced = os.environ.get("VDNA_HIST_KERNEL")
    if forced and forced != "auto":
        sys.exit(f"VDNA_HIST_KERNEL={forced} is set: unset it, this script sets each kernel itself")
    auto = _core.hist_kernel()  # measured once per process, before any kernel is forced
    print(f"CPU: {cpu_model()} ({platform.machine()}); kernels it runs: {', '.join(kernels)}; auto chose: {auto}")
    print(f"threads: vdna core {_core.get_num_threads()}, CPUs {os.cpu_count()}; {BINS} bins; "
          f"best of {args.repeats} (reference: best of {args.ref_repeats})")

    rng = np.random.default_rng(0)
    rows, ok = [], True
    for label, layout, shape in SHAPES:
        x = relu_like(shape, rng) if layout == "channels" else rng.standard_normal(shape, dtype=np.float32)
        C = shape[1] if layout == "channels" else shape[2]
        mins = np.full(C, float(x.min()) * 0.9)
        maxs = np.full(C, float(x.max()) * 0.9)
        times = {}
        counts = None
        for k in kernels:
            _core.set_hist_kernel(k)
            acc = _core.HistAccumulator(mins, maxs, BINS, layout=layout)
            times[k] = best_time(lambda: acc.update(x), args.repeats)
            c = acc.counts // (acc.num_images // x.shape[0])  # one update's counts (each adds the same)
            if counts is not None and not np.array_equal(c, counts):
                print(f"ERROR: kernel {k} counts differ from {kernels[0]}'s on {label}")
                ok = False
            counts = c
        _core.set_hist_kernel("auto")
        ref = best_time(reference_fn(ref_stats, torch, x, layout, mins, maxs), args.ref_repeats) if ref_stats else None
        arr_sum = best_time(lambda: x.sum(), args.repeats)
        rows.append((label, layout, shape, times, ref, arr_sum))
        del x

    head = f"{'shape':>30} {'kernel':>9} {'ms':>9} {'ref/kernel':>11} {'kernel/sum':>11}"
    print("\n" + head + "\n" + "-" * len(head))
    for label, layout, shape, times, ref, arr_sum in rows:
        name = f"{label} {'x'.join(map(str, shape))}"
        for k, t in times.items():
            mark = " <- auto" if k == auto else ""
            speed = f"{ref / t:11.1f}" if ref else f"{'-':>11}"
            print(f"{name:>30} {k:>9} {t * 1e3:9.1f} {speed} {t / arr_sum:11.2f}{mark}")
            name = ""
        if ref:
            print(f"{'':>30} {'reference':>9} {ref * 1e3:9.1f}")
    print()
    for label, layout, shape, times, ref, arr_sum in rows:
        fastest = min(times, key=times.get)
        within = times[auto] <= AUTO_MARGIN * times[fastest]
        ok &= within
        print(f"{label}: auto ({auto}) {times[auto] / times[fastest]:.2f}x the fastest ({fastest}); "
              f"target <= {AUTO_MARGIN:.2f}x  {verdict(within)}")
        if ref:
            speedup = ref / times[auto]
            ok &= speedup >= TARGET_VS_REFERENCE
            print(f"{label}: auto ({auto}) {speedup:.1f}x faster than the reference; "
                  f"target >= {TARGET_VS_REFERENCE:.0f}x  {verdict(speedup >= TARGET_VS_REFERENCE)}")
    print(f"\noverall {verdict(ok)} (timings on a shared machine are noisy: rerun alone before quoting them)")


if __name__ == "__main__":
    main()
