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
    with open(os.path.join(out, f"report.r{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()


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
