"""Worker of tests/test_distributed.py, started by ``torchrun --nproc_per_node=2`` (gloo, CPU).

Usage: distributed_worker.py OUT_DIR RANGES_JSON. Every rank writes into OUT_DIR: the DNAs it got
(``<case>.r<rank>``), the one-process DNAs of the same images made in the same process (so that both
use the same threads and kernels), and ``report.r<rank>.json`` with the errors each edge case raised
and the results of direct ``reduce_accumulator`` checks. The test compares them.
"""
import json
import os
import sys
import warnings
from datetime import timedelta

import numpy as np
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_extractor  # noqa: E402,F401  (registers "tiny")

from vdna import Accumulator, VDNAProcessor, procedural  # noqa: E402
from vdna.distributed import context, reduce_accumulator  # noqa: E402
from vdna.processor import VDNAStream  # noqa: E402

N_IMAGES = 9
KINDS = ["histogram-16", "gaussian", "layer-gaussian", "activation-ranges"]


def main(out, ranges):
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    warnings.simplefilter("ignore")
    proc = VDNAProcessor()
    images = procedural.make_images(N_IMAGES, seed=3, style="base", size=(40, 48))
    # batch_size=1: each image is forwarded alone in every run, so activations do not depend on how
    # the images are split (small convolutions' CPU kernels may depend on the batch composition).
    kw = dict(feat_extractor_name="tiny", device="cpu", backend="eager", verbose=False, batch_size=1, num_workers=0)
    report = {"rank": rank, "world": world}

    def kw_for(kind):
        return dict(kw, distribution_name=kind, activation_ranges=ranges if kind.startswith("histogram") else None)

    for kind in KINDS:
        proc.make_vdna(images, **kw_for(kind)).save(os.path.join(out, f"{kind}.r{rank}"))
        proc.make_vdna(images, distributed=False, **kw_for(kind)).save(os.path.join(out, f"{kind}.local.r{rank}"))
    # dst: only rank 0 gets the DNA
    report["dst_result_is_none"] = proc.make_vdna(images, dst=0, **kw_for("gaussian")) is None
    # a rank with no images (1 image on 2 ranks: rank 0 gets none)
    proc.make_vdna(images[:1], **kw_for("histogram-16")).save(os.path.join(out, f"one.r{rank}"))
    # streams: each rank feeds its own images; compute() returns the DNA of all of them
    stream = proc.stream("tiny", "histogram-16", device="cpu", batch_size=1, backend="eager",
                         activation_ranges=ranges)
    stream.update(np.stack(images[rank::world]))
    stream.compute().save(os.path.join(out, f"stream.r{rank}"))
    # ranks disagreeing on settings: the same clear error on every rank
    try:
        proc.make_vdna(images, seed=rank, **kw_for("gaussian"))
        report["mismatch"] = None
    except ValueError as exc:
        report["mismatch"] = str(exc)
    # a rank that fails before starting (its source is missing): the same, no rank left waiting
    try:
        proc.make_vdna(images if rank == 0 else os.path.join(out, "no_such_folder"), **kw_for("gaussian"))
        report["setup_failure"] = None
    except Exception as exc:  # noqa: BLE001 - the test checks the type and message
        report["setup_failure"] = f"{type(exc).__name__}: {exc}"
    # a rank that fails: it raises its own error, the others a RuntimeError naming it
    forward = VDNAStream._forward

    def failing(self, batch):
        if rank == 1:
            raise OSError("disk on fire")
        forward(self, batch)

    VDNAStream._forward = failing
    try:
        proc.make_vdna(images, **kw_for("gaussian"))
        report["failure"] = None
    except Exception as exc:  # noqa: BLE001 - the test checks the type and message
        report["failure"] = f"{type(exc).__name__}: {exc}"
    VDNAStream._forward = forward
    # checkpoints under torchrun: one file per rank; a rerun resumes (here: from complete checkpoints)
    ck = os.path.join(out, "run.ckpt")
    a = proc.make_vdna(images, checkpoint=ck, checkpoint_every=2, **kw_for("histogram-16"))
    b = proc.make_vdna(images, checkpoint=ck, checkpoint_every=2, **kw_for("histogram-16"))
    report["checkpoint_files"] = sorted(p for p in os.listdir(out) if p.startswith("run.ckpt"))
    report["checkpoint_resume_equal"] = all(np.array_equal(a.data[l], b.data[l]) for l in a.data)
    report["direct"] = direct_reduction_checks(rank, world)
    # rank_images and calibrate: every rank gets the one-process result
    from vdna import calibrate, rank_images

    reference = proc.make_vdna(images, distributed=False, **kw_for("gaussian"))
    rkw = dict(batch_size=1, device="cpu", backend="eager", num_workers=0, processor=proc)
    report["rank_images"] = rank_images(images, reference, **rkw)
    report["rank_images_local"] = rank_images(images, reference, distributed=False, **rkw)
    calibrate(images, "tiny", processor=proc, device="cpu", backend="eager", batch_size=1, verbose=False,
              num_workers=0).save(os.path.join(out, f"calibrate.r{rank}"))
    # `vdna make` under torchrun: rank 0 writes the files (and shows progress), the others nothing
    folder = os.path.join(out, "images")
    if rank == 0:
        procedural.write_image_set(folder, N_IMAGES, seed=3, style="base", size=(40, 48))
    dist.barrier()
    from vdna.cli import main as cli

    report["cli_rc"] = cli(["make", folder, "-o", os.path.join(out, f"cli_made_by_r{rank}"), "--extractor", "tiny",
                            "--backend", "eager", "--device", "cpu", "--batch-size", "1", "--workers", "0",
                            "--distribution", "histogram-16", "--ranges", ranges, "-q",
                            "--checkpoint", os.path.join(out, "cli.ckpt"), "--checkpoint-every", "3"])
    proc.make_vdna(folder, distributed=False, **kw_for("histogram-16")).save(os.path.join(out, f"cli_local.r{rank}"))
    # tar shards are split across ranks by shard (3 shards: rank 0 reads one, rank 1 two)
    import tarfile

    shard_dir = os.path.join(out, "shards")
    if rank == 0:
        os.makedirs(shard_dir)
        names = sorted(os.listdir(folder))
        for s in range(3):
            with tarfile.open(os.path.join(shard_dir, f"shard-{s:02d}.tar"), "w") as tar:
                for name in names[3 * s:3 * s + 3]:
                    tar.add(os.path.join(folder, name), arcname=name)
    dist.barrier()
    pattern = os.path.join(shard_dir, "shard-{00..02}.tar")
    proc.make_vdna(pattern, **kw_for("histogram-16")).save(os.path.join(out, f"shards.r{rank}"))
    report["stability"] = stability_checks(proc, images, ranges, kw, out, rank, world)
    with open(os.path.join(out, f"report.r{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


def stability_checks(proc, images, ranges, kw, out, rank, world):
    """Stability curves over ranks against the one-process curve of the same images (values compared
    as exact floats: counts and per-image means are exact sums, the curve is computed on one rank)."""
    from vdna import SubsetAccumulator
    from vdna.cli import main as cli

    skw = dict(sizes=[2, 4, 7], repeats=3, seed=5, distributions=["histogram-16", "layer-gaussian"],
               activation_ranges=ranges, feat_extractor_name="tiny", device="cpu", backend="eager", batch_size=1,
               num_workers=0)
    refs = [proc.make_vdna(images[:5], distributed=False, **kw_for_stability(kw, ranges, d))
            for d in ("histogram-16", "layer-gaussian")]
    report = {}

    def as_json(curve):
        return None if curve is None else {"metrics": curve.metrics, "full": curve.full,
                                           "values": {m: curve.values[m].tolist() for m in curve.metrics}}

    report["local"] = as_json(proc.stability(images, refs, distributed=False, **skw))
    report["ranks"] = as_json(proc.stability(images, refs, **skw))
    report["dst1"] = as_json(proc.stability(images, refs, dst=1, **skw))
    # a reference source: its DNAs are made over the ranks too, as make_vdna makes them there (the
    # Gaussians of a split reference differ from one process's by merge rounding, which FD to a singular
    # reference covariance amplifies: compare with the distributed make_vdna's DNAs, which must match exactly)
    refs_ranks = [proc.make_vdna(images[:5], **kw_for_stability(kw, ranges, d))
                  for d in ("histogram-16", "layer-gaussian")]
    report["ref_source_local"] = as_json(proc.stability(images, refs_ranks, distributed=False, **skw))
    report["ref_source_ranks"] = as_json(proc.stability(images, images[:5], **skw))
    # activations from anywhere: each rank adds its own images (interleaved; NaN in one image)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(8, 3, 2, 2)) * 2 + 50
    x[3, 1, 0, 0] = np.nan
    lay = {"l": 3}
    hist_ranges = {"l": (np.full(3, 44.0), np.full(3, 56.0))}
    sub = dict(sizes=[2, 5], repeats=2, seed=1, distributions=["histogram-8", "gaussian"],
               activation_ranges=hist_ranges)
    ref = [Accumulator(d, lay, activation_ranges=hist_ranges if d.startswith("hist") else None) for d in
           ("histogram-8", "gaussian")]
    for a in ref:
        a.update({"l": x[:4] + 1.0})
    ref = [a.compute() for a in ref]
    x_ok = x.copy()
    x_ok[3] = x[2]  # the Gaussian curve needs finite per-image means
    for name, data, dists in (("direct_hist", x, ["histogram-8"]), ("direct_gauss", x_ok, ["gaussian"])):
        one = SubsetAccumulator(lay, 8, **dict(sub, distributions=dists))
        one.update({"l": data})
        mine = SubsetAccumulator(lay, 8, **dict(sub, distributions=dists))
        idx = np.arange(rank, 8, world)
        mine.update({"l": data[idx]}, indices=idx)
        r = [v for v in ref if (v.type == "histogram") == (dists[0].startswith("hist"))]
        report[name] = [as_json(one.compute(r, distributed=False)), as_json(mine.compute(r))]
        # a second distributed compute, and compute on a rank that did not sum: clear errors, no hang
        for key, call in ((f"{name}_again", lambda: mine.compute(r)),
                          (f"{name}_local_after", lambda: mine.compute(r, distributed=False))):
            try:
                call()
                report[key] = None if rank != 0 or key.endswith("again") else "ok"
            except ValueError as exc:
                report[key] = str(exc)
    # tables of both widths, ranks with different samples per image (2x2 maps on rank 0, 3x3 on rank 1):
    # rank 0 widens its 16-bit tables to the layout rank 1's images need before the sum
    if world == 2:
        x9 = rng.normal(size=(8, 3, 3, 3)) * 2 + 50

        def mixed():
            acc = SubsetAccumulator(lay, 8, **dict(sub, distributions=["histogram-8"]))
            acc._narrow_max = 20  # a table of 2 images of 9 samples may be 16-bit, one of 3 images may not
            return acc

        one, mine = mixed(), mixed()
        even, odd = np.arange(0, 8, 2), np.arange(1, 8, 2)
        one.update({"l": x[even]}, indices=even)
        one.update({"l": x9[odd]}, indices=odd)
        idx = even if rank == 0 else odd
        mine.update({"l": (x if rank == 0 else x9)[idx]}, indices=idx)
        report["direct_mixed"] = [as_json(one.compute([ref[0]], distributed=False)), as_json(mine.compute([ref[0]]))]
        where = one._tables["l"].where
        report["direct_mixed_widths"] = [int((where >= 0).sum()), int((where < 0).sum())]
    # an empty rank (every image on the last rank), an image on two ranks, an image on none
    for name, idx in (("empty_rank", np.arange(8) if rank == world - 1 else np.arange(0)),
                      ("twice", np.arange(8) if rank == 0 else np.array([3])),
                      ("missing", np.arange(rank, 7, world))):
        acc = SubsetAccumulator(lay, 8, **dict(sub, distributions=["histogram-8"]))
        acc.update({"l": x[idx]}, indices=idx)
        try:
            report[name] = as_json(acc.compute([ref[0]]))
        except ValueError as exc:
            report[name] = f"ValueError: {exc}"
    # ranks disagreeing on settings: the same error on every rank
    acc = SubsetAccumulator(lay, 8, **dict(sub, distributions=["histogram-8"], seed=rank))
    acc.update({"l": x[rank::world]}, indices=np.arange(rank, 8, world))
    try:
        acc.compute([ref[0]])
        report["mismatch"] = None
    except ValueError as exc:
        report["mismatch"] = str(exc)
    # a rank that fails during its share (an unreadable image in rank 1's half): it raises its own error,
    # the other rank a RuntimeError naming it; nobody waits
    bad = os.path.join(out, "bad_images")
    if rank == 0:
        procedural.write_image_set(bad, 4, seed=3, style="base", size=(40, 48))
        with open(os.path.join(bad, "zz_broken.png"), "wb") as f:
            f.write(b"not a png")
    dist.barrier()
    try:
        proc.stability(bad, refs, **dict(skw, sizes=[2, 5]))
        report["failure"] = None
    except Exception as exc:  # noqa: BLE001 - the test checks the type and message
        report["failure"] = f"{type(exc).__name__}: {exc}"
    # `vdna stability` under torchrun: rank 0 writes the CSV
    folder = os.path.join(out, "images")
    ref_file = os.path.join(out, "stab_ref")
    if rank == 0:
        refs[0].save(ref_file)
    dist.barrier()
    report["cli_rc"] = cli(["stability", folder, "--reference", ref_file, "-o", os.path.join(out, f"stab_r{rank}.csv"),
                            "--sizes", "3", "6", "--repeats", "2", "--backend", "eager", "--device", "cpu",
                            "--batch-size", "1", "--workers", "0", "--ranges", ranges, "-q"])
    local = proc.stability(folder, refs[0], sizes=[3, 6], repeats=2, distributed=False,
                           **{k: v for k, v in skw.items() if k not in ("sizes", "repeats", "seed", "distributions")})
    if rank == 0:
        local.to_csv(os.path.join(out, "stab_local.csv"))
    return report


def kw_for_stability(kw, ranges, kind):
    return dict(kw, distribution_name=kind, activation_ranges=ranges if kind.startswith("histogram") else None)


def direct_reduction_checks(rank, world):
    """reduce_accumulator on synthetic activations with NaN, +-Inf, an all-NaN neuron and an empty
    rank, against one process accumulating everything; returns {kind: 'ok' or the mismatch}."""
    rng = np.random.default_rng(77)
    x = rng.normal(size=(12, 3, 2, 2)) * 3 + 100  # mean far from zero
    x[:, 2] = np.nan  # neuron 2: NaN everywhere
    x[1, 0, 0, 0] = np.inf
    x[4, 1, 1, 1] = -np.inf
    ranges = {"l": (np.array([90.0, 90.0, 90.0]), np.array([110.0, 110.0, 110.0]))}
    results = {}
    for kind in ["histogram-8", "gaussian", "layer-gaussian", "activation-ranges"]:
        def new():
            return Accumulator(kind, {"l": 3}, activation_ranges=ranges if kind.startswith("hist") else None)

        one, mine = new(), new()
        for s in range(0, len(x), 5):  # the same batches in both (Inf makes moments batch-dependent)
            one.update({"l": x[s:s + 5]})
            if rank == world - 1:  # the other ranks have no images at all
                mine.update({"l": x[s:s + 5]})
        got = reduce_accumulator(mine, context()).compute().data["l"]
        ref = one.compute().data["l"]
        ok = True
        for key in (ref if isinstance(ref, dict) else {"counts": None}):
            r = ref if key == "counts" else ref[key]
            g = got if key == "counts" else got[key]
            ok = ok and np.array_equal(np.asarray(r), np.asarray(g), equal_nan=True)
        nan_ok = np.array_equal(reduce_accumulator(mine, context()).nan_counts["l"], one.nan_counts["l"])
        results[kind] = "ok" if ok and nan_ok else f"mismatch: {got} vs {ref}"
    return results


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
