"""Atomic file writes: the one place where vdna puts a file into place.

A file is written to a hidden temporary sibling (same directory, so the final ``os.replace`` is an
atomic rename on POSIX and Windows), flushed and fsync'ed, then renamed over the target, and the
directory is fsync'ed so the rename itself survives a power cut. If anything fails before the
rename, the temporary is removed and the previous file (if any) is untouched: a reader sees the old
file or the new one, never a mixture.

Temporaries are named ``.<name>.<pid>-<token>.tmp``; a process killed mid-write leaves one behind,
and ``remove_stale_temporaries`` deletes those whose writer process is gone.
"""
import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Union

__all__ = ["atomic_path", "atomic_write", "write_bytes_atomic", "write_text_atomic", "temporary_path", "fsync_dir",
           "remove_stale_temporaries", "temporary_target"]

PathLike = Union[str, os.PathLike]
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{16}\.tmp$")


def temporary_path(path: PathLike) -> str:
    """A unique hidden temporary name next to ``path`` (same file system as the target)."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(8)}.tmp")


def fsync_dir(directory: PathLike) -> None:
    """fsync a directory so that renames in it are durable (a no-op where that is impossible)."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # Windows cannot open directories; renames there are still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike, durable: bool = True) -> Iterator[str]:
    """For writers that need a file name (a compiler, ``torch.jit.save``, ``savefig``):
    ``with atomic_path(p) as tmp: write(tmp)``. When the block ends without an exception, ``tmp``
    (if the writer created it) is fsync'ed (``durable=True``) and renamed over ``path``; on an
    exception it is removed and ``path`` keeps its previous content. Parent directories are created.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    tmp = temporary_path(target)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(f"nothing was written to the temporary file for {target}")
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", *, encoding: str = None, newline: str = None,
                 durable: bool = True) -> Iterator:
    """Write ``path`` atomically through a file object:
    ``with atomic_write(p, "w", encoding="utf-8") as f: f.write(...)`` (see ``atomic_path``).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, durable=False) as tmp:
        with open(tmp, "x" + mode[1:], encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
    if durable:
        fsync_dir(os.path.dirname(os.path.abspath(os.fspath(path))))


def write_bytes_atomic(path: PathLike, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see ``atomic_write``)."""
    with atomic_write(path, "wb", durable=durable) as f:
        f.write(data)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8", durable: bool = True) -> None:
    """Replace ``path`` with ``text`` atomically (no newline translation)."""
    with atomic_write(path, "w", encoding=encoding, newline="", durable=durable) as f:
        f.write(text)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    except (AttributeError, ValueError, OverflowError):  # pragma: no cover - no os.kill semantics
        return True
    return True


def temporary_target(file_name: str) -> Optional[str]:
    """The target name of a temporary made by ``temporary_path`` (``".x.json.123-<hex>.tmp"`` ->
    ``"x.json"``), or None when ``file_name`` is not such a temporary."""
    m = _TEMP_RE.match(file_name)
    return m.group("name") if m else None


def remove_stale_temporaries(directory: PathLike, name: str = None, *,
                             match: Callable[[str], bool] = None) -> List[Path]:
    """Delete temporaries left in ``directory`` by killed writers: those of the target ``name`` only,
    if given, and of targets for which ``match(target name)`` is true, if given.

    A temporary is stale when the process that created it no longer exists (so a writer that is still
    running keeps its files). Returns what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(os.fspath(directory)))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or (name is not None and m.group("name") != name):
            continue
        if match is not None and not match(m.group("name")):
            continue
        if _pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed
