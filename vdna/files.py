"""Saving and loading DNAs: ``<path>.json`` (metadata) + ``<path>.npz`` (arrays), reference layout.

Saving is atomic and keeps the pair consistent:

1. both files are written to hidden temporary files in the target directory and fsync'ed;
2. the JSON records the sha256 of the .npz under our "vdna" key;
3. the JSON is renamed into place first, then the .npz; if the second rename fails the previous JSON
   is put back, so an exception at any point leaves any previous pair untouched and no temporary file.

If the process dies between the two renames, the new JSON sits beside the old .npz; the loader sees
that the checksum does not match and says so instead of returning a wrong DNA.

Loading never unpickles: the .npz is read member by member with NumPy's header reader, and entries
holding Python objects (the reference writes a pickled empty dict per layer for non-histogram DNAs)
are skipped after reading their header.
"""
import datetime
import hashlib
import json
import os
import secrets
import struct
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from typing import Dict, Tuple

import numpy as np

from .dna import HISTOGRAM, VDNA, get_vdna, parse_distribution_name
from .settings import DataSettings, ExtractionSettings, settings_from_json, settings_to_json
from .version import __version__

FORMAT_VERSION = 1
OUR_KEY = "vdna"  # the one top-level JSON key the reference loader ignores and we own
_SHA_KEY = "npz_sha256"
_REQUIRED_KEYS = ("name", "num_images", "feature_extractor_name", "neurons_list")


