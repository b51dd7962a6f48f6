"""Decoding, cropping and resizing a source's images into float32 batches on a thread pool."""
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .crop import check_crop_mode, crop_to_square
from .errors import ImageReadError, SkippedImageWarning, describe_cause
from .readers import ImageSource, open_source
from .resize import check_resize_mode, check_size, jpeg_draft_request, resize_image
from .rgb import to_rgb

# Batches being decoded while the consumer holds one: bounds memory to about two batch buffers.
_BATCHES_IN_FLIGHT = 2


@dataclass
class Batch:
    """Images ``indices`` (positions in the source, int64) of one batch, in source order.

    ``images``: ``(n, 3, H, W)`` float32 on the 0..255 scale, the first ``n`` rows of the buffer
    that ``allocate`` returned. ``skipped``: ``(name, reason)`` of the images of this stretch of the
    source that could not be read (their rows are not in ``images``).
    """

    indices: np.ndarray
    names: List[str]
    images: np.ndarray
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    end: Optional[int] = None  # every source position before this one has been read or skipped

    def __len__(self):
        return len(self.indices)



def split_unreadable(results, strict: bool, prefix: str = ""):
    """``(rows that decoded, [(name, reason), ...] of those that did not)`` from per-image decode results
    (None or an ImageReadError each); each unreadable image warns once, or raises when ``strict``."""
    kept, unreadable = [], []
    for row, err in enumerate(results):
        if err is None:
            kept.append(row)
            continue
        if strict:
            raise err
        name, reason = f"{prefix}{err.name}", describe_cause(err.cause)
        warnings.warn(f"skipping unreadable image {name}: {reason}", SkippedImageWarning, stacklevel=3)
        unreadable.append((name, reason))
    return kept, unreadable

def load_image_into(source, index, out, size, crop_to_square_mode="none", resize_mode="clean", seed=0):
    """Read, convert, crop and resize image ``index`` of ``source`` into ``out`` ((3, H, W) float32).

    Returns ``None`` on success, or the :class:`ImageReadError` when the image cannot be decoded
    (errors in cropping or resizing are bugs and propagate).
    """
    draft = jpeg_draft_request(size, crop_to_square_mode) if resize_mode == "fast" else None
    try:
        image = source.read(index, draft)
        try:
            rgb = to_rgb(image)
        except Exception as exc:  # an unsupported mode or value range in this one file
            raise ImageReadError(source.names[index], exc) from exc
    except ImageReadError as err:
        return err
    rgb = crop_to_square(rgb, crop_to_square_mode, seed, index)
    resize_image(rgb, size, resize_mode, out=out)
    return None


