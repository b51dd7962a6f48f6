"""Reduction of a DNA state across torch.distributed ranks: vdna's reduce_accumulator vs a bare all_reduce.

The state is a rand_resnet50 histogram-1000 accumulator (16 layers, 15,104 neurons x 1,000 bins, int64
counts: 121 MB per rank), filled with random counts. Times, in one run on the same ranks:

  * ``vdna.distributed.reduce_accumulator`` (settings check, meta exchange, state copy, SUM of the
    counts and NaN counts, rebuilding the reduced accumulator), every rank getting the result;
  * the floor: one ``dist.all_reduce`` of a (15104, 1000) int64 tensor already in place.

Prints the best of ``--repeats`` times, the ratio, the payload per rank and the bytes a ring
all-reduce moves per rank (2 (W-1)/W x payload, sent and received), and PASS/FAIL against the
target (reduce_accumulator within 2x of the bare all_reduce). It reports, it does not assert.

Run: ``torchrun --nproc_per_node=2 benchmarks/bench_reduction.py`` (gloo on CPUs; NCCL when run on
GPUs with ``--backend nccl``).
"""
import argparse
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from vdna import Accumulator
from vdna.distributed import context, reduce_accumulator
from vdna.extractors import get_extractor_info

BINS = 1000
TARGET_RATIO = 2.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dist.init_process_group(args.backend, timeout=timedelta(seconds=600))
    if args.backend == "nccl":
        torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    rank, world = dist.get_rank(), dist.get_world_size()
    info = get_extractor_info("rand_resnet50")
    neurons = dict(info.neurons_per_layer)
    ranges = {layer: (np.full(c, -1.0), np.full(c, 1.0)) for layer, c in neurons.items()}
    acc = Accumulator(f"histogram-{BINS}", neurons, activation_ranges=ranges, feature_extractor_name="rand_resnet50")
    rng = np.random.default_rng(rank)
    state = acc.state_dict()
    for layer, c in neurons.items():
        state["layers"][layer]["counts"] = rng.integers(0, 1000, size=(c, BINS), dtype=np.int64)
    state["num_images"] = 1000
    acc.load_state_dict(state)
    ctx = context()
    total = sum(neurons.values())
    payload = total * BINS * 8 + total * 8  # counts + NaN counts, int64

    ours = []
    for _ in range(args.repeats):
        dist.barrier()
        t0 = time.perf_counter()
        reduced = reduce_accumulator(acc, ctx)
        ours.append(time.perf_counter() - t0)
    floor = []
    dev = ctx.device
    t = torch.from_numpy(np.concatenate([state["layers"][l]["counts"] for l in neurons])).to(dev)
    for _ in range(args.repeats):
        x = t.clone()
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        if dev != "cpu":
            torch.cuda.synchronize()
        floor.append(time.perf_counter() - t0)
    first = next(iter(neurons))
    check = np.array_equal(reduced.state_dict()["layers"][first]["counts"], x[: neurons[first]].cpu().numpy())
    if rank == 0:
        best, base = min(ours), min(floor)
        ratio = best / base
        ring = 2 * (world - 1) / world * payload
        print(f"ranks: {world} ({args.backend}); state: {total} neurons x {BINS} bins, int64")
        print(f"payload per rank: {payload / 1e6:.1f} MB; ring all-reduce moves {ring / 1e6:.1f} MB sent "
              f"(+ as much received) per rank")
        print(f"reduce_accumulator: {best * 1e3:.0f} ms (best of {args.repeats}; all: "
              f"{', '.join(f'{v * 1e3:.0f}' for v in ours)} ms)")
        print(f"bare all_reduce:    {base * 1e3:.0f} ms (best of {args.repeats})")
        print(f"ratio: {ratio:.2f}x the bare all_reduce (target <= {TARGET_RATIO}x): "
              f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}; reduced counts equal the all_reduce: {check}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
