"""DNAs over ``torch.distributed``: split the images across ranks, reduce the accumulator states.

Nothing here opens a connection: every exchange is a collective of the caller's process group
(initialised by the user or by ``torchrun``; NCCL on GPUs, gloo on CPUs). The rules:

- images: rank ``r`` of ``W`` reads the contiguous source positions ``[n*r//W, n*(r+1)//W)``
  (each image exactly once; a rank may get none);
- before any work, the ranks compare their run settings and every rank raises the same
  ``ValueError`` naming the difference (no rank is left waiting in a collective);
- after the local work, the ranks agree on success: if one failed, every rank raises
  ``RuntimeError`` naming it (the failed rank raises its own exception);
- states: counts and NaN counts are SUMmed (int64: exact, hence bit-identical to one process),
  ranges reduced with MIN / MAX, moments and covariance sums gathered and merged in rank order with
  Chan's pairwise rule (the C core's ``merge``), so every rank gets the same bits.

A rank that dies without reaching a collective is detected by the process group itself (gloo and
NCCL raise when a peer's connection closes; otherwise the group's ``timeout`` applies), and
``torchrun`` stops the other workers when one exits with an error.
"""
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .dna import ACTIVATION_RANGES, GAUSSIAN, HISTOGRAM, LAYER_GAUSSIAN
from .subset_tables import NARROW_MAX, WIDE_MAX


@dataclass
class DistContext:
    """A process group this run reduces over: its rank, size and the device its collectives use."""

    group: object
    rank: int
    world_size: int
    device: str

    def shard(self, count: int) -> Tuple[int, int]:
        return shard_range(count, self.rank, self.world_size)


def shard_range(count: int, rank: int, world_size: int) -> Tuple[int, int]:
    """The contiguous positions ``[lo, hi)`` of ``count`` images that ``rank`` of ``world_size`` reads."""
    return count * rank // world_size, count * (rank + 1) // world_size


def context(distributed: Optional[bool] = None, group=None) -> Optional[DistContext]:
    """The distributed context to use, or None for a one-process run.

    ``distributed=None`` (default): on when ``torch.distributed`` has a default process group (or a
    ``group`` is given); ``False``: off; ``True``: on, and an error if no group is initialised.
    """
    if distributed is False:
        return None
    if distributed not in (None, True):
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if not initialised:
        if distributed or group is not None:
            raise ValueError("distributed=True (or group=) needs an initialised torch.distributed process group "
                             "(torch.distributed.init_process_group, or run under torchrun)")
        return None
    group = group if group is not None else dist.group.WORLD
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    if rank < 0:
        raise ValueError("this process is not a member of the given process group")
    device = "cpu"
    if str(dist.get_backend(group)).lower() == "nccl":
        import torch

        device = f"cuda:{torch.cuda.current_device()}"
    return DistContext(group, rank, world, device)


# ---------------------------------------------------------------------------------- small collectives
def all_gather_json(ctx: DistContext, obj) -> List[object]:
    """Every rank's JSON-able ``obj``, in rank order (bytes through two all_gathers; no pickle)."""
    import torch
    import torch.distributed as dist

    data = np.frombuffer(json.dumps(obj, sort_keys=True, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    size = torch.tensor([data.size], dtype=torch.int64, device=ctx.device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size, group=ctx.group)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros(max(longest, 1), dtype=torch.uint8, device=ctx.device)
    padded[: data.size] = torch.from_numpy(data.copy()).to(ctx.device)
    gathered = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, padded, group=ctx.group)
    return [json.loads(bytes(g.cpu().numpy()[: int(s.item())]).decode("utf-8")) for g, s in zip(gathered, sizes)]


def check_same_settings(ctx: DistContext, settings: Optional[dict], what: str = "run",
                        error: Optional[BaseException] = None) -> None:
    """Collective: raise on every rank unless all ranks have equal ``settings`` and no ``error``.

    A rank that passes ``error`` (it failed while preparing) re-raises it; the others raise
    ``RuntimeError`` naming it. Differing settings give every rank the same ``ValueError``.
    """
    report = {"error": None if error is None else f"{type(error).__name__}: {error}", "settings": settings}
    everyone = all_gather_json(ctx, report)
    if error is not None:
        raise error
    failed = [(r, e["error"]) for r, e in enumerate(everyone) if e["error"] is not None]
    if failed:
        raise RuntimeError(f"distributed {what} stopped before starting: "
                           + "; ".join(f"rank {r} failed ({m})" for r, m in failed))
    settings_of = [e["settings"] or {} for e in everyone]
    diffs = []
    for key in sorted({k for s in settings_of for k in s}):
        values = [s.get(key) for s in settings_of]
        if any(v != values[0] for v in values):
            diffs.append(f"{key}: " + ", ".join(f"rank {r} has {v!r}" for r, v in enumerate(values)))
    if diffs:
        raise ValueError(f"the ranks of this distributed {what} disagree on their settings ({'; '.join(diffs)})")


def agree_on_success(ctx: DistContext, error: Optional[BaseException]) -> None:
    """Collective: every rank learns whether any rank failed. The failed rank re-raises its own
    exception; the others raise ``RuntimeError`` naming the failed rank(s) and their errors."""
    reports = all_gather_json(ctx, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, msg) for r, msg in enumerate(reports) if msg is not None]
    if failed:
        raise RuntimeError("distributed run stopped: " + "; ".join(f"rank {r} failed ({m})" for r, m in failed))


