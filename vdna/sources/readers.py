"""Image sources: folders, files, text lists, zip archives, tar shards and in-memory arrays.

:func:`open_source` turns whatever the user passed as ``source`` into an :class:`ImageSource`, an
indexable, thread-safe list of images that checks everything it can (paths, archive listings,
array shapes and values) before any image is decoded. As in the reference package, EXIF
orientation tags are not applied and multi-frame files give their first frame.
"""
import io
import os
import warnings

import numpy as np
from PIL import Image

from .errors import ImageReadError, SkippedImageWarning
from .listing import (
    IMAGE_EXTENSIONS,
    expand_glob,
    extension,
    has_image_extension,
    is_glob_pattern,
    list_folder,
    list_tar_members,
    list_zip_members,
    non_regular_kind,
    open_zip,
    read_path_list,
)
from .rgb import array_to_rgb


class ImageSource:
    """An ordered collection of images that several threads may read at once.

    ``names[i]`` is a stable id of image ``i``: its path, ``"<archive>:<member>"`` for zip and tar
    members, or ``"array[k]"`` (``k`` its position in the user's list). ``read(i)`` decodes it.
    ``skipped``: ``(name, reason)`` of the entries that were found while listing but are not read
    (FIFOs and other non-regular files in folders, archive members with ".." in their path).
    """

    skipped = ()

    def __init__(self, names, description):
        self.names = list(names)
        self._description = description

    def __len__(self):
        return len(self.names)

    def __repr__(self):
        return f"{type(self).__name__}({len(self)} images from {self._description!r})"

    def describe(self):
        """The source as the user gave it (a path string or a list of path strings), for the record."""
        return self._description

    def read(self, i, draft=None):
        """Decode image ``i``: a fully loaded PIL image (any mode) or the user's NumPy array.

        ``draft``: optional ``(width, height)`` passed to ``Image.draft`` so that JPEG files are
        decoded at a reduced scale no smaller than that ("fast" resizing only). Raises
        :class:`ImageReadError` naming the image when it cannot be read or decoded.
        """
        if not 0 <= i < len(self.names):
            raise IndexError(f"image index {i} out of range for a source of {len(self.names)} images")
        try:
            return self._read(i, draft)
        except ImageReadError:
            raise
        except Exception as exc:  # any decoder failure is this one image's failure
            raise ImageReadError(self.names[i], exc) from exc

    def select(self, positions):
        """A source holding the images at ``positions`` (in that order)."""
        positions = [int(p) for p in positions]
        return self._select(positions, [self.names[p] for p in positions])

    def close(self):
        """Release open archives (the source cannot be read afterwards)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _read(self, i, draft):
        raise NotImplementedError

    def _select(self, positions, names):
        raise NotImplementedError


def _decode(fp, draft):
    img = Image.open(fp)
    if draft is not None:
        img.draft("RGB", tuple(draft))  # a no-op for formats other than JPEG
    img.load()
    return img


class FileImageSource(ImageSource):
    """Image files on disk."""

    def __init__(self, paths, description):
        super().__init__([os.fspath(p) for p in paths], description)

    def _read(self, i, draft):
        kind = non_regular_kind(self.names[i])
        if kind is not None:  # opening a FIFO would block for ever
            raise OSError(f"{kind}, not an image file")
        with open(self.names[i], "rb") as f:
            return _decode(f, draft)

    def _select(self, positions, names):
        return FileImageSource(names, self._description)


class ZipImageSource(ImageSource):
    """Members of a zip archive, read directly from it (nothing is extracted)."""

    def __init__(self, zip_path, archive, infos, description):
        super().__init__([f"{zip_path}:{info.filename}" for info in infos], description)
        self._zip_path = zip_path
        self._archive = archive  # ZipFile reads of different members may run in parallel threads
        self._infos = list(infos)

    def _read(self, i, draft):
        return _decode(io.BytesIO(self._archive.read(self._infos[i])), draft)

    def _select(self, positions, names):
        return ZipImageSource(self._zip_path, self._archive, [self._infos[p] for p in positions], self._description)

    def close(self):
        self._archive.close()


class TarImageSource(ImageSource):
    """Image members of uncompressed tar shards (WebDataset style), read at their byte offsets."""

    def __init__(self, entries, description):
        # entries: (shard path, member name, data offset, size)
        self._entries = list(entries)
        super().__init__([f"{shard}:{member}" for shard, member, _, _ in self._entries], description)

    def _read(self, i, draft):
        shard, _, offset, size = self._entries[i]
        with open(shard, "rb") as f:  # one handle per read: no shared file position between threads
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise OSError(f"tar member truncated: expected {size} bytes, got {len(data)}")
        return _decode(io.BytesIO(data), draft)

    def _select(self, positions, names):
        return TarImageSource([self._entries[p] for p in positions], self._description)


class ArrayImageSource(ImageSource):
    """In-memory NumPy images (see :func:`vdna.sources.array_to_rgb` for the accepted kinds).

    Every array is validated when the source is made; ``read`` returns the user's array itself.
    """

    def __init__(self, arrays, description=None, ids=None, validate=True):
        arrays = list(arrays)
        ids = list(range(len(arrays))) if ids is None else list(ids)
        if validate:
            for k, arr in zip(ids, arrays):
                array_to_rgb(arr, index=k)
        super().__init__([f"array[{k}]" for k in ids], description or f"list of {len(arrays)} NumPy arrays")
        self._arrays = arrays
        self._ids = ids

    def _read(self, i, draft):
        return self._arrays[i]

    def _select(self, positions, names):
        return ArrayImageSource(
            [self._arrays[p] for p in positions], self._description, [self._ids[p] for p in positions], validate=False
        )


_EXTENSION_LIST = ", ".join(sorted(IMAGE_EXTENSIONS))


def _tar_source(shards, description):
    entries, skipped = [], []
    for shard in shards:
        if not os.path.isfile(shard):
            raise FileNotFoundError(f"tar shard {shard!r} does not exist")
        entries.extend((shard, name, offset, size) for name, offset, size in list_tar_members(shard, skipped))
    if not entries:
        raise ValueError(f"no images (extensions {_EXTENSION_LIST}) in the tar shard(s) {description!r}"
                         + _skipped_note(skipped))
    return _with_skipped(TarImageSource(entries, description), skipped)


def _skipped_note(skipped):
    return f" ({len(skipped)} entries not read, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""


def _with_skipped(source, skipped):
    if skipped:
        source.skipped = list(skipped)
    return source


def _path_list_source(paths, description):
    """Images or tar shards named in a list (kept in the given order)."""
    paths = [os.fspath(p) for p in paths]
    if all(extension(p) == "tar" for p in paths):
        return _tar_source(paths, description)
    for k, p in enumerate(paths):
        if not has_image_extension(p):
            raise ValueError(f"source item [{k}] {p!r} is not an image file (extensions: {_EXTENSION_LIST})")
        kind = non_regular_kind(p)
        if kind is not None:
            raise ValueError(f"source item [{k}] {p!r} is {kind}, not an image file")
        if not os.path.isfile(p):
            raise FileNotFoundError(f"source item [{k}]: image file {p!r} does not exist")
    return FileImageSource(paths, description)


def _file_source(path):
    ext = extension(path)
    if ext == "txt":
        paths = read_path_list(path)
        if not paths:
            raise ValueError(f"the image list {path!r} is empty")
        return FileImageSource(paths, path)
    if ext == "zip":
        archive = open_zip(path)
        skipped = []
        infos = list_zip_members(archive, skipped)
        if not infos:
            archive.close()
            raise ValueError(f"no images (extensions {_EXTENSION_LIST}) in the zip archive {path!r}"
                             + _skipped_note(skipped))
        return _with_skipped(ZipImageSource(path, archive, infos, path), skipped)
    if ext == "tar":
        return _tar_source([path], path)
    if ext in IMAGE_EXTENSIONS:
        return FileImageSource([path], path)
    raise ValueError(
        f"unsupported source file {path!r}: expected a folder, an image ({_EXTENSION_LIST}), "
        "a .txt list of paths, a .zip archive or .tar shards"
    )


def _full_source(source):
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            skipped = []
            paths = list_folder(path, skipped)
            if not paths:
                raise ValueError(f"no images (extensions {_EXTENSION_LIST}) found under the folder {path!r}"
                                 + _skipped_note(skipped))
            return _with_skipped(FileImageSource(paths, path), skipped)
        if os.path.isfile(path):
            return _file_source(path)
        kind = non_regular_kind(path)
        if kind is not None:
            raise ValueError(f"image source {path!r} is {kind}, not an image file, folder, list or archive")
        if is_glob_pattern(path):
            matches = expand_glob(path)
            return _path_list_source(matches, path)
        raise FileNotFoundError(f"image source {path!r} does not exist")
    if isinstance(source, np.ndarray):
        if source.ndim == 4:
            return ArrayImageSource(list(source))
        raise ValueError(
            f"a single array of shape {source.shape} is ambiguous: pass a list of (H, W[, C]) arrays "
            "or one (N, H, W, C) array"
        )
    if isinstance(source, (list, tuple)):
        if not source:
            raise ValueError("the image source is an empty list")
        if all(isinstance(s, np.ndarray) for s in source):
            return ArrayImageSource(source)
        for k, s in enumerate(source):
            if not isinstance(s, (str, os.PathLike)):
                raise TypeError(
                    f"source item [{k}] is a {type(s).__name__}: a list source must hold only paths "
                    "or only NumPy arrays"
                )
        return _path_list_source(source, [os.fspath(s) for s in source])
    raise TypeError(
        f"unsupported image source of type {type(source).__name__}: expected a path, a glob pattern, "
        "a list of paths or a list of NumPy arrays"
    )


def _check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def select_positions(count, num_images=-1, shuffle=False, seed=0):
    """Which of ``count`` images to use, in order: all or the first ``num_images``, of the sorted
    order or (``shuffle``) of a permutation drawn by ``numpy.random.Generator(PCG64(seed))``."""
    if num_images is None:
        num_images = -1
    num_images = _check_int(num_images, "num_images")
    seed = _check_int(seed, "seed")
    if num_images == 0:
        raise ValueError("num_images must be positive, or -1 for all images")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    positions = np.arange(count, dtype=np.int64)
    if shuffle:
        positions = np.random.Generator(np.random.PCG64(seed)).permutation(count)
    if num_images > 0:
        positions = positions[:num_images]
    return positions


def open_source(source, num_images=-1, shuffle=False, seed=0):
    """Open an image source; everything is listed and checked before any image is decoded.

    ``source`` may be:

    * a folder (searched recursively; hidden files and folders skipped), sorted by path;
    * one image file;
    * a ``.txt`` file with one image path per line (relative paths are relative to the txt file),
      sorted;
    * a ``.zip`` archive: its image members (subfolders included) are read directly, sorted;
    * a ``.tar`` shard, a glob pattern string such as ``"shards/*.tar"``, or a list of ``.tar``
      paths (WebDataset style; uncompressed): their image members in archive order;
    * a list of image paths (kept in the given order);
    * a list of NumPy arrays, or one ``(N, H, W, C)`` array (see
      :func:`vdna.sources.array_to_rgb` for accepted shapes, dtypes and the float [0, 1] rule).

    Image extensions: bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, webp, in any letter case; other
    files are ignored in folders and archives. ``num_images`` (-1: all) keeps the first images of
    that order, or of a permutation seeded by ``seed`` when ``shuffle`` is true.

    Raises ``FileNotFoundError`` for missing paths, ``ValueError`` for sources without images or
    with invalid entries (naming them), ``TypeError`` for unsupported source types.
    """
    if isinstance(source, ImageSource):
        full = source
    else:
        full = _full_source(source)
        for name, reason in full.skipped:
            warnings.warn(f"skipping {name}: {reason}", SkippedImageWarning, stacklevel=2)
    positions = select_positions(len(full), num_images, shuffle, seed)
    if len(positions) == len(full) and np.array_equal(positions, np.arange(len(full))):
        return full
    return _with_skipped(full.select(positions), full.skipped)
