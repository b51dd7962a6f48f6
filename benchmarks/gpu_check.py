"""The GPU path checked end to end on a CUDA machine (see docs/gpu.md).

    python benchmarks/gpu_check.py [--images 256] [--batch-size 32] [--device cuda:0]

Without a CUDA device it prints "no CUDA device" and exits 0 (nothing to check). On a GPU it:

1. builds the LibTorch shim (first use) and says where;
2. runs ``rand_resnet50`` (generated weights, shipped ranges) and a ViT-S/16 (seeded random
   weights, ranges calibrated on the CPU here) over procedural images, with both backends
   (libtorch, eager) and both accumulation paths (host: activations copied to the C core; device:
   reduced on the GPU, read back once), each in IEEE float32 (``allow_tf32=False``, the default);
3. compares every path with the CPU run (eager, C core):
   - histogram-1000 counts: identical, or how many values changed bin (GPU convolutions and matmuls
     sum in another order than the CPU's, so a value within float32 rounding of a bin edge can land
     in the neighbour bin; the report gives the count and the share of all values);
   - Gaussian means and variances within a tolerance derived below;
4. checks what must be exact on the GPU itself: host and device accumulation of one backend give
   identical counts (same activations, same rules), libtorch and eager give identical activations
   (same kernels: the shim runs the graph op by op with the fuser off, both under the same TF32
   policy), and bfloat16 autocast gives identical activations in both backends;
5. reports what TF32 would change (histogram counts moved with ``allow_tf32=True``);
6. checks that a device out-of-memory error reaches Python as a MemoryError with advice;
7. prints images per second for each path (forward + accumulation, after a warm-up).

Exit status 0 when every exact check passes and the CPU comparisons are within their tolerances,
1 otherwise. ``--device cpu`` runs the same steps on the CPU (a dry run of this script; the CPU
comparisons are then trivially exact).
"""
import argparse
import sys
import time

import numpy as np

BINS = 1000


def _has_cuda(torch) -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def _vit_small(torch):
    """A ViT-S/16 with seeded random weights (no checkpoint needed), wrapped as a vdna extractor."""
    from vdna.extractors.base import Extractor
    from vdna.extractors.zoo import ZOO

    entry = ZOO["dino_vit_small"]
    torch.manual_seed(0)
    net = entry.build()
    for p in net.parameters():  # a small spread keeps 12 random blocks from saturating
        with torch.no_grad():
            p.normal_(0.0, 0.02)
    info = entry.info
    info = type(info)(name="gpu_check_vit_s16", neurons_per_layer=dict(info.neurons_per_layer),
                      layouts=dict(info.layouts), input_size=tuple(info.input_size), mean=tuple(info.mean),
                      std=tuple(info.std))
    return Extractor(net, info, weights_sha256="gpu-check-vit-s16-seed0").eval()


def _batches(torch, n, size, batch_size):
    from vdna.procedural import make_images

    imgs = np.stack(make_images(n, seed=0, size=tuple(size)))  # (N, H, W, 3) uint8
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().contiguous()
    return [x[i:i + batch_size] for i in range(0, n, batch_size)]


def _cpu_ranges(torch, extractor, batches):
    from vdna._native import _core
    from vdna.backends import get_backend

    be = get_backend(extractor, "cpu", backend="eager")
    info = extractor.info
    accs = {l: _core.RangeAccumulator(c, layout=info.layouts[l]) for l, c in info.neurons_per_layer.items()}
    for x in batches:
        out = be.forward(x)
        for l, acc in accs.items():
            acc.update(out[l])
    return {l: (acc.mins, acc.maxs) for l, acc in accs.items()}


def _specs(extractor, ranges):
    from vdna.backends import LayerSpec

    info = extractor.info
    return [LayerSpec(l, info.layouts[l], c, ranges[l][0], ranges[l][1], BINS, moments=True)
            for l, c in info.neurons_per_layer.items()]


def _new_host(specs):
    from vdna._native import _core

    return {s.layer: (_core.HistAccumulator(s.hist_mins, s.hist_maxs, BINS, layout=s.layout),
                      _core.MomentAccumulator(s.n_neurons, layout=s.layout)) for s in specs}