@contextmanager
def ranks_agree(ctx: Optional[DistContext]):
    """``with ranks_agree(ctx): <this rank's work>``: with ``ctx`` None, nothing changes (exceptions
    propagate); under torch.distributed the block's exception is held and every rank then learns
    whether any rank failed (:func:`agree_on_success`), so no rank is left waiting in a collective."""
    if ctx is None:
        yield
        return
    error = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised by agree_on_success on this rank
        error = exc
    agree_on_success(ctx, error)


# ---------------------------------------------------------------------------------- state reduction
def reduce_accumulator(accumulator, ctx: DistContext, dst: Optional[int] = None):
    """The accumulator of every rank's images (a new object; ``accumulator`` is unchanged).

    Collective: every rank of ``ctx`` must call it. With ``dst`` (a rank of the group), only that
    rank gets the result and the others get None (reductions go to ``dst`` only).
    """
    import torch
    import torch.distributed as dist

    from .accumulator import Accumulator

    if dst is not None and not (isinstance(dst, int) and 0 <= dst < ctx.world_size):
        raise ValueError(f"dst must be a rank of the group (0..{ctx.world_size - 1}), got {dst!r}")
    settings = {"distribution_name": accumulator.distribution_name,
                "feature_extractor_name": accumulator.feature_extractor_name,
                "neurons_list": dict(accumulator.neurons_list), "layouts": dict(accumulator.layouts)}
    if accumulator.kind == HISTOGRAM:
        settings["activation_ranges_sha256"] = accumulator.activation_ranges.checksum()
    check_same_settings(ctx, settings, "DNA")
    metas = all_gather_json(ctx, accumulator.meta)
    state = accumulator.state_dict()
    mine = dst is None or ctx.rank == dst
    dev = ctx.device

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    def reduced(a, op):
        t = tensor(a)
        if dst is None:
            dist.all_reduce(t, op=op, group=ctx.group)
        else:
            dist.reduce(t, dst=_global_rank(ctx, dst), op=op, group=ctx.group)
        return t.cpu().numpy()

    def gathered(a) -> List[np.ndarray]:
        t = tensor(a)
        if dst is None:
            out = [torch.empty_like(t) for _ in range(ctx.world_size)]
            dist.all_gather(out, t, group=ctx.group)
        else:
            out = [torch.empty_like(t) for _ in range(ctx.world_size)] if mine else None
            dist.gather(t, out, dst=_global_rank(ctx, dst), group=ctx.group)
            if not mine:
                return []
        return [o.cpu().numpy() for o in out]

    kind = accumulator.kind
    if kind in (GAUSSIAN, LAYER_GAUSSIAN):
        # Each rank's (count, mean, M2, NaN counts) per layer, merged in rank order (Chan's rule).
        per_rank = [dict(state, layers={}) for _ in range(ctx.world_size)]
        for layer, entry in state["layers"].items():
            c = accumulator.neurons_list[layer]
            packed = np.concatenate([[float(entry["count"])], entry["mean"], entry["m2"].ravel(),
                                     entry["nan_counts"].astype(np.float64)])  # counts < 2^53: exact
            for r, vec in enumerate(gathered(packed)):
                m2_len = entry["m2"].size
                per_rank[r]["layers"][layer] = {
                    "count": int(vec[0]), "mean": vec[1:1 + c].copy(),
                    "m2": vec[1 + c:1 + c + m2_len].reshape(entry["m2"].shape).copy(),
                    "nan_counts": vec[1 + c + m2_len:].astype(np.int64)}
        if not mine:
            return None
        result = None
        for r, st in enumerate(per_rank):
            st["num_images"] = next(iter(st["layers"].values()))["count"]
            acc_r = Accumulator.from_state_dict(st)
            result = acc_r if result is None else result.merge(acc_r)
    else:
        total = int(reduced(np.array([state["num_images"]], dtype=np.int64), dist.ReduceOp.SUM)[0])
        out = dict(state, layers={}, num_images=total)
        for layer, entry in state["layers"].items():
            new = dict(entry)
            new["nan_counts"] = reduced(entry["nan_counts"], dist.ReduceOp.SUM)
            if kind == HISTOGRAM:
                new["counts"] = reduced(entry["counts"], dist.ReduceOp.SUM)
            elif kind == ACTIVATION_RANGES:
                # A neuron with no value has NaN (min, max): MIN/MAX of NaN are not portable across
                # backends, so no-value is sent as (+inf, -inf) and recognised after as min > max.
                lo = reduced(np.where(np.isnan(entry["mins"]), np.inf, entry["mins"]), dist.ReduceOp.MIN)
                hi = reduced(np.where(np.isnan(entry["maxs"]), -np.inf, entry["maxs"]), dist.ReduceOp.MAX)
                empty = lo > hi
                new["mins"], new["maxs"] = np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)
            out["layers"][layer] = new
        if not mine:
            return None
        result = Accumulator.from_state_dict(out)
    meta = metas[0]
    for other in metas[1:]:
        from .dna import merge_meta

        meta = merge_meta(meta, other)
    result.meta = meta
    result.data_settings, result.extraction_settings = accumulator.data_settings, accumulator.extraction_settings
    return result


