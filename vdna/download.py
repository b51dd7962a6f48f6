"""The local cache, the download policy, and checksum-verified downloads of plain URLs.

Missing weights and activation ranges are downloaded on first use, into the cache, with a progress
bar. The policy (``downloads_allowed``):

- ``allow_download=True`` / ``False`` on a call forces downloading on / off;
- ``allow_download=None`` (the default): allowed unless ``VDNA_OFFLINE`` is set to a true word
  (``1``, ``true``, ``yes``, ``on``); hub files also obey huggingface_hub's ``HF_HUB_OFFLINE``.

The cache folder is ``$VDNA_HOME`` when set, else ``~/.cache/vdna``. Its layout (docs/weights.md):

- ``weights/<extractor name>/<original file name>``: checkpoints published at plain URLs, under the
  name their publisher gave them (e.g. ``weights/vgg16/vgg16-397923af.pth``);
- ``hub/<repo_type>/<owner>/<repo>/<path in the repository>``: files of Hugging Face hub
  repositories (activation ranges, the Mugs checkpoints, published DNAs), see ``vdna.hub``.

Plain URLs are fetched by ``download_url`` (streamed into a temporary file next to the destination,
moved into place only after the SHA-256 check, with a timeout on every network wait), so a corrupt,
interrupted or stalled download never leaves a file that looks complete and never hangs. Expected digests are full SHA-256 hex digests or a prefix
of at least 8 hex digits (torchvision and pytorch-fid put the first 8 in their file names).
"""
import hashlib
import http.client
import os
from pathlib import Path
from typing import Optional, Union

__all__ = [
    "ChecksumMismatchError",
    "DownloadNotAllowedError",
    "MissingFileError",
    "cache_dir",
    "download_url",
    "downloads_allowed",
    "sha256_file",
]

_ENV_HOME = "VDNA_HOME"
_ENV_OFFLINE = "VDNA_OFFLINE"
_TRUE_WORDS = ("1", "true", "yes", "on")
_CHUNK = 1 << 20


class MissingFileError(FileNotFoundError):
    """A file vdna needs (weights, activation ranges, a hub file) is neither given, cached, nor downloadable."""


class DownloadNotAllowedError(MissingFileError, PermissionError):
    """A download was needed but network access is off (``VDNA_OFFLINE``, ``HF_HUB_OFFLINE`` or
    ``allow_download=False``). The message names the URL and the exact file to place instead."""


class ChecksumMismatchError(ValueError):
    """A downloaded or cached file does not have the expected SHA-256."""


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` holds a true word (1, true, yes, on; any case)."""
    return os.environ.get(name, "").strip().lower() in _TRUE_WORDS


def cache_dir() -> Path:
    """The cache folder: ``$VDNA_HOME`` if set (and non-empty), else ``~/.cache/vdna``.

    The folder is not created here; writers create what they need.
    """
    home = os.environ.get(_ENV_HOME, "").strip()
    if home:
        return Path(home).expanduser()
    return Path("~/.cache/vdna").expanduser()


def downloads_allowed(allow_download: Optional[bool] = None, hub: bool = False) -> bool:
    """Whether a missing file may be downloaded: ``allow_download`` when it is not None, else not
    ``$VDNA_OFFLINE`` (and, for hub files, not ``$HF_HUB_OFFLINE`` either)."""
    if allow_download is not None:
        if not isinstance(allow_download, bool):
            raise TypeError(f"allow_download must be True, False or None, got {allow_download!r}")
        return allow_download
    if env_flag(_ENV_OFFLINE):
        return False
    return not (hub and env_flag("HF_HUB_OFFLINE"))


def why_offline(allow_download: Optional[bool], hub: bool = False) -> str:
    """The reason ``downloads_allowed`` said no, and how to change it (ends every refusal message)."""
    if allow_download is False:
        reason = "downloads are off for this call (allow_download=False / --offline)"
    elif env_flag(_ENV_OFFLINE):
        reason = f"{_ENV_OFFLINE} is set"
    elif hub and env_flag("HF_HUB_OFFLINE"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        reason = "downloads are off"
    return reason


def refusal(what: str, url: str, dest: Path, allow_download: Optional[bool], hub: bool = False,
            alternative: str = "") -> DownloadNotAllowedError:
    """The error for a file that is missing while network access is off: what, from where, to where."""
    return DownloadNotAllowedError(
        f"{what} is not in the cache and {why_offline(allow_download, hub)}, so it cannot be downloaded: "
        f"download {url} on a connected machine and place it at {dest}{alternative}"
    )


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


def describe_spec(spec: str) -> str:
    """``spec`` as printed in messages: a prefix gets a trailing '...'."""
    return spec + ("..." if len(spec) < 64 else "")


DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte (connect or read) before a download is abandoned
_CHUNK = 1 << 20


def download_url(url: str, dest: Union[str, os.PathLike], sha256: Optional[str] = None,
                 progress: bool = True, timeout: Optional[float] = None) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    Callers decide first whether downloading is allowed (``downloads_allowed``). The body is streamed
    into a temporary file next to ``dest`` (``vdna.atomic``) while its SHA-256 is computed; ``sha256``
    (full, or a prefix of >= 8 hex digits) is checked before the file is moved into place. On a
    mismatch ``ChecksumMismatchError`` is raised and nothing is left at ``dest`` (an existing file
    there is kept). ``timeout``: seconds to wait for the connection and for each read (default
    ``DOWNLOAD_TIMEOUT``, or ``$VDNA_DOWNLOAD_TIMEOUT``), so a stalled server is an error, not a
    hang. Network errors, truncated bodies and timeouts become ``OSError`` naming the URL.
    """
    import urllib.request

    from .atomic import atomic_write

    dest = Path(dest)
    spec = check_sha256_spec(sha256)
    if timeout is None:
        timeout = float(os.environ.get("VDNA_DOWNLOAD_TIMEOUT", DOWNLOAD_TIMEOUT))
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "vdna"})
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_write(dest, "wb") as f:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name)
            got = 0
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and got != total:
                raise http.client.IncompleteRead(b"", total - got)
            actual = digest.hexdigest()
            if spec is not None and not actual.startswith(spec.lower()):
                raise ChecksumMismatchError(
                    f"download of {url} does not have the published SHA-256 ({describe_spec(spec)}; it has "
                    f"{actual}): the file was discarded (nothing written to {dest})")
    except ChecksumMismatchError:
        raise
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError, timeouts, truncation
        raise OSError(f"could not download {url} to {dest}: {exc}") from exc
    return dest
