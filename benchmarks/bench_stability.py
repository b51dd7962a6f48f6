"""Paper Fig. 5 on our offline data: how many images DNA-EMD and FD need to be stable, and what the curve costs.

    python benchmarks/bench_stability.py [--images 2000] [--repeats 10] [--batch-size 16] [--workers 2]

Protocol, fixed before any result was looked at (issue 10, section 2):
  * extractor ``rand_resnet50`` on the CPU (the offline extractor; backend "auto");
  * source: ``--images`` procedural images of style "base" (seed 0, 256x256, held in memory);
    reference: as many images of style "shifted" (seed 0), made into histogram-1000 and layer-gaussian DNAs;
  * sizes: the default geometric grid (10 sizes from 10 to all images), ``--repeats`` random nested subsets
    per size (seed 0), distributions histogram-1000 and layer-gaussian, max_memory 4 GiB (the histogram
    state of 2,000 images does not fit: it goes to a memory-mapped temporary file);
  * stable size: the smallest N from which the mean over repeats stays within 5% of the all-image value and
    the std below 5% of it (``StabilityCurve.stable_size(tol=0.05)``), for EMD and FD over all layers and for
    the last layer (layer4_2) alone.
Targets: N_stable(dna-emd) <= N_stable(fd) / 10 (the paper found about 400 vs 10,000 on real datasets),
and the whole curve (one pass, both distributions) <= 1.5x one ``make_vdna`` (histogram-1000) over the same
images, timed in the same run.

Cost breakdown (printed after the timings): the extractor's forward pass is timed in both runs (a wrapper
around the backend's ``forward``); the curve's other stages come from ``SubsetAccumulator.timings``
(histogram counts into the subset tables, per-image mean vectors, EMD read-out, Gaussian read-out with
every subset's FD); "other" is the rest (image loading and resizing, Python; for make_vdna also its
histogram update).
"""
import argparse
import time

import numpy as np

from vdna import procedural
from vdna import stability as stability_module
from vdna.processor import VDNAProcessor
from vdna.stability import _reference_dnas