# ---------------------------------------------------------------------------------- stability curves
_CHUNK = 1 << 24  # table elements per collective (128 MiB as int64): bounds the extra memory of a reduction


def subset_curve_over_ranks(acc, reference, ctx: DistContext, dst: Optional[int] = None):
    """Collective: the stability curve of every rank's images (``SubsetAccumulator.compute`` under
    torch.distributed).

    The ranks first agree on the accumulator's settings and the reference (every rank raises the
    same error otherwise), then every rank's state is summed on one rank (``dst``, default 0):
    histogram tables (as int64 chunks: exact), table image and NaN counts, and the per-image mean
    vectors (each image's row is non-zero on the one rank that added it, so the sum is that row,
    exactly). That rank computes the curve; it is sent to the others (JSON: floats round-trip
    exactly) unless ``dst`` is given. An image added on no rank or on two ranks is an error on every
    rank; an error while computing on the summing rank is raised there and reported on the others.
    """
    from .stability import StabilityCurve, match_references

    if dst is not None and not (isinstance(dst, int) and not isinstance(dst, bool) and 0 <= dst < ctx.world_size):
        raise ValueError(f"dst must be a rank of the group (0..{ctx.world_size - 1}), got {dst!r}")
    root = 0 if dst is None else dst
    error = refs = None
    try:
        if acc._reduced_on is not None:
            raise ValueError("this SubsetAccumulator was already reduced over ranks by an earlier compute(); on the "
                             "rank that computed the curve, call compute(reference, distributed=False)")
        refs = match_references(reference, acc.distributions)
        for name, ref in refs.items():
            acc._check_reference(name, ref)
    except Exception as exc:  # noqa: BLE001 - reported to every rank by the settings check
        error = exc
    check_same_settings(ctx, acc.settings(), "stability curve", error=error)
    error = _reduce_subset_state(acc, ctx, root)
    curve = payload = None
    if ctx.rank == root:
        if error is None:
            try:
                curve = acc.compute(refs, distributed=False)
            except Exception as exc:  # noqa: BLE001 - re-raised below, reported to the other ranks
                error = exc
        if error is not None:
            payload = {"error": f"{type(error).__name__}: {error}"}
        elif dst is None:
            payload = {"metrics": curve.metrics, "values": {m: curve.values[m].tolist() for m in curve.metrics},
                       "full": curve.full}
        else:
            payload = {}
    got = all_gather_json(ctx, payload)[root]
    if error is not None:
        raise error
    if "error" in got:
        raise RuntimeError(f"distributed stability curve stopped: rank {root} failed ({got['error']})")
    if curve is not None or dst is not None:
        return curve
    values = {m: np.array(got["values"][m], dtype=np.float64).reshape(acc.repeats, len(acc.sizes))
              for m in got["metrics"]}
    return StabilityCurve(acc.sizes, values, got["full"], acc.permutations, acc.n_images, acc.seed,
                          list(acc.distributions), list(acc.neurons_list))


