"""Local cache and opt-in downloads for pretrained weights, activation ranges and hub files.

Nothing is downloaded unless the caller allows it: ``allow_download=True`` on the call, or the
environment variable ``VDNA_ALLOW_DOWNLOAD=1`` (also ``true``/``yes``/``on``). The cache folder is
``$VDNA_HOME`` when set, else ``~/.cache/vdna``. Its layout:

- ``weights/<extractor name>/<original file name>``: checkpoints, under the name their publisher
  gave them (e.g. ``weights/dino_resnet50/dino_resnet50_pretrain.pth``);
- ``hub/<repo_type>/<owner>/<repo>/<path in the repository>``: files of Hugging Face hub
  repositories (activation ranges, published DNAs).

Downloads use ``urllib`` only. A download is written to a temporary file next to its destination,
its SHA-256 is checked, and only then is it renamed into place, so an interrupted or corrupt
download never leaves a file that looks complete.
"""
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "ChecksumMismatchError",
    "DownloadNotAllowedError",
    "MissingFileError",
    "cache_dir",
    "download_file",
    "downloads_allowed",
    "sha256_file",
]

_ENV_HOME = "VDNA_HOME"
_ENV_ALLOW = "VDNA_ALLOW_DOWNLOAD"
_TRUE_WORDS = ("1", "true", "yes", "on")
_CHUNK = 1 << 20


class MissingFileError(FileNotFoundError):
    """A file vdna needs (weights, activation ranges, a hub file) is neither given nor cached."""


class DownloadNotAllowedError(PermissionError):
    """A download was needed but downloads are not allowed (see ``downloads_allowed``)."""


class ChecksumMismatchError(ValueError):
    """A downloaded or cached file does not have the expected SHA-256."""


def cache_dir() -> Path:
    """The cache folder: ``$VDNA_HOME`` if set (and non-empty), else ``~/.cache/vdna``.

    The folder is not created here; writers create what they need.
    """
    home = os.environ.get(_ENV_HOME, "").strip()
    if home:
        return Path(home).expanduser()
    return Path("~/.cache/vdna").expanduser()


def downloads_allowed(allow_download: Optional[bool] = None) -> bool:
    """Whether downloading is allowed: the explicit argument if not None, else ``$VDNA_ALLOW_DOWNLOAD``."""
    if allow_download is not None:
        return bool(allow_download)
    return os.environ.get(_ENV_ALLOW, "").strip().lower() in _TRUE_WORDS


def how_to_allow() -> str:
    """The sentence every 'download needed' error ends with."""
    return f"allow the download with allow_download=True or the environment variable {_ENV_ALLOW}=1"


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256_spec(sha256: Optional[str]) -> Optional[str]:
    """Validate an expected checksum: None, a full 64-hex digest, or a hex prefix of >= 8 digits.

    Prefixes exist because some publishers (torchvision, pytorch-fid) only put the first 8 hex
    digits of the SHA-256 in their file names. Returns the lower-cased spec.
    """
    if sha256 is None:
        return None
    spec = str(sha256).strip().lower()
    if not (8 <= len(spec) <= 64) or any(c not in "0123456789abcdef" for c in spec):
        raise ValueError(f"expected SHA-256 must be 8 to 64 hex digits, got {sha256!r}")
    return spec


def sha256_matches(actual: str, expected: Optional[str]) -> bool:
    """True when ``expected`` is None or is the full digest / a prefix of ``actual``."""
    spec = check_sha256_spec(expected)
    return spec is None or actual.lower().startswith(spec)


def download_file(
    url: str,
    dest: Union[str, os.PathLike],
    sha256: Optional[str] = None,
    allow_download: Optional[bool] = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically and return ``dest`` as a Path.

    ``sha256`` is the expected digest (full, or a prefix of >= 8 hex digits); it is checked before
    the file is moved into place, and on a mismatch nothing is left at ``dest``. Raises
    ``DownloadNotAllowedError`` without touching the network when downloads are not allowed,
    ``ChecksumMismatchError`` on a wrong checksum and ``OSError`` (with the URL) on network errors.
    """
    dest = Path(dest)
    spec = check_sha256_spec(sha256)
    if not downloads_allowed(allow_download):
        raise DownloadNotAllowedError(
            f"downloading {url} is needed to create {dest}, but downloads are not allowed; "
            f"put the file there yourself or {how_to_allow()}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="." + dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=60)
            except Exception as exc:  # URLError, HTTPError, ValueError for bad URLs, socket errors
                raise OSError(f"could not download {url}: {exc}") from exc
            with response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if spec is not None and not actual.startswith(spec):
            raise ChecksumMismatchError(
                f"download of {url} has SHA-256 {actual}, expected {spec}"
                f"{'...' if len(spec) < 64 else ''}; the file was discarded (not written to {dest})"
            )
        os.replace(tmp_name, dest)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return dest