def pair_paths(file_path) -> Tuple[str, str]:
    """(json path, npz path) for a DNA path given with or without ".json"/".npz".

    Suffixes are appended, never substituted, so names containing dots ("set_0.5") keep them.
    """
    base = os.fspath(file_path)
    for suffix in (".json", ".npz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if not os.path.basename(base):
        raise ValueError(f"DNA path {os.fspath(file_path)!r} has no file name")
    return base + ".json", base + ".npz"


# ---------------------------------------------------------------------------------------- saving
def save_vdna(vdna: VDNA, file_path) -> None:
    """Write ``vdna`` as ``file_path + ".json"`` and ``file_path + ".npz"`` (see module docstring)."""
    if not isinstance(vdna, VDNA):
        raise TypeError(f"save_vdna expects a VDNA, got {type(vdna).__name__}")
    json_path, npz_path = pair_paths(file_path)
    directory = os.path.dirname(os.path.abspath(json_path))
    os.makedirs(directory, exist_ok=True)
    arrays = _checked_arrays(vdna, json_path)  # before touching the disk: a bad DNA fails here

    token = secrets.token_hex(8)
    stem = os.path.basename(json_path)[: -len(".json")]
    tmp_npz = os.path.join(directory, f".{stem}.{token}.npz.tmp")
    tmp_json = os.path.join(directory, f".{stem}.{token}.json.tmp")
    backup_json = os.path.join(directory, f".{stem}.{token}.json.bak")
    try:
        with open(tmp_npz, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        npz_sha = _sha256_file(tmp_npz)

        text = json.dumps(_metadata(vdna, arrays, npz_sha), indent=4)
        with open(tmp_json, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

        had_json = os.path.exists(json_path)
        if had_json:
            _link_or_copy(json_path, backup_json)
        os.replace(tmp_json, json_path)
        try:
            os.replace(tmp_npz, npz_path)
        except BaseException:
            # Put the previous JSON back (or remove the new one) so the old pair stays whole.
            if had_json:
                os.replace(backup_json, json_path)
            else:
                os.unlink(json_path)
            raise
        _fsync_dir(directory)
    finally:
        for p in (tmp_npz, tmp_json, backup_json):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _checked_arrays(vdna: VDNA, json_path: str) -> Dict[str, np.ndarray]:
    """The .npz arrays, checked exactly as the loader will check them (saved files always load)."""
    where = f"DNA to be saved as {json_path[: -len('.json')]}"
    try:
        arrays = vdna.npz_arrays()
    except KeyError as exc:
        raise ValueError(f"{where}: no data for layer {exc} of neurons_list") from exc
    probe = get_vdna(vdna.name)
    probe.neurons_list = dict(vdna.neurons_list)
    probe.set_npz_arrays(arrays, source=where)
    return arrays


def _metadata(vdna: VDNA, arrays: Dict[str, np.ndarray], npz_sha: str) -> dict:
    """The JSON object: the reference's keys in its order, then ours."""
    ours = {"format_version": FORMAT_VERSION, _SHA_KEY: npz_sha}
    if vdna.type == HISTOGRAM:
        ours["counts_dtype"] = str(next(iter(arrays.values())).dtype) if arrays else "int32"
    for k, v in vdna.meta.items():
        if k not in ours:
            ours[k] = _jsonable(v)
    return {
        "time_of_compute": datetime.datetime.now().strftime("%I:%M%p on %B %d, %Y"),
        "vdna_version": __version__,
        "distribution": vdna.distribution_metadata(),
        "type": vdna.type,
        "name": vdna.name,
        "data_settings": settings_to_json(vdna.data_settings_used),
        "extraction_settings": settings_to_json(vdna.extraction_settings_used),
        "num_images": int(vdna.num_images),
        "feature_extractor_name": vdna.feature_extractor_name,
        "neurons_list": {str(k): int(v) for k, v in vdna.neurons_list.items()},
        OUR_KEY: ours,
    }


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            fo.write(fi.read())
            fo.flush()
            os.fsync(fo.fileno())


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible everywhere (e.g. Windows); the renames are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- loading
def load_vdna_from_files(file_path, device: str = "cpu") -> VDNA:
    """Load a DNA saved by this package or by the reference package.

    ``file_path`` is the common name, with or without ".json"/".npz". ``device`` is recorded as the
    DNA's ``device`` (data are NumPy arrays). Raises FileNotFoundError for a missing file and
    ValueError, naming the file, for anything malformed or inconsistent.
    """
    json_path, npz_path = _existing_pair(file_path)
    meta = _read_json(json_path)
    vdna = _vdna_from_metadata(meta, json_path)

    ours = meta.get(OUR_KEY)
    if ours is not None and _SHA_KEY in ours:
        actual = _sha256_file(npz_path)
        if actual != ours[_SHA_KEY]:
            raise ValueError(
                f"mismatched DNA pair: {npz_path} does not match {json_path} (sha256 differs): the .npz is "
                "corrupt or truncated, the files come from different saves, or a save was interrupted"
            )
    arrays = read_npz(npz_path)
    vdna.set_npz_arrays(arrays, source=npz_path)
    vdna.loaded_from_path = str(file_path)
    vdna.device = str(device)
    return vdna


def _existing_pair(file_path) -> Tuple[str, str]:
    """The pair to load. The reference package saved "x_0.5" as "x_0.json"/"x_0.npz" (it used
    Path.with_suffix); when our appended pair is missing and that one exists, load it with a warning."""
    json_path, npz_path = pair_paths(file_path)
    if os.path.isfile(json_path) and os.path.isfile(npz_path):
        return json_path, npz_path
    base = os.fspath(file_path)
    root, ext = os.path.splitext(base)
    if ext not in ("", ".json", ".npz") and os.path.isfile(root + ".json") and os.path.isfile(root + ".npz"):
        warnings.warn(
            f"{base!r}: loading {root}.json/.npz, the names the reference package (vdna 0.1.1) used for "
            "a path containing a dot; vdna now appends the suffixes", stacklevel=3,
        )
        return root + ".json", root + ".npz"
    for p in (json_path, npz_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"DNA file not found: {p}")
    return json_path, npz_path


def _read_json(json_path: str) -> dict:
    try:
        with open(json_path, "r", encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{json_path}: not a valid DNA metadata file (JSON error: {exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _vdna_from_metadata(meta: dict, json_path: str) -> VDNA:
    for key in _REQUIRED_KEYS:
        if key not in meta:
            raise ValueError(f"{json_path}: missing key '{key}'")
    name = meta["name"]
    try:
        kind, bins = parse_distribution_name(name)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{json_path}: {exc}") from exc
    if "type" in meta and meta["type"] != kind:
        raise ValueError(f"{json_path}: type '{meta['type']}' does not match distribution name '{name}'")
    dist = meta.get("distribution", {})
    if bins is not None and isinstance(dist, dict) and "hist_nb_bins" in dist and dist["hist_nb_bins"] != bins:
        raise ValueError(f"{json_path}: distribution.hist_nb_bins {dist['hist_nb_bins']} does not match name '{name}'")

    neurons = meta["neurons_list"]
    if not isinstance(neurons, dict) or not neurons:
        raise ValueError(f"{json_path}: neurons_list must be a non-empty object {{layer: neuron count}}")
    for layer, count in neurons.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{json_path}: neurons_list['{layer}'] must be a positive integer, got {count!r}")
    num_images = meta["num_images"]
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"{json_path}: num_images must be a non-negative integer, got {num_images!r}")

    vdna = get_vdna(name)
    vdna.num_images = num_images
    vdna.feature_extractor_name = str(meta["feature_extractor_name"])
    vdna.neurons_list = dict(neurons)
    unknown = {}
    for key, cls, attr in (
        ("data_settings", DataSettings, "data_settings_used"),
        ("extraction_settings", ExtractionSettings, "extraction_settings_used"),
    ):
        values = meta.get(key, {})
        if not isinstance(values, dict):
            raise ValueError(f"{json_path}: '{key}' must be an object")
        settings, extra = settings_from_json(cls, values)
        setattr(vdna, attr, settings)
        if extra:
            unknown[key] = extra

    ours = meta.get(OUR_KEY)
    if ours is not None:
        if not isinstance(ours, dict):
            raise ValueError(f"{json_path}: '{OUR_KEY}' must be an object")
        version = ours.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"{json_path}: '{OUR_KEY}.format_version' must be a positive integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{json_path}: written with file format {version}, this vdna ({__version__}) reads up to "
                f"{FORMAT_VERSION}; upgrade vdna"
            )
        vdna.meta = {k: v for k, v in ours.items() if k not in ("format_version", _SHA_KEY, "counts_dtype")}
    if unknown:
        warnings.warn(f"{json_path}: ignoring unknown settings {unknown}", stacklevel=3)
        vdna.meta["unknown_settings"] = unknown
    return vdna


def read_npz(npz_path: str) -> Dict[str, np.ndarray]:
    """Arrays of an .npz file, without ever unpickling: object entries are skipped after their header.

    Corrupt or truncated files raise ValueError naming the file.
    """
    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(npz_path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"unexpected member '{info.filename}' (not an .npy array)")
                key = info.filename[: -len(".npy")]
                if key in arrays:
                    raise ValueError(f"array '{key}' appears twice")
                with zf.open(info) as member:
                    arr = _read_npy_member(member, key, info.file_size)
                if arr is not None:
                    arrays[key] = arr
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError, struct.error, OSError, RuntimeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{npz_path}: corrupt or truncated .npz file ({exc})") from exc
    return arrays


def _read_npy_member(member, key: str, member_size: int):
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = fmt.read_array_header_2_0(member)
    else:
        raise ValueError(f"array '{key}': unsupported .npy format version {version}")
    if dtype.hasobject:
        return None  # a pickled Python object (reference placeholder): never unpickled
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    nbytes = count * dtype.itemsize
    if nbytes > member_size:  # checked before allocating: a corrupt header must not ask for terabytes
        raise ValueError(f"array '{key}': header announces {nbytes} bytes but the member holds {member_size}")
    buf = bytearray(nbytes)
    got = member.readinto(buf) if nbytes else 0
    while got < nbytes:  # readinto may return short reads on compressed streams
        n = member.readinto(memoryview(buf)[got:])
        if not n:
            raise ValueError(f"array '{key}' is truncated: {got} of {nbytes} bytes")
        got += n
    if member.read(1):  # also makes zipfile check the CRC at end of member
        raise ValueError(f"array '{key}' has trailing data")
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


__all__ = ["save_vdna", "load_vdna_from_files", "pair_paths", "read_npz", "FORMAT_VERSION"]