class StageClock:
    """Seconds spent in the backend's forward and the last SubsetAccumulator's stages (wrappers installed
    for the benchmark only; the package's code paths are unchanged)."""

    def __init__(self, backend):
        self.forward = 0.0
        self.stages = {}
        cls = type(backend)
        forward = cls.forward

        def timed_forward(be, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return forward(be, *args, **kwargs)
            finally:
                self.forward += time.perf_counter() - t0

        cls.forward = timed_forward
        compute = stability_module.SubsetAccumulator.compute

        def timed_compute(acc, *args, **kwargs):
            try:
                return compute(acc, *args, **kwargs)
            finally:
                self.stages = dict(acc.timings)

        stability_module.SubsetAccumulator.compute = timed_compute

    def take(self):
        out = {"forward pass": self.forward, **self.stages}
        self.forward, self.stages = 0.0, {}
        return out

PAPER = {"dna-emd": 400, "fd": 10_000}
LAST = "layer4_2"


def print_breakdown(t_make, make_stages, t_curve, curve_stages):
    stages = ["forward pass"] + [k for k in curve_stages if k != "forward pass"]
    print(f"\n{'cost breakdown (s)':<24} {'make_vdna':>10} {'curve':>10} {'curve / make_vdna':>18}")
    for k in stages:
        m = make_stages.get(k)
        c = curve_stages.get(k, 0.0)
        print(f"{k:<24} {'-' if m is None else f'{m:.1f}':>10} {c:>10.1f} {c / t_make:>17.2f}x")
    other_m = t_make - sum(make_stages.values())
    other_c = t_curve - sum(curve_stages.values())
    print(f"{'other':<24} {other_m:>10.1f} {other_c:>10.1f} {other_c / t_make:>17.2f}x")
    print(f"{'total':<24} {t_make:>10.1f} {t_curve:>10.1f} {t_curve / t_make:>17.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save", default=None, help="save the curve (.npz)")
    parser.add_argument("--plot", default=None, help="save Fig. 5 (.png)")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} images, "
          f"{args.repeats} repeats, batch {args.batch_size}")
    base = procedural.make_images(args.images, seed=0, style="base")
    shifted = procedural.make_images(args.images, seed=0, style="shifted")
    proc = VDNAProcessor()
    ext = proc.get_extractor("rand_resnet50")
    be = proc.get_backend(ext, "cpu", "auto")
    kw = dict(feat_extractor_name="rand_resnet50", device="cpu", batch_size=args.batch_size,
              num_workers=args.workers, verbose=False)

    clock = StageClock(be)
    t0 = time.perf_counter()
    refs = _reference_dnas(be, ext.info, shifted, ("histogram-1000", "layer-gaussian"), ext.activation_ranges(),
                           args.batch_size, args.workers, "none", "clean", 0, False)
    print(f"reference DNAs (shifted, both distributions, one pass): {time.perf_counter() - t0:.1f} s")
    clock.take()

    t0 = time.perf_counter()
    proc.make_vdna(base, distribution_name="histogram-1000", **kw)
    t_make = time.perf_counter() - t0
    make_stages = clock.take()
    print(f"make_vdna histogram-1000 over the source: {t_make:.1f} s")

    t0 = time.perf_counter()
    curve = proc.stability(base, refs, repeats=args.repeats, seed=0, **kw)
    t_curve = time.perf_counter() - t0
    curve_stages = clock.take()
    print(f"stability curve ({len(curve.sizes)} sizes x {curve.repeats} repeats, both distributions): {t_curve:.1f} s")
    print_breakdown(t_make, make_stages, t_curve, curve_stages)
    if args.save:
        curve.save(args.save)
    if args.plot:
        curve.plot(["emd", "fd", f"emd/{LAST}", f"fd/{LAST}"], path=args.plot)

    print(f"\nsizes: {curve.sizes.tolist()}")
    print(f"{'metric':<18} {'all images':>11} {'N -> inf (+- se)':>22} {'stable N':>9}")
    stable = {}
    for m in ("emd", "fd", "nfd", f"emd/{LAST}", f"fd/{LAST}"):
        inf, se = curve.extrapolate(m)
        stable[m] = curve.stable_size(m, 0.05)
        shown = "-" if stable[m] is None else str(stable[m])
        print(f"{m:<18} {curve.full_value(m):>11.5g} {inf:>12.5g} +- {se:<7.2g} {shown:>9}")
        print("   mean: " + " ".join(f"{v:.4g}" for v in curve.mean(m)))
        print("   std:  " + " ".join(f"{v:.3g}" for v in curve.std(m)))

    def ratio(fd_key, emd_key):
        e, f = stable[emd_key], stable[fd_key]
        if e is None:
            return None, "EMD never stable within the grid"
        if f is None:
            return np.inf, f"FD not stable within {curve.n_images} images: ratio > {curve.n_images / e:.3g}"
        return f / e, f"{f / e:.3g}"

    print(f"\npaper (Fig. 5, real datasets): N_stable dna-emd ~{PAPER['dna-emd']}, fd ~{PAPER['fd']} "
          f"(ratio {PAPER['fd'] / PAPER['dna-emd']:.0f})")
    ok = True
    for label, fk, ek in (("all layers", "fd", "emd"), (f"last layer ({LAST})", f"fd/{LAST}", f"emd/{LAST}")):
        r, text = ratio(fk, ek)
        passed = r is not None and r >= 10
        ok &= passed
        print(f"ours, {label}: N_stable emd {stable[ek]}, fd {stable[fk]}; ratio fd/emd {text}: "
              f"{'PASS' if passed else 'FAIL'} (target >= 10)")
    cost = t_curve / t_make
    print(f"cost: curve / make_vdna = {cost:.2f}: {'PASS' if cost <= 1.5 else 'FAIL'} (target <= 1.5; shared, "
          "loaded machine: rerun alone for a firm number)")
    return 0 if ok and cost <= 1.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