def _run(torch, backend, specs, batches, device_acc, sync):
    """One pass over the images: {layer: (hist acc, moment acc)} and seconds (after one warm-up batch)."""
    host = _new_host(specs)
    if device_acc:
        with backend.device_accumulators(specs) as warm:
            warm.update(batches[0])
            warm.states()
        sync()
        t0 = time.perf_counter()
        with backend.device_accumulators(specs) as acc:
            for x in batches:
                acc.update(x)
            states = acc.states()  # the one read-back
        sync()
        seconds = time.perf_counter() - t0
        for s in specs:
            h, m = host[s.layer]
            states[s.layer].merge_into(hist=h, moments=m)
    else:
        backend.forward(batches[0])
        sync()
        t0 = time.perf_counter()
        for x in batches:
            out = backend.forward(x)
            for s in specs:
                for acc in host[s.layer]:
                    acc.update(out[s.layer])
        sync()
        seconds = time.perf_counter() - t0
    return host, seconds


def _hist_diff(a, b, specs):
    """(values that changed bin, values in total): half the L1 distance of the counts."""
    moved = total = 0
    for s in specs:
        ca, cb = a[s.layer][0].counts, b[s.layer][0].counts
        moved += int(np.abs(ca.astype(np.int64) - cb.astype(np.int64)).sum()) // 2
        total += int(ca.sum())
    return moved, total


def _moment_error(a, b, specs):
    """Largest |difference| of per-neuron means and standard deviations, in units of the CPU's
    per-neuron scale (|mean| + std + tiny)."""
    worst = 0.0
    for s in specs:
        ma, mb = a[s.layer][1], b[s.layer][1]
        scale = np.abs(mb.mean) + np.sqrt(np.maximum(mb.var, 0)) + 1e-30
        worst = max(worst, float(np.max(np.abs(ma.mean - mb.mean) / scale)),
                    float(np.max(np.abs(np.sqrt(np.maximum(ma.var, 0)) - np.sqrt(np.maximum(mb.var, 0))) / scale)))
    return worst


def _forward_equal(torch, a, b, x):
    oa, ob = a.forward(x), b.forward(x)
    oa = {k: np.array(v, copy=True) for k, v in oa.items()}  # shim views are valid until the next run
    return all(np.array_equal(oa[k], np.asarray(ob[k]), equal_nan=True) for k in ob)


