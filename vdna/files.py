"""Saving and loading DNAs: ``<path>.json`` (metadata) + ``<path>.npz`` (arrays), reference layout.

The file format (JSON keys, arrays per DNA type, our "vdna" key) is described in docs/files.md.

Kill-safe saves
---------------
The JSON is the single commit point, and the .npz it names is always findable by its checksum.
``save(p)`` (``S`` = the base name of ``p``):

1. write the arrays (``numpy.savez_compressed``) to a hidden temporary ``.S.npz.<pid>-<token>.tmp``,
   fsync it, check that every array name reads back unchanged, compute its sha256 ``h``;
2. rename it to the *pending* name ``.S.npz.sha256-<h>.<pid>-<token>.tmp`` (content-addressed) and
   fsync the directory;
3. write the JSON, which records ``h`` under ``vdna.npz_sha256``, to ``.S.json.<pid>-<token>.tmp``
   and fsync it;
4. rename it over ``S.json`` and fsync the directory: the commit. From here the new DNA is the one
   that loads, while ``S.npz`` may still be the old arrays;
5. rename the pending file over ``S.npz`` and fsync the directory;
6. remove the temporaries that killed saves of ``S`` left behind (their writer process is gone),
   except a pending file that the JSON in place names and that is not the content just saved.

The loader reads ``S.json`` once; when it names a checksum, it opens ``S.npz``, hashes the open file
and reads the arrays from that same open file if the hash matches; otherwise it loads the pending
file with that checksum. A reader therefore sees the old DNA (a kill before step 4), the new one
(after step 4; through the pending file until step 5), never a mixture, and never an error while a
complete old or new pair exists. A reader that raced a whole save (old JSON read, new .npz opened)
reads the JSON again. An exception (not a kill) after step 4 puts the previous JSON back, so a failed
save leaves the previous pair exactly as it was. Files keep the reference's names (``S.json``,
``S.npz``) and the reference package (vdna 0.1.1) ignores the extra "vdna" key and hidden files, so
it loads what we write; only in the instant between steps 4 and 5 (or after a kill there, until the
next save) would it see the new JSON beside the old .npz. Files without a checksum (vdna 0.1.1's)
load as before. Concurrent saves to one path are not coordinated: the last commit wins.

Loading never trusts the files
------------------------------
The JSON is size-limited and parsed with recursion errors caught; its values are checked (see
``vdna.dna.check_metadata``). The .npz is read member by member without ever unpickling (entries
holding Python objects, which the reference writes as placeholders, are skipped after their header):
each member's declared dtype and shape are checked against what the JSON implies (``neurons_list``,
bins) before any data are read, members are read through the decompressor in bounded chunks, and no
member may produce more bytes than its compressed size can hold (deflate expands at most 1032:1), so
memory stays bounded by the JSON's shapes and the file's size whatever the zip headers claim. Then
the values are checked (``VDNA.set_npz_arrays``). Every problem is a ValueError naming the file.
"""
import datetime
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
import zipfile
from collections.abc import Mapping
from typing import Dict, Optional, Tuple

import numpy as np

from .atomic import fsync_dir, remove_stale_temporaries, temporary_path, temporary_target
from .dna import (
    HISTOGRAM,
    VDNA,
    check_layer_name,
    check_metadata,
    check_num_images,
    get_vdna,
    parse_distribution_name,
)
from .settings import DataSettings, ExtractionSettings, settings_from_json, settings_to_json
from .version import __version__