def _check_buffer(buf, shape):
    if not isinstance(buf, np.ndarray) or buf.dtype != np.float32 or buf.shape != shape:
        raise TypeError(
            f"allocate({shape}) must return a float32 NumPy array of that shape, got "
            f"{getattr(buf, 'dtype', type(buf).__name__)} {getattr(buf, 'shape', '')}"
        )
    if not buf.flags.writeable:
        raise TypeError(f"allocate({shape}) returned a read-only array")
    return buf


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def iter_batches(
    source,
    size,
    batch_size,
    num_workers=4,
    crop_to_square="none",
    resize_mode="clean",
    seed=0,
    strict=False,
    allocate=None,
    start=0,
    stop=None,
):
    """Iterate over ``source`` in batches of ``(n, 3, H, W)`` float32 images (0..255), in order.

    ``source``: an :class:`ImageSource` or anything :func:`open_source` accepts. ``size``:
    ``(H, W)``. ``num_workers`` threads (0: decode in the calling thread) decode, convert to RGB,
    crop (``"none"``, ``"center"`` or ``"random"``; a random crop is seeded by ``(seed, index)``)
    and resize (``"clean"`` or ``"fast"``, see :mod:`vdna.sources.resize`) each image straight into
    its row of the batch buffer. Results do not depend on ``num_workers`` or ``batch_size``.

    ``allocate(shape)`` provides each batch's float32 buffer (default ``np.empty``); every batch gets
    a new one and is never written after it is yielded. About two batches are decoded ahead.

    An unreadable image is skipped: a :class:`SkippedImageWarning` names it and the next batch lists
    it in ``Batch.skipped``; batches may then be shorter than ``batch_size``. A batch whose images
    were all skipped is not yielded (its ``skipped`` go to the next batch), except that the last
    batch may be empty to report them. ``strict=True`` raises the :class:`ImageReadError` instead.
    ``ValueError`` if no image at all could be read. Arguments and the source are checked when this
    function is called, before any image is decoded.

    ``start`` / ``stop``: read only source positions ``start`` .. ``stop - 1`` (a rank's share or a
    resumed run's remainder); batches start at ``start``, and positions (hence random crops) are
    those of the whole source. A part of the source with no readable image is not an error (the
    last batch reports its skipped images).
    """
    size = check_size(size)
    batch_size = _check_count(batch_size, "batch_size", 1)
    num_workers = _check_count(num_workers, "num_workers", 0)
    check_crop_mode(crop_to_square)
    check_resize_mode(resize_mode)
    seed = _check_count(seed, "seed", 0)
    if allocate is None:
        allocate = lambda shape: np.empty(shape, dtype=np.float32)  # noqa: E731
    if not isinstance(source, ImageSource):
        source = open_source(source)
    start = _check_count(start, "start", 0)
    stop = len(source) if stop is None else _check_count(stop, "stop", 0)
    if not start <= stop <= len(source):
        raise ValueError(f"need 0 <= start <= stop <= {len(source)} (the source's size), got start={start}, stop={stop}")
    return _generate_batches(
        source, size, batch_size, num_workers, crop_to_square, resize_mode, seed, bool(strict), allocate, start, stop
    )


def _generate_batches(source, size, batch_size, num_workers, crop, resize_mode, seed, strict, allocate, first=0,
                      end=None):
    end = len(source) if end is None else end
    count = end - first
    height, width = size
    starts = iter(range(first, end, batch_size))
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix="vdna-images") if num_workers > 0 else None
    pending = deque()

    def load(index, out):
        return load_image_into(source, index, out, size, crop, resize_mode, seed)

    def submit_next():
        start = next(starts, None)
        if start is None:
            return
        stop = min(start + batch_size, end)
        shape = (stop - start, 3, height, width)
        buf = _check_buffer(allocate(shape), shape)
        if pool is None:
            work = None  # decoded when collected, in this thread
        else:
            work = [pool.submit(load, i, buf[i - start]) for i in range(start, stop)]
        pending.append((start, stop, buf, work))

    carried = []  # skipped images of batches that had nothing to yield
    read_total = 0
    last_buf = None
    try:
        for _ in range(_BATCHES_IN_FLIGHT):
            submit_next()
        while pending:
            start, stop, buf, work = pending.popleft()
            if work is None:
                results = [load(i, buf[i - start]) for i in range(start, stop)]
            else:
                results = [w.result() for w in work]
            last_buf = buf
            kept, unreadable = split_unreadable(results, strict)
            carried.extend(unreadable)
            if not kept:
                submit_next()
                continue
            for dst, row in enumerate(kept):  # close the gaps left by skipped images
                if dst != row:
                    buf[dst] = buf[row]
            read_total += len(kept)
            batch = Batch(
                indices=np.asarray([start + row for row in kept], dtype=np.int64),
                names=[source.names[start + row] for row in kept],
                images=buf[: len(kept)],
                skipped=carried,
                end=stop,
            )
            carried = []
            yield batch
            submit_next()
        if read_total == 0 and count > 0 and count == len(source):  # a part (a rank's share) may have none
            first_name, first_reason = carried[0]
            raise ValueError(
                f"none of the {count} images could be read (first failure: {first_name}: {first_reason})"
            )
        if carried:
            yield Batch(np.zeros(0, dtype=np.int64), [], last_buf[:0], carried, end=end)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
