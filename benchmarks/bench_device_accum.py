"""Device accumulation on the CPU device: milliseconds per batch for each DNA kind, both backends.

    python benchmarks/bench_device_accum.py [--batch-size 16] [--batches 4] [--rounds 5]

The extractor passes the pixels through as one (N, 192, 16, 16) layer (128 x 128 images), so the
time is the accumulation's (eager: vdna/backends/device_accum.py; libtorch: the shim's C++), not a
network's. Also reports the float64 C core on the host with the same activations (the reference
the device path must match, and the speed it replaces on accelerators), ratio core / device.
Run it at two commits (``PYTHONPATH=<checkout>``) to compare versions; on a GPU the float64 work
per value matters more (see docs/gpu.md).
"""
import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from vdna._native import _core
from vdna.backends import LayerSpec, get_backend

C, SIDE, BINS = 192, 16, 1000


class PassThrough(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.info = SimpleNamespace(name="bench_device_accum_passthrough", input_size=128)
        self.weights_sha256 = "0" * 64

    def forward(self, x):
        return {"act": (x * (1.0 / 64.0) - 2.0).reshape(x.shape[0], C, SIDE, SIDE)}


KINDS = {  # one statistic per accumulator, as the DNA kinds use them
    "histogram-1000": dict(hist=True),
    "gaussian": dict(moments=True),
    "activation-ranges": dict(ranges=True),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    batches = [torch.rand((args.batch_size, 3, 128, 128), generator=g) * 255 for _ in range(args.batches)]
    model = PassThrough()
    mins, maxs = np.full(C, -2.0), np.full(C, 2.0)
    backends = {name: get_backend(model, backend=name) for name in ("eager", "libtorch")}
    acts = [model(x)["act"].numpy() for x in batches]
    values = args.batch_size * C * SIDE * SIDE
    print(f"{args.batch_size} x {C} x {SIDE}x{SIDE} float32 activations per batch, median of {args.rounds} rounds, "
          f"torch threads {torch.get_num_threads()}; ms/batch (M values/s)")
    ok = True
    for kind, flags in KINDS.items():
        hist = flags.get("hist", False)
        spec = LayerSpec("act", "channels", C, mins if hist else None, maxs if hist else None, BINS if hist else 0,
                         moments=flags.get("moments", False), ranges=flags.get("ranges", False))
        results, states = {}, {}
        # the backends alternate round by round so that neither pays the machine's load alone
        times = {name: [] for name in backends}
        for r in range(args.rounds + 1):
            for name, be in backends.items():
                acc = be.device_accumulators([spec])
                t0 = time.perf_counter()
                for x in batches:
                    acc.update(x)
                states[name] = acc.states()["act"]
                if r:  # round 0 warms up
                    times[name].append((time.perf_counter() - t0) / len(batches))
                acc.close()
        results = {name: float(np.median(t)) for name, t in times.items()}
        core_times = []
        for r in range(args.rounds + 1):
            core = (_core.HistAccumulator(mins, maxs, BINS) if hist else _core.MomentAccumulator(C)
                    if flags.get("moments") else _core.RangeAccumulator(C))
            t0 = time.perf_counter()
            for a in acts:
                core.update(a)
            if r:
                core_times.append((time.perf_counter() - t0) / len(acts))
        results["core (host)"] = float(np.median(core_times))
        line = "  ".join(f"{name} {sec * 1e3:7.2f} ({values / sec / 1e6:6.1f})" for name, sec in results.items())
        print(f"{kind:18s} {line}")
        if hist:
            same = (np.array_equal(states["eager"].hist_counts, states["libtorch"].hist_counts)
                    and np.array_equal(states["eager"].hist_counts, core.counts))
            print(f"{'':18s} counts identical (eager, libtorch, core): {same}")
            ok = ok and same
    for be in backends.values():
        be.close()
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