FORMAT_VERSION = 1
OUR_KEY = "vdna"  # the one top-level JSON key the reference loader ignores and we own
_SHA_KEY = "npz_sha256"
_REQUIRED_KEYS = ("name", "num_images", "feature_extractor_name", "neurons_list")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
MAX_JSON_BYTES = 256 << 20  # a DNA's JSON is kilobytes (megabytes with a long skipped-files list)
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand more: a 258-byte match costs at least 2 bits
_HEADER_SLACK = 4096  # zlib/npy framing of a tiny member
_MAX_NPY_HEADER = 10000  # numpy's own limit for headers it parses; ours are under 200 bytes
_CHUNK = 1 << 20  # decompressed bytes per read: the only memory beyond the array itself
_LOAD_ATTEMPTS = 4  # a reader that raced complete saves re-reads the JSON this many times


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
    """Write ``vdna`` as ``file_path + ".json"`` and ``file_path + ".npz"`` (see module docstring).

    Everything is checked before the first byte is written; an exception at any point leaves any
    previous pair as it was, and a kill at any instant leaves the previous or the new DNA loadable.
    """
    if not isinstance(vdna, VDNA):
        raise TypeError(f"save_vdna expects a VDNA, got {type(vdna).__name__}")
    json_path, npz_path = pair_paths(file_path)
    where = f"DNA to be saved as {json_path[: -len('.json')]}"
    arrays = _checked_arrays(vdna, where)  # before touching the disk: a bad DNA fails here
    directory = os.path.dirname(os.path.abspath(json_path))
    os.makedirs(directory, exist_ok=True)

    tmp_npz = temporary_path(npz_path)
    pending = tmp_json = backup = None
    try:
        with open(tmp_npz, "xb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        _check_stored_names(tmp_npz, arrays, where)
        npz_sha = _sha256_file(tmp_npz)
        text = _metadata_text(vdna, arrays, npz_sha, where)

        pending = _pending_path(npz_path, npz_sha)
        os.replace(tmp_npz, pending)
        fsync_dir(directory)  # the pending name must be durable before a JSON names it

        tmp_json = temporary_path(json_path)
        with open(tmp_json, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(json_path):
            backup = temporary_path(json_path)
            _link_or_copy(json_path, backup)
        os.replace(tmp_json, json_path)  # the commit point
        fsync_dir(directory)
        try:
            os.replace(pending, npz_path)
        except BaseException:
            # An exception, not a kill: put the previous JSON back (or remove the new one).
            if backup is not None:
                os.replace(backup, json_path)
            else:
                os.unlink(json_path)
            raise
        fsync_dir(directory)
    finally:
        for p in (tmp_npz, pending, tmp_json, backup):
            if p is not None:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
    _remove_leftovers(directory, json_path, npz_path, npz_sha)


def _checked_arrays(vdna: VDNA, where: str) -> Dict[str, np.ndarray]:
    """The .npz arrays, checked exactly as the loader will check them (saved files always load)."""
    check_num_images(vdna.num_images, where)
    neurons = vdna.neurons_list
    if not isinstance(neurons, Mapping) or not neurons:
        raise ValueError(f"{where}: neurons_list must be a non-empty mapping {{layer: neuron count}}")
    for layer, count in neurons.items():
        check_layer_name(layer, where)
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"{where}: neurons_list['{layer}'] must be a positive integer, got {count!r}")
    check_metadata(vdna.meta, neurons, where)
    try:
        arrays = vdna.npz_arrays()
    except KeyError as exc:
        raise ValueError(f"{where}: no data for layer {exc} of neurons_list") from exc
    probe = get_vdna(vdna.name)
    probe.neurons_list = dict(neurons)
    probe.num_images = int(vdna.num_images)
    probe.meta = vdna.meta
    probe.set_npz_arrays(arrays, source=where)
    return arrays


def _check_stored_names(npz_path: str, arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Array names must read back exactly as written (checked on the temporary, before any rename)."""
    with zipfile.ZipFile(npz_path) as zf:
        stored = zf.namelist()
    wanted = [k + ".npy" for k in arrays]
    if stored != wanted:
        bad = [k for k, s in zip(wanted, stored) if k != s] or wanted
        raise ValueError(f"{where}: array name {bad[0][:-4]!r} does not survive being stored in an .npz file; "
                         "rename that layer")


def _metadata_text(vdna: VDNA, arrays: Dict[str, np.ndarray], npz_sha: str, where: str) -> str:
    """The JSON text: the reference's keys in its order, then ours."""
    ours = {"format_version": FORMAT_VERSION, _SHA_KEY: npz_sha}
    if vdna.type == HISTOGRAM:
        ours["counts_dtype"] = str(next(iter(arrays.values())).dtype) if arrays else "int32"
    for k, v in vdna.meta.items():
        if k not in ours:
            ours[str(k)] = _jsonable(v)
    meta = {
        "time_of_compute": datetime.datetime.now().strftime("%I:%M%p on %B %d, %Y"),
        "vdna_version": __version__,
        "distribution": vdna.distribution_metadata(),
        "type": vdna.type,
        "name": vdna.name,
        "data_settings": settings_to_json(vdna.data_settings_used),
        "extraction_settings": settings_to_json(vdna.extraction_settings_used),
        "num_images": int(vdna.num_images),
        "feature_extractor_name": str(vdna.feature_extractor_name),
        "neurons_list": {str(k): int(v) for k, v in vdna.neurons_list.items()},
        OUR_KEY: ours,
    }
    try:
        return json.dumps(meta, indent=4)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{where}: the DNA's metadata cannot be written as JSON ({exc})") from None


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


def _pending_path(npz_path: str, sha: str) -> str:
    """The content-addressed temporary name of a .npz that a committed JSON may name (step 2)."""
    return temporary_path(f"{npz_path}.sha256-{sha}")


def _pending_candidates(npz_path: str, sha: str):
    """Existing pending files with checksum ``sha`` for ``npz_path``."""
    directory, name = os.path.split(os.path.abspath(npz_path))
    target = f"{name}.sha256-{sha}"
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return []
    return [e.path for e in entries if temporary_target(e.name) == target]


def _remove_leftovers(directory: str, json_path: str, npz_path: str, saved_sha: str) -> None:
    """Step 6: temporaries of killed saves of this DNA (their writer process is gone)."""
    json_name, npz_name = os.path.basename(json_path), os.path.basename(npz_path)
    pending_re = re.compile(re.escape(npz_name) + r"\.sha256-[0-9a-f]{64}")
    keep = None
    try:  # never remove the pending .npz that the JSON in place names (a concurrent save's commit),
        # unless it is the content this save has just put in place as the .npz
        sha = _declared_sha(_read_json(json_path), json_path)
        keep = f"{npz_name}.sha256-{sha}" if sha and sha != saved_sha else None
    except (OSError, ValueError):
        pass

    def stale(target: str) -> bool:
        return target in (json_name, npz_name) or (bool(pending_re.fullmatch(target)) and target != keep)

    remove_stale_temporaries(directory, match=stale)


def _sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return _sha256_open_file(f)


def _sha256_open_file(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(_CHUNK), b""):
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


# ---------------------------------------------------------------------------------------- loading
def load_vdna_from_files(file_path, device: str = "cpu") -> VDNA:
    """Load a DNA saved by this package or by the reference package.

    ``file_path`` is the common name, with or without ".json"/".npz". ``device`` is recorded as the
    DNA's ``device`` (data are NumPy arrays). Raises FileNotFoundError for a missing file and
    ValueError, naming the file (and the layer), for anything malformed, inconsistent or invalid.
    """
    vdna, _, _, _ = _load(file_path)
    vdna.loaded_from_path = str(file_path)
    vdna.device = str(device)
    return vdna


def _load(file_path) -> Tuple[VDNA, dict, str, str]:
    """(DNA, raw JSON object, JSON path, path of the .npz its arrays came from)."""
    json_path, npz_path = _existing_pair(file_path)
    for attempt in range(_LOAD_ATTEMPTS):
        meta = _read_json(json_path)
        vdna = _vdna_from_metadata(meta, json_path)
        expected = {k: (kinds, shape, f"layer '{layer}'") for k, (kinds, shape, layer) in vdna.npz_layout().items()}
        sha = _declared_sha(meta, json_path)
        if sha is None:  # written by vdna 0.1.1: nothing to match
            arrays, source = read_npz(npz_path, expected), npz_path
            break
        found = _read_matching_npz(npz_path, sha, expected)
        if found is not None:
            arrays, source = found
            break
        time.sleep(0.01 * (attempt + 1))  # a save may have replaced both files since the JSON was read
    else:
        if not os.path.isfile(npz_path):
            raise FileNotFoundError(f"DNA file not found: {npz_path}")
        raise ValueError(
            f"mismatched DNA pair: {npz_path} does not match {json_path} (sha256 differs): the .npz is "
            "corrupt or truncated, or the files come from different saves"
        )
    vdna.set_npz_arrays(arrays, source=source)
    return vdna, meta, json_path, source


def _read_matching_npz(npz_path: str, sha: str, expected):
    """Arrays of ``npz_path``, or else of a pending file of an interrupted or running save, whose
    sha256 is ``sha``; None when there is none. Hash and arrays come from one open file."""
    for candidate in [npz_path] + _pending_candidates(npz_path, sha):
        try:
            f = open(candidate, "rb")
        except FileNotFoundError:
            continue
        with f:
            if _sha256_open_file(f) != sha:
                continue
            f.seek(0)
            return _read_npz_file(f, candidate, expected), candidate
    return None


def _existing_pair(file_path) -> Tuple[str, str]:
    """The pair to load. The reference package saved "x_0.5" as "x_0.json"/"x_0.npz" (it used
    Path.with_suffix); when our appended pair is missing and that one exists, load it with a warning.
    The .npz may be missing when the JSON names a pending one (a first save killed between renames)."""
    json_path, npz_path = pair_paths(file_path)
    if os.path.isfile(json_path):
        return json_path, npz_path
    base = os.fspath(file_path)
    root, ext = os.path.splitext(base)
    if ext not in ("", ".json", ".npz") and os.path.isfile(root + ".json") and os.path.isfile(root + ".npz"):
        warnings.warn(
            f"{base!r}: loading {root}.json/.npz, the names the reference package (vdna 0.1.1) used for "
            "a path containing a dot; vdna now appends the suffixes", stacklevel=4,
        )
        return root + ".json", root + ".npz"
    raise FileNotFoundError(f"DNA file not found: {json_path}")


def _read_json(json_path: str, what: str = "DNA metadata") -> dict:
    """The JSON object in ``json_path``, size-capped; every problem is a ValueError naming the file."""
    with open(json_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"{json_path}: {size} bytes is too large for {what} "
                             f"(at most {MAX_JSON_BYTES >> 20} MiB)")
        raw = f.read(size + 1)  # (read(n) reserves n bytes: never ask for more than the file holds)
        if len(raw) > MAX_JSON_BYTES:
            raise ValueError(f"{json_path}: too large for {what} (at most {MAX_JSON_BYTES >> 20} MiB)")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{json_path}: not a valid {what} file (JSON nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers beyond Python's digit limit
        raise ValueError(f"{json_path}: not a valid {what} file (JSON error: {exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{json_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _declared_sha(meta: dict, json_path: str) -> Optional[str]:
    ours = meta.get(OUR_KEY)
    if not isinstance(ours, dict) or _SHA_KEY not in ours:
        return None
    sha = ours[_SHA_KEY]
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise ValueError(f"{json_path}: '{OUR_KEY}.{_SHA_KEY}' must be 64 hexadecimal digits, got {sha!r:.80}")
    return sha


def _vdna_from_metadata(meta: dict, json_path: str) -> VDNA:
    for key in _REQUIRED_KEYS:
        if key not in meta:
            raise ValueError(f"{json_path}: missing key '{key}'")
    name = meta["name"]
    if not isinstance(name, str):
        raise ValueError(f"{json_path}: 'name' must be a distribution name such as 'histogram-1000', got {name!r:.80}")
    try:
        kind, bins = parse_distribution_name(name)
    except ValueError as exc:
        raise ValueError(f"{json_path}: {exc}") from None
    if "type" in meta and meta["type"] != kind:
        raise ValueError(f"{json_path}: type {meta['type']!r:.80} does not match distribution name '{name}'")
    dist = meta.get("distribution", {})
    if bins is not None and isinstance(dist, dict) and "hist_nb_bins" in dist and dist["hist_nb_bins"] != bins:
        raise ValueError(f"{json_path}: distribution.hist_nb_bins {dist['hist_nb_bins']!r:.80} does not match "
                         f"name '{name}'")

    neurons = meta["neurons_list"]
    if not isinstance(neurons, dict) or not neurons:
        raise ValueError(f"{json_path}: neurons_list must be a non-empty object {{layer: neuron count}}")
    for layer, count in neurons.items():
        check_layer_name(layer, json_path)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{json_path}: neurons_list['{layer}'] must be a positive integer, got {count!r:.80}")
    num_images = check_num_images(meta["num_images"], json_path)
    extractor = meta["feature_extractor_name"]
    if not isinstance(extractor, str):
        raise ValueError(f"{json_path}: feature_extractor_name must be text, got {extractor!r:.80}")

    vdna = get_vdna(name)
    vdna.num_images = num_images
    vdna.feature_extractor_name = extractor
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
            raise ValueError(f"{json_path}: '{OUR_KEY}.format_version' must be a positive integer, got {version!r:.80}")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{json_path}: written with file format {version}, this vdna ({__version__}) reads up to "
                f"{FORMAT_VERSION}; upgrade vdna"
            )
        vdna.meta = {k: v for k, v in ours.items() if k not in ("format_version", _SHA_KEY, "counts_dtype")}
        check_metadata(vdna.meta, vdna.neurons_list, json_path)
    if unknown:
        warnings.warn(f"{json_path}: ignoring unknown settings {unknown}", stacklevel=4)
        vdna.meta["unknown_settings"] = unknown
    return vdna


# ------------------------------------------------------------------------------- reading .npz files
class _NpzProblem(ValueError):
    """A problem found in an .npz file (the caller adds the file name)."""


def read_npz(npz_path, expected: Optional[Mapping[str, tuple]] = None) -> Dict[str, np.ndarray]:
    """Arrays of an .npz file, read safely: never unpickled, memory bounded, nothing trusted.

    ``expected`` (optional): ``{key: (kinds, shape)}`` or ``{key: (kinds, shape, label)}``, where
    ``kinds`` are the accepted ``dtype.kind`` letters ("f", "iu", ...), ``shape`` a tuple and
    ``label`` a phrase for messages ("layer 'block_0'"). Each member's declared dtype and shape are
    checked against it before its data are read; every expected key must be present, and any other
    array is an error. Without ``expected``, any numeric array is read (kinds b, i, u, f, c).
    Either way, members holding Python objects (the reference's placeholders) are skipped unread,
    and no member may decompress to more than its compressed size allows.

    Raises FileNotFoundError for a missing file and ValueError naming the file for anything else.
    """
    path = os.fspath(npz_path)
    with open(path, "rb") as f:
        return _read_npz_file(f, path, expected)


def _read_npz_file(f, display: str, expected) -> Dict[str, np.ndarray]:
    file_size = os.fstat(f.fileno()).st_size
    arrays: Dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(f) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise _NpzProblem(f"unexpected member {info.filename!r:.120} (not an .npy array)")
                key = info.filename[: -len(".npy")]
                if key in arrays:
                    raise _NpzProblem(f"array '{key}' appears twice")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise _NpzProblem(f"array '{key}' uses zip compression method {info.compress_type}; .npz files "
                                      "are stored or deflated")
                ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_MAX_RATIO
                budget = ratio * min(info.compress_size, file_size) + _HEADER_SLACK
                want = None if expected is None else expected.get(key)
                with zf.open(info) as member:
                    arr = _read_npy_member(member, key, budget, want, expected is not None)
                if arr is not None:
                    arrays[key] = arr
    except _NpzProblem as exc:
        raise ValueError(f"{display}: {exc}") from None
    except Exception as exc:  # zipfile, zlib and struct report corruption in many ways
        raise ValueError(f"{display}: corrupt or truncated .npz file ({_detail(exc)})") from None
    if expected is not None:
        for key, spec in expected.items():
            if key not in arrays:
                label = f" for {spec[2]}" if len(spec) > 2 else ""
                raise ValueError(f"{display}: missing array '{key}'{label} (expected shape {tuple(spec[1])})")
    return arrays


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or "unreadable")


def _read_npy_header_bytes(member, key: str) -> io.BytesIO:
    """The magic string, header length and header of an .npy member, read with a size cap (a version
    2 header length is 32 bits: numpy would try to read up to 4 GB of a decompression bomb)."""
    magic = member.read(8)
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise _NpzProblem(f"array '{key}' is not an .npy array (bad magic string)")
    width = {1: 2, 2: 4}.get(magic[6])
    if width is None:
        raise _NpzProblem(f"array '{key}': unsupported .npy format version {magic[6]}.{magic[7]}")
    length_bytes = member.read(width)
    if len(length_bytes) < width:
        raise _NpzProblem(f"array '{key}' is truncated in its .npy header")
    length = int.from_bytes(length_bytes, "little")
    if length > _MAX_NPY_HEADER:
        raise _NpzProblem(f"array '{key}' has an .npy header of {length} bytes (at most {_MAX_NPY_HEADER})")
    header = member.read(length)
    if len(header) < length:
        raise _NpzProblem(f"array '{key}' is truncated in its .npy header")
    return io.BytesIO(magic + length_bytes + header)


def _read_npy_member(member, key: str, budget: int, want, strict: bool):
    fmt = np.lib.format
    try:
        header = _read_npy_header_bytes(member, key)  # bounded: numpy would read what the length claims
        version = fmt.read_magic(header)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(header)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(header)
        else:
            raise _NpzProblem(f"array '{key}': unsupported .npy format version {version}")
    except _NpzProblem:
        raise
    except Exception as exc:  # numpy parses the header with ast/tokenize: SyntaxError, TokenError, ...
        detail = f" ({_detail(exc)})" if isinstance(exc, ValueError) else ""
        raise _NpzProblem(f"array '{key}' has a corrupt .npy header{detail}") from None
    label = f" of {want[2]}" if want is not None and len(want) > 2 else ""
    if want is None:
        if dtype.hasobject:
            return None  # a pickled Python object (reference placeholder): never unpickled
        if strict:
            raise _NpzProblem(f"array '{key}' does not belong to this file (shape {shape}, dtype {dtype})")
        if dtype.kind not in "biufc" or dtype.fields is not None:
            raise _NpzProblem(f"array '{key}' has dtype {dtype}; only numeric arrays are read")
    else:
        kinds, shape_wanted = want[0], tuple(int(n) for n in want[1])
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in kinds:
            wanted = {"iu": "integer", "f": "floating-point"}.get(kinds, f"kind {kinds!r}")
            raise _NpzProblem(f"array '{key}'{label} has dtype {dtype}, expected {wanted}")
        if tuple(shape) != shape_wanted:
            raise _NpzProblem(f"array '{key}'{label}: expected shape {shape_wanted}, got {tuple(shape)}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > budget:  # checked before allocating: a corrupt header must not ask for terabytes
        raise _NpzProblem(f"array '{key}'{label}: header announces {nbytes} bytes but the member can hold at most "
                          f"{budget}")
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:  # bounded reads through the decompressor
        n = member.readinto(view[got:got + _CHUNK])
        if not n:
            raise _NpzProblem(f"array '{key}'{label} is truncated: {got} of {nbytes} bytes")
        got += n
    if member.read(1):  # also makes zipfile check the CRC at the end of the member
        raise _NpzProblem(f"array '{key}'{label} has trailing data")
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


__all__ = ["save_vdna", "load_vdna_from_files", "pair_paths", "read_npz", "FORMAT_VERSION"]
