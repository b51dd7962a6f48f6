"""CPU: LibTorch shim backend vs eager PyTorch backend, end to end (forward + device histograms).

    python benchmarks/bench_backends.py [--batches 8] [--batch-size 16] [--size 128]

Uses a small ResNet-like extractor defined here (no downloads). Prints seconds per batch for each
backend and the ratio eager/libtorch (target: >= 1, the shim at least as fast).
"""
import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

from vdna.backends import LayerSpec, get_backend


class BenchExtractor(torch.nn.Module):
    def __init__(self, size):
        super().__init__()
        torch.manual_seed(0)
        chans = [3, 32, 64, 128, 256]
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Conv2d(a, b, 3, stride=2, padding=1), torch.nn.BatchNorm2d(b), torch.nn.ReLU())
            for a, b in zip(chans, chans[1:]))
        self.eval()
        self.info = SimpleNamespace(name=f"bench_{size}", input_size=size)
        self.weights_sha256 = None

    def forward(self, x):
        x = (x / 255.0 - 0.45) / 0.225
        out = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            out[f"block{i}"] = x
        return out


def bench(backend, specs, batches, repeats):
    acc = backend.device_accumulators(specs)
    for _ in range(3):  # warm-up: TorchScript profiles its first runs before optimising
        acc.update(batches[0])
    t0 = time.perf_counter()
    for _ in range(repeats):
        for x in batches:
            acc.update(x)
    acc.states()
    return (time.perf_counter() - t0) / (repeats * len(batches))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    model = BenchExtractor(args.size)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), generator=g).float()
               for _ in range(args.batches)]
    with torch.inference_mode():
        first = model(batches[0])
    specs = [LayerSpec(k, "channels", v.shape[1], v.amin((0, 2, 3)).double().numpy(),
                       v.amax((0, 2, 3)).double().numpy(), 1000) for k, v in first.items()]
    results = {}
    for name in ("libtorch", "eager"):
        backend = get_backend(model, backend=name)
        results[name] = bench(backend, specs, batches, args.repeats)
        backend.close()
        print(f"{name:9s} {results[name] * 1e3:8.1f} ms/batch ({args.batch_size} images {args.size}px, "
              f"torch threads {torch.get_num_threads()})")
    print(f"eager / libtorch = {results['eager'] / results['libtorch']:.2f}")
    # Same outputs, same counts: the benchmark compares equal work.
    a, b = (get_backend(model, backend=n).device_accumulators(specs) for n in ("libtorch", "eager"))
    a.update(batches[0]), b.update(batches[0])
    assert all(np.array_equal(a.states()[s.layer].hist_counts, b.states()[s.layer].hist_counts) for s in specs)


if __name__ == "__main__":
    main()
