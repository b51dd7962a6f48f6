"""Tar shards at scale: brace ranges and a streaming reader whose memory does not grow with the dataset.

``"data/shard-{000000..012345}.tar"`` names 12,346 shards (brace ranges as WebDataset writes them;
zero padding is kept; ``{a,b,c}`` alternatives too; several braces expand as a product).
:class:`TarShards` holds only the shard paths: :func:`iter_shard_batches` reads each shard once,
front to back, decoding its image members on a thread pool, so no member list of the whole dataset is
ever built (memory: one shard's member headers and about two batches). Batches never span two shards,
so a run's batches depend only on its shards: a rank (or a resumed run) that starts at a shard
boundary batches its images exactly as a run over all shards does.

A random square crop is seeded by ``(seed, crc32(member name))`` (a stream has no global position).
"""
import io
import itertools
import os
import re
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .batching import Batch, _check_buffer, _check_count, split_unreadable
from .crop import check_crop_mode, crop_to_square
from .errors import ImageReadError
from .listing import has_image_extension
from .readers import _decode
from .resize import check_resize_mode, check_size, jpeg_draft_request, resize_image
from .rgb import to_rgb

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
MAX_EXPANSION = 10_000_000


def has_braces(text) -> bool:
    """Whether ``text`` holds a ``{a..b}`` range or ``{x,y}`` alternatives."""
    return any(_RANGE.match(m.group(1)) or "," in m.group(1) for m in _BRACE.finditer(str(text)))


def expand_braces(pattern: str) -> list:
    """Expand ``{0..9}`` / ``{000..120}`` ranges (zero padding kept, width of the start bound) and
    ``{a,b}`` alternatives, in order; several braces give their product (the last varies fastest)."""
    pattern = str(pattern)
    parts, choices, pos = [], [], 0
    for m in _BRACE.finditer(pattern):
        body = m.group(1)
        r = _RANGE.match(body)
        if r:
            lo, hi = int(r.group(1)), int(r.group(2))
            if hi < lo:
                raise ValueError(f"brace range {{{body}}} in {pattern!r} goes down ({lo} > {hi})")
            width = len(r.group(1)) if r.group(1).lstrip("-").startswith("0") else 0
            options = range(lo, hi + 1)
            options = [f"{v:0{width}d}" for v in options] if width else [str(v) for v in options]
        elif "," in body:
            options = body.split(",")
        else:
            continue
        parts.append(pattern[pos:m.start()])
        choices.append(options)
        pos = m.end()
    parts.append(pattern[pos:])
    total = int(np.prod([len(c) for c in choices], dtype=np.float64)) if choices else 1
    if total > MAX_EXPANSION:
        raise ValueError(f"{pattern!r} expands to {total} paths (more than {MAX_EXPANSION})")
    out = []
    for combo in itertools.product(*choices):
        out.append("".join(p + c for p, c in zip(parts, combo)) + parts[-1])
    return out


class TarShards:
    """An ordered list of uncompressed tar shards, read as a stream (see the module docstring).

    ``spec``: a brace pattern string, or a list of shard paths. Every shard must exist (checked here).
    """

    def __init__(self, spec):
        if isinstance(spec, (str, os.PathLike)):
            self._description = os.fspath(spec)
            paths = expand_braces(self._description)
        else:
            paths = [os.fspath(p) for p in spec]
            self._description = paths
        if not paths:
            raise ValueError("no tar shards given")
        for p in paths:
            if not p.endswith(".tar"):
                raise ValueError(f"shard {p!r} is not a .tar file (tar shards must be uncompressed .tar files)")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(paths)} tar shard(s) do not exist, first: {missing[0]!r}")
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def describe(self):
        return self._description

    def __repr__(self):
        return f"TarShards({len(self.paths)} shards from {self._description!r})"


def iter_tar_members(shard):
    """``(name, bytes)`` of the image members of one shard, front to back (a streaming read)."""
    try:
        with tarfile.open(shard, mode="r|") as archive:
            for member in archive:
                if not member.isreg() or not has_image_extension(member.name):
                    continue
                if any(part.startswith(".") or part == "__MACOSX" for part in member.name.split("/")):
                    continue
                f = archive.extractfile(member)
                yield member.name, f.read()
    except tarfile.ReadError as exc:
        raise ValueError(f"{shard} is not a readable uncompressed tar archive ({exc})") from exc