def _check_oom(torch, device, tmp):
    """A model that asks the device for 2^52 bytes: the shim must raise a MemoryError with advice."""
    from vdna.backends.libtorch import ShimModel, ShimOutOfMemoryError, load_shim

    class Hog(torch.nn.Module):
        def forward(self, x):
            big = torch.empty([x.size(0) * (1 << 50)], dtype=torch.float32, device=x.device)
            return {"big": big[:1]}

    path = f"{tmp}/hog.pt"
    torch.jit.save(torch.jit.script(Hog()), path)
    model = ShimModel(load_shim(), path, str(device))
    try:
        model.run(torch.zeros((1, 3, 8, 8)), device)
    except ShimOutOfMemoryError as exc:
        return isinstance(exc, MemoryError) and "batch_size" in str(exc), str(exc).splitlines()[0][:160]
    except Exception as exc:  # noqa: BLE001 - reported
        return False, f"{type(exc).__name__}: {exc}"[:160]
    finally:
        model.close()
    return False, "no error raised"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="cuda:N (default: the current CUDA device), or cpu for a dry run")
    p.add_argument("--extractors", default="rand_resnet50,vit_s16")
    args = p.parse_args(argv)

    import torch

    if args.device is None:
        if not _has_cuda(torch):
            print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing to check")
            return 0
        args.device = f"cuda:{torch.cuda.current_device()}"
    device = torch.device(args.device)
    if device.type == "cuda" and not _has_cuda(torch):
        print(f"gpu_check: no CUDA device for {args.device}; nothing to check")
        return 0

    import tempfile

    from vdna.backends import get_backend
    from vdna.backends.build import build_shim
    from vdna.extractors import get_extractor

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    failures = []
    t0 = time.perf_counter()
    print(f"shim: {build_shim(quiet=True)} ({time.perf_counter() - t0:.0f} s)")
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"cuDNN {torch.backends.cudnn.version()})")

    def expect(ok, what):
        print(f"  {'PASS' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    for name in args.extractors.split(","):
        extractor = get_extractor("rand_resnet50") if name == "rand_resnet50" else _vit_small(torch)
        info = extractor.info
        batches = _batches(torch, args.images, info.input_size, args.batch_size)
        n = sum(int(x.shape[0]) for x in batches)
        ranges = extractor.activation_ranges() if name == "rand_resnet50" else _cpu_ranges(torch, extractor, batches[:2])
        specs = _specs(extractor, ranges)
        print(f"\n{info.name}: {n} images {tuple(info.input_size)}, {sum(s.n_neurons for s in specs)} neurons, "
              f"histogram-{BINS} + gaussian")

        cpu_be = get_backend(extractor, "cpu", backend="eager")
        ref, sec = _run(torch, cpu_be, specs, batches, False, lambda: None)
        print(f"  cpu eager/host            {n / sec:8.1f} img/s (reference)")

        backends = {b: get_backend(extractor, device, backend=b) for b in ("libtorch", "eager")}
        results = {}
        for bname, be in backends.items():
            for acc_name, dev_acc in (("host", False), ("device", True)):
                res, sec = _run(torch, be, specs, batches, dev_acc, sync)
                results[(bname, acc_name)] = res
                moved, total = _hist_diff(res, ref, specs)
                err = _moment_error(res, ref, specs)
                print(f"  {device.type} {bname:8s}/{acc_name:6s}    {n / sec:8.1f} img/s; vs CPU: {moved} of {total} "
                      f"values in another bin ({moved / max(total, 1):.2e}), moments max rel. error {err:.1e}")
                # Tolerance for the moments: activations are float32 results of reductions of length K
                # (K = 3x3x2048 = 18432 for a ResNet-50 convolution, 4 x 384 = 1536 for a ViT-S MLP);
                # a reordered float32 sum differs by at most K x eps32 (1.2e-7) relative to the sum of
                # magnitudes, 18432 x 1.2e-7 = 2.2e-3, and the per-neuron scale (|mean| + std) bounds
                # that sum's effect on the mean and std. 5e-3 leaves 2x headroom over the worst case.
                expect(err <= 5e-3, f"{info.name} {bname}/{acc_name}: moments within 5e-3 of the CPU's scale")
                # Histogram counts: the share of values moved to a neighbour bin is bounded by the share
                # within rounding of an edge: about 1000 bins x 2 x (K x eps32) = 4e-3 of values for a
                # uniform spread; more than 1e-2 means a real difference (layout, range, rule).
                expect(moved <= 1e-2 * total, f"{info.name} {bname}/{acc_name}: <= 1% of values change bin vs CPU")
        for bname in backends:
            same = all(np.array_equal(results[(bname, "host")][s.layer][0].counts,
                                      results[(bname, "device")][s.layer][0].counts) for s in specs)
            expect(same, f"{info.name} {bname}: device accumulation counts == host accumulation counts (exact)")
        expect(_forward_equal(torch, backends["libtorch"], backends["eager"], batches[0]),
               f"{info.name}: libtorch and eager activations identical on {device.type} (exact)")
        amp = {b: get_backend(extractor, device, backend=b, amp_dtype="bf16") for b in ("libtorch", "eager")}
        expect(_forward_equal(torch, amp["libtorch"], amp["eager"], batches[0]),
               f"{info.name}: bf16 autocast activations identical in both backends (exact)")
        if device.type == "cuda":
            tf32 = get_backend(extractor, device, backend="libtorch", allow_tf32=True)
            res, sec = _run(torch, tf32, specs, batches, True, sync)
            moved, total = _hist_diff(res, results[("libtorch", "device")], specs)
            print(f"  allow_tf32=True: {n / sec:8.1f} img/s; {moved} of {total} values ({moved / max(total, 1):.2e}) "
                  f"in another bin than IEEE float32 (informative)")
            tf32.close()
        for be in list(backends.values()) + list(amp.values()):
            be.close()
        del ref, results

    if device.type == "cuda":
        with tempfile.TemporaryDirectory() as tmp:
            ok, msg = _check_oom(torch, device, tmp)
        expect(ok, f"device out of memory -> ShimOutOfMemoryError (a MemoryError) with advice: {msg}")
    print(f"\n{'PASS' if not failures else 'FAIL'}: {len(failures)} check(s) failed")
    for f in failures:
        print(f"  - {f}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
