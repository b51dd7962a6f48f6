"""Resumable DNA runs: checkpoint files of an accumulator's state and of the run's progress.

A checkpoint is ONE uncompressed ``.npz`` file, written atomically (``vdna.atomic``): a reader sees
the previous checkpoint or the new one, never a mixture, even if the writer is SIGKILLed. It holds

- ``header``: UTF-8 JSON (as uint8) with the format name and version, the run's identity (what must be
  equal for a resume: extractor, distribution, source, image selection, preprocessing, rank and world
  size...), the progress (the next source position to read, skipped files) and the accumulator state
  with every array replaced by a reference ``{"__array__": "a<k>"}``;
- ``a0``, ``a1``, ...: those arrays (int64 / float64 only).

A checkpoint is untrusted input: it is read with ``vdna.files.read_npz`` (never unpickled) and every
field is checked; the accumulator state is checked again by ``Accumulator.load_state_dict``.
"""
import hashlib
import io
import json
import os
from typing import Dict, Tuple

import numpy as np

from .atomic import remove_stale_temporaries, write_bytes_atomic

CHECKPOINT_FORMAT = "vdna.checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path, identity: dict, progress: dict, state: dict) -> None:
    """Write (atomically) a checkpoint of ``state`` (an ``Accumulator.state_dict()``) and progress."""
    arrays: Dict[str, np.ndarray] = {}

    def flatten(obj):
        if isinstance(obj, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = np.ascontiguousarray(obj)
            return {"__array__": key}
        if isinstance(obj, dict):
            return {k: flatten(v) for k, v in obj.items()}
        return obj

    header = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "identity": identity,
              "progress": progress, "state": flatten(state)}
    text = json.dumps(header, allow_nan=True).encode("utf-8")
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(text, dtype=np.uint8), **arrays)
    write_bytes_atomic(path, buf.getvalue())


def load_checkpoint(path) -> Tuple[dict, dict, dict]:
    """``(identity, progress, state)`` of a checkpoint file; ``ValueError`` naming what is wrong."""
    from .files import read_npz

    path = os.fspath(path)
    arrays = read_npz(path)
    where = f"checkpoint {path}"
    header_arr = arrays.pop("header", None)
    if header_arr is None or header_arr.dtype != np.uint8 or header_arr.ndim != 1:
        raise ValueError(f"{where}: no header (not a vdna checkpoint)")
    try:
        header = json.loads(header_arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: corrupt header ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{where}: not a vdna checkpoint")
    version = header.get("version")
    if not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
        raise ValueError(f"{where}: checkpoint version {version!r} is not supported (this vdna reads "
                         f"1..{CHECKPOINT_VERSION})")
    for key in ("identity", "progress", "state"):
        if not isinstance(header.get(key), dict):
            raise ValueError(f"{where}: '{key}' is missing or not an object")
    used = set()

    def unflatten(obj):
        if isinstance(obj, dict):
            if set(obj) == {"__array__"}:
                key = obj["__array__"]
                if key not in arrays or key in used:
                    raise ValueError(f"{where}: array reference {key!r} is missing or used twice")
                used.add(key)
                if arrays[key].dtype.kind not in "iuf":
                    raise ValueError(f"{where}: array {key!r} has dtype {arrays[key].dtype}")
                return arrays[key]
            return {k: unflatten(v) for k, v in obj.items()}
        return obj

    state = unflatten(header["state"])
    progress = header["progress"]
    for key in ("next_position", "start", "stop"):
        value = progress.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{where}: progress '{key}' must be a non-negative integer, got {value!r}")
    if not progress["start"] <= progress["next_position"] <= progress["stop"]:
        raise ValueError(f"{where}: progress position {progress['next_position']} is outside "
                         f"[{progress['start']}, {progress['stop']}]")
    if not isinstance(progress.get("skipped_files", []), list):
        raise ValueError(f"{where}: progress 'skipped_files' must be a list")
    return header["identity"], progress, state


def names_digest(names) -> str:
    """SHA-256 of a source's image ids in order (a resume must see the same images in the same order)."""
    h = hashlib.sha256()
    for name in names:
        h.update(str(name).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def check_identity(saved: dict, current: dict, path) -> None:
    """Refuse to resume a run whose identity differs, naming every differing field."""
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, this run has {current.get(k)!r}"
             for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if diffs:
        raise ValueError(f"cannot resume from the checkpoint {os.fspath(path)}: it was made by another run "
                         f"({'; '.join(diffs)}); use another checkpoint path or delete it to start over")


def rank_checkpoint_path(path, rank: int, world_size: int) -> str:
    """One checkpoint per rank under torch.distributed: ``<path>.rank<r>-of-<w>`` (``path`` itself
    when there is one process)."""
    path = os.fspath(path)
    return path if world_size == 1 else f"{path}.rank{rank}-of-{world_size}"


class RunCheckpointer:
    """Saves a run's state every ``every`` images and restores it: used by ``make_vdna``."""

    def __init__(self, path, every: int, identity: dict, start: int, stop: int):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
        self.path = os.fspath(path)
        self.every = int(every)
        self.identity = identity
        self.start, self.stop = int(start), int(stop)
        self._last_saved = None

    def resume(self, accumulator, meta: dict) -> int:
        """Load the checkpoint (if one exists) into ``accumulator`` and ``meta``; the next position."""
        # a writer killed mid-save leaves its temporary behind (the checkpoint itself is intact)
        remove_stale_temporaries(os.path.dirname(os.path.abspath(self.path)), os.path.basename(self.path))
        if not os.path.exists(self.path):
            self._last_saved = self.start
            return self.start
        identity, progress, state = load_checkpoint(self.path)
        check_identity(identity, self.identity, self.path)
        if (progress["start"], progress["stop"]) != (self.start, self.stop):
            raise ValueError(f"cannot resume from the checkpoint {self.path}: it covers source positions "
                             f"[{progress['start']}, {progress['stop']}), this run [{self.start}, {self.stop})")
        try:
            accumulator.load_state_dict(state)
        except ValueError as exc:
            raise ValueError(f"checkpoint {self.path}: {exc}") from exc
        meta["skipped_files"] = list(progress.get("skipped_files", []))
        self._last_saved = progress["next_position"]
        return progress["next_position"]

    def after_batch(self, next_position: int, accumulator_state, meta: dict, force: bool = False) -> bool:
        """Save when ``every`` images were read since the last save (or ``force``); whether it saved.
        ``accumulator_state``: a callable giving the current state dict (called only to save)."""
        if not force and next_position - self._last_saved < self.every:
            return False
        progress = {"start": self.start, "stop": self.stop, "next_position": int(next_position),
                    "complete": int(next_position) == self.stop,
                    "skipped_files": list(meta.get("skipped_files", []))}
        save_checkpoint(self.path, self.identity, progress, accumulator_state())
        self._last_saved = int(next_position)
        return True


__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint", "check_identity",
           "names_digest", "rank_checkpoint_path", "RunCheckpointer"]
