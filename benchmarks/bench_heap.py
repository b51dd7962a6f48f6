"""``make_vdna`` on the CPU with and without vdna's heap reuse (vdna/heap.py), each in a fresh process.

    python benchmarks/bench_heap.py [--images 320] [--batch-size 16] [--workers 2] [--rounds 2]

Each round runs two child processes, one with ``VDNA_HEAP_REUSE=0`` (glibc's default malloc behaviour:
the baseline) and one with the default (reuse on), in alternating order from round to round. Each child
makes its images in memory (procedural "base", seed 0, 256x256), warms the backend up on one batch, then
times ``make_vdna`` (``rand_resnet50``, histogram-1000) and reports its wall time and the process's
kernel CPU time and minor page faults during it (``resource.getrusage``). The script prints the
medians and the ratio baseline / reuse.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(args) -> None:
    import resource

    from vdna import procedural
    from vdna.processor import VDNAProcessor

    images = procedural.make_images(args.images, seed=0, style="base")
    proc = VDNAProcessor()
    kw = dict(feat_extractor_name="rand_resnet50", distribution_name="histogram-1000", device="cpu",
              batch_size=args.batch_size, num_workers=args.workers, verbose=False)
    proc.make_vdna(images[: args.batch_size], **kw)  # build/load the backend, warm up
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    proc.make_vdna(images, **kw)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": wall, "kernel": r1.ru_stime - r0.ru_stime, "user": r1.ru_utime - r0.ru_utime,
                      "faults": r1.ru_minflt - r0.ru_minflt}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from vdna import heap

    if not heap.enabled():
        print("heap reuse is off in this process (not glibc, VDNA_HEAP_REUSE=0, or malloc configured by the "
              "environment): nothing to compare")
        return 0
    results = {"baseline": [], "reuse": []}
    for r in range(args.rounds):
        order = ("baseline", "reuse") if r % 2 == 0 else ("reuse", "baseline")
        for name in order:
            env = dict(os.environ, VDNA_HEAP_REUSE="0" if name == "baseline" else "1")
            out = subprocess.run([sys.executable, __file__, "--child", "--images", str(args.images), "--batch-size",
                                  str(args.batch_size), "--workers", str(args.workers)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            results[name].append(res)
            print(f"round {r + 1} {name:<9} make_vdna {res['wall']:7.1f} s  kernel {res['kernel']:6.1f} s  "
                  f"user {res['user']:6.1f} s  minor faults {res['faults']:>10,}", flush=True)
    med = {n: {k: statistics.median(x[k] for x in v) for k in v[0]} for n, v in results.items()}
    print(f"\n{args.images} images, rand_resnet50, histogram-1000, batch {args.batch_size}, medians of {args.rounds}:")
    for n in ("baseline", "reuse"):
        print(f"  {n:<9} {med[n]['wall']:7.1f} s (kernel {med[n]['kernel']:.1f} s, {med[n]['faults']:,.0f} faults)")
    print(f"  baseline / reuse: {med['baseline']['wall'] / med['reuse']['wall']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