def _load_member(name, data, out, size, crop, resize_mode, seed):
    draft = jpeg_draft_request(size, crop) if resize_mode == "fast" else None
    try:
        rgb = to_rgb(_decode(io.BytesIO(data), draft))
    except Exception as exc:  # this one member's failure
        return ImageReadError(name, exc)
    rgb = crop_to_square(rgb, crop, seed, zlib.crc32(name.encode("utf-8", "surrogatepass")))
    resize_image(rgb, size, resize_mode, out=out)
    return None


def iter_shard_batches(shards, size, batch_size, num_workers=4, crop_to_square="none", resize_mode="clean",
                       seed=0, strict=False, allocate=None, start=0, stop=None):
    """Batches (:class:`vdna.sources.Batch`) of the image members of ``shards[start:stop]``.

    ``Batch.names`` are ``"<shard>:<member>"``; ``Batch.indices`` count images from the first shard
    read; the last batch of each shard has ``end`` = that shard's index + 1 (a shard with no readable
    image gives an empty batch), others ``end=None``. Unreadable members are skipped and reported
    as with :func:`vdna.sources.iter_batches` (``strict=True`` raises).
    """
    if not isinstance(shards, TarShards):
        shards = TarShards(shards)
    size = check_size(size)
    batch_size = _check_count(batch_size, "batch_size", 1)
    num_workers = _check_count(num_workers, "num_workers", 0)
    check_crop_mode(crop_to_square)
    check_resize_mode(resize_mode)
    seed = _check_count(seed, "seed", 0)
    stop = len(shards) if stop is None else stop
    if not 0 <= start <= stop <= len(shards):
        raise ValueError(f"need 0 <= start <= stop <= {len(shards)} shards, got {start}, {stop}")
    if allocate is None:
        allocate = lambda shape: np.empty(shape, dtype=np.float32)  # noqa: E731
    return _stream(shards, size, batch_size, num_workers, crop_to_square, resize_mode, seed, bool(strict), allocate,
                   start, stop)


def _stream(shards, size, batch_size, num_workers, crop, resize_mode, seed, strict, allocate, start, stop):
    height, width = size
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix="vdna-shards") if num_workers > 0 else None
    counter = 0

    def decode(members):
        shape = (len(members), 3, height, width)
        buf = _check_buffer(allocate(shape), shape)
        args = [(n, d, buf[i], size, crop, resize_mode, seed) for i, (n, d) in enumerate(members)]
        results = list(pool.map(lambda a: _load_member(*a), args)) if pool else [_load_member(*a) for a in args]
        return buf, results

    try:
        for k in range(start, stop):
            shard = shards.paths[k]
            members = iter_tar_members(shard)
            pending = list(itertools.islice(members, batch_size))
            skipped = []
            while True:
                nxt = list(itertools.islice(members, batch_size)) if pending else []
                last = not nxt
                kept_rows, buf = [], None
                if pending:
                    buf, results = decode(pending)
                    kept_rows, unreadable = split_unreadable(results, strict, prefix=f"{shard}:")
                    skipped.extend(unreadable)
                    for dst, row in enumerate(kept_rows):
                        if dst != row:
                            buf[dst] = buf[row]
                if kept_rows or last:
                    if buf is None:
                        buf = _check_buffer(allocate((0, 3, height, width)), (0, 3, height, width))
                    yield Batch(indices=np.arange(counter, counter + len(kept_rows), dtype=np.int64),
                                names=[f"{shard}:{pending[r][0]}" for r in kept_rows], images=buf[:len(kept_rows)],
                                skipped=skipped, end=k + 1 if last else None)
                    counter += len(kept_rows)
                    skipped = []
                if last:
                    break
                pending = nxt
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["TarShards", "expand_braces", "has_braces", "iter_shard_batches", "iter_tar_members"]