def _reduce_subset_state(acc, ctx: DistContext, root: int) -> Optional[BaseException]:
    """Sum every rank's SubsetAccumulator state into ``acc`` on rank ``root`` (the others' states are
    left as they were). Raises on every rank when an image was added on no rank or on two; returns
    (on ``root``) an error for counts beyond 32 bits instead of raising, so no rank is left waiting."""
    import torch
    import torch.distributed as dist

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(ctx.device)

    acc._flush()  # buffered activations of small-map layers into the tables
    seen = tensor(acc._seen.astype(np.int64))
    dist.all_reduce(seen, op=dist.ReduceOp.SUM, group=ctx.group)
    seen = seen.cpu().numpy()
    twice, missing = np.flatnonzero(seen > 1), np.flatnonzero(seen == 0)
    if twice.size:
        raise ValueError(f"stability: {twice.size} image(s) (e.g. image {int(twice[0])}) were added on more than one "
                         "rank; each image must be added once, on one rank")
    if missing.size:
        raise ValueError(f"stability: {missing.size} of {acc.n_images} images (e.g. image {int(missing[0])}) were not "
                         "added on any rank; every image must be added once")
    mine = ctx.rank == root
    acc._reduced_on = "here" if mine else root
    dst = _global_rank(ctx, root)

    def summed(a):
        t = tensor(a)
        dist.reduce(t, dst=dst, op=dist.ReduceOp.SUM, group=ctx.group)
        return t.cpu().numpy() if mine else None

    error = None
    if acc._hists:
        # one table layout on every rank: the widths follow from the largest samples per image any rank saw
        mine_samples = [acc._tables[l].samples if l in acc._tables else 0 for l in acc.neurons_list]
        samples = tensor(np.array(mine_samples, dtype=np.int64))
        dist.all_reduce(samples, op=dist.ReduceOp.MAX, group=ctx.group)
        acc._ensure_tables(dict(zip(acc.neurons_list, samples.cpu().numpy().tolist())))
    for layer in acc.neurons_list:
        if acc._hists:
            images = summed(acc._table_images[layer])
            nans = summed(acc._table_nans[layer])
            tables = acc._tables[layer]
            for part, limit in ((tables.wide, WIDE_MAX), (tables.narrow, NARROW_MAX)):
                flat = part.reshape(-1)
                for s in range(0, flat.size, _CHUNK):
                    total = summed(flat[s:s + _CHUNK].astype(np.int64))
                    if not mine:
                        continue
                    if total.size and int(total.max()) > limit and error is None:  # a 16-bit bound cannot break
                        error = OverflowError(f"stability: layer '{layer}': a histogram count of the summed ranks "
                                              f"exceeds {limit}; use fewer images per subset size")
                    flat[s:s + _CHUNK] = total if error is None else 0
            if mine:
                acc._table_images[layer][:] = images
                acc._table_nans[layer][:] = nans
        if acc._means:
            means = summed(np.where(acc._seen[:, None], acc._means[layer], 0.0))
            if mine:
                acc._means[layer][:] = means
    if mine:
        acc._seen[:] = True
    return error


def _global_rank(ctx: DistContext, group_rank: int) -> int:
    import torch.distributed as dist

    if ctx.group is None or ctx.group is dist.group.WORLD:
        return group_rank
    return dist.get_global_rank(ctx.group, group_rank)


__all__ = ["DistContext", "context", "shard_range", "all_gather_json", "check_same_settings", "agree_on_success",
           "ranks_agree",
           "reduce_accumulator", "subset_curve_over_ranks"]
