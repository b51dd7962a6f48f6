"""Files of Hugging Face hub repositories, fetched with ``huggingface_hub`` into vdna's cache.

A hub file ``<path>`` of repository ``<owner>/<repo>`` is cached at
``<cache_dir()>/hub/<repo_type>/<owner>/<repo>/<path>`` (a plain file: on an offline machine, put it
there yourself). When it is missing and downloads are allowed (``vdna.download.downloads_allowed``),
``huggingface_hub.hf_hub_download`` fetches it (progress bar, resumable downloads, tokens for gated
repositories, ``HF_ENDPOINT`` mirrors) into a staging folder under ``<cache_dir()>/.partial/``; it is
checked (the pinned SHA-256 when we know one, else the hub's own SHA-256 of LFS files when the hub
reports it) and only then moved into place, so a corrupt download never lands in the cache.
``huggingface_hub`` is optional: ``pip install vdna[hub]``.
"""
import hashlib
import os
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Optional
from urllib.parse import quote

from .download import (
    ChecksumMismatchError,
    DownloadNotAllowedError,
    MissingFileError,
    cache_dir,
    check_sha256_spec,
    describe_spec,
    downloads_allowed,
    refusal,
    sha256_file,
)

__all__ = ["hub_file_url", "hub_cache_path", "fetch_hub_file", "load_vdna_from_hub"]

HUB_ENDPOINT = "https://huggingface.co"
_REPO_TYPES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _check_repo(repo_id: str, repo_type: str) -> None:
    if repo_type not in _REPO_TYPES:
        raise ValueError(f"repo_type must be one of {sorted(_REPO_TYPES)}, got {repo_type!r}")
    parts = str(repo_id).split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}")


def _relative_parts(file_path: str):
    path = PurePosixPath(str(file_path))
    if path.is_absolute() or not path.parts or any(p in ("..", ".") for p in path.parts):
        raise ValueError(f"hub file path must be a relative path inside the repository, got {file_path!r}")
    return path.parts


def hub_endpoint() -> str:
    """``$HF_ENDPOINT`` (a mirror) when set, else https://huggingface.co; read at each call."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or HUB_ENDPOINT


def hub_file_url(repo_id: str, file_path: str, repo_type: str = "model", revision: str = "main") -> str:
    """The URL of one file of a hub repository (for messages; downloads go through huggingface_hub)."""
    _check_repo(repo_id, repo_type)
    parts = _relative_parts(file_path)
    return "/".join(
        [hub_endpoint(), _REPO_TYPES[repo_type] + repo_id, "resolve", quote(revision, safe=""),
         "/".join(quote(p) for p in parts)]
    )


def hub_cache_path(repo_id: str, file_path: str, repo_type: str = "model") -> Path:
    """Where a hub file lives in the local cache (whether or not it is there)."""
    _check_repo(repo_id, repo_type)
    owner, name = repo_id.split("/")
    return cache_dir().joinpath("hub", repo_type, owner, name, *_relative_parts(file_path))


def _hf_hub_download(what: str, dest: Path, url: str):
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ImportError(
            f"downloading {what} from the Hugging Face hub needs the optional package huggingface_hub: "
            f"pip install 'vdna[hub]' (or pip install huggingface_hub); or download {url} yourself and place "
            f"it at {dest}"
        ) from exc
    return hf_hub_download


def _hub_etag_sha256(staging: Path, file_path: str) -> Optional[str]:
    """The hub's ETag of a file downloaded into ``staging`` when it is a SHA-256 (LFS files), else None."""
    try:
        from huggingface_hub._local_folder import read_download_metadata

        meta = read_download_metadata(local_dir=staging, filename=file_path)
    except Exception:  # private API of huggingface_hub: its absence only skips this extra check
        return None
    etag = getattr(meta, "etag", None)
    return etag.lower() if isinstance(etag, str) and _SHA256_RE.fullmatch(etag.lower()) else None


def _hf_offline_mode() -> bool:
    """huggingface_hub's own offline switch (HF_HUB_OFFLINE, read when it was imported)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else getattr(constants, "HF_HUB_OFFLINE", False))


def fetch_hub_file(
    repo_id: str,
    file_path: str,
    repo_type: str = "model",
    allow_download: Optional[bool] = None,
    what: str = "hub file",
    sha256: Optional[str] = None,
    revision: str = "main",
) -> Path:
    """Return the cached path of a hub file, downloading it first when missing and allowed.

    ``sha256``: the expected digest (full, or a prefix of >= 8 hex digits), checked on the cached
    file and on a download. Raises ``DownloadNotAllowedError`` (a ``FileNotFoundError``) naming the
    URL and the exact cache path when the file is missing and network access is off,
    ``ChecksumMismatchError`` for a file with the wrong digest (a download is then discarded),
    ``MissingFileError`` when the hub has no such file, ``OSError`` for network errors.
    """
    dest = hub_cache_path(repo_id, file_path, repo_type)
    spec = check_sha256_spec(sha256)
    label = f"{what} ('{file_path}' of the hub repository '{repo_id}')"
    if dest.is_file():
        if spec is not None and not sha256_file(dest).startswith(spec):
            raise ChecksumMismatchError(
                f"cached {label} at {dest} does not have the published SHA-256 ({describe_spec(spec)}); "
                f"delete it to download it again"
            )
        return dest
    url = hub_file_url(repo_id, file_path, repo_type, revision)
    if not downloads_allowed(allow_download, hub=True):
        raise refusal(label, url, dest, allow_download, hub=True)
    hf_hub_download = _hf_hub_download(label, dest, url)
    from huggingface_hub.utils import (  # re-exported there by every huggingface_hub >= 0.20
        EntryNotFoundError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    key = hashlib.sha256(f"{repo_type}/{repo_id}/{revision}/{file_path}".encode()).hexdigest()[:16]
    staging = cache_dir() / ".partial" / "hub" / key
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    try:
        got = Path(hf_hub_download(repo_id, file_path, repo_type=repo_type, revision=revision,
                                   local_dir=staging, endpoint=endpoint))
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        if not _hf_offline_mode():  # hf_hub_download reports an unreachable hub this way too
            raise OSError(f"could not download {label} from {url}: the hub could not be reached ({exc})") from exc
        # huggingface_hub read HF_HUB_OFFLINE when it was imported: it refuses even allow_download=True.
        raise DownloadNotAllowedError(
            f"{label} is not in the cache and huggingface_hub is in offline mode (HF_HUB_OFFLINE was set when it "
            f"was imported): download {url} on a connected machine and place it at {dest}"
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as exc:
        raise MissingFileError(f"{label} was not found on the hub ({url}): {exc}") from exc
    except OSError as exc:
        raise OSError(f"could not download {label} from {url}: {exc}") from exc
    actual = sha256_file(got)
    expected = spec if spec is not None else _hub_etag_sha256(staging, file_path)
    if expected is not None and not actual.startswith(expected):
        shutil.rmtree(staging, ignore_errors=True)
        source = "the published SHA-256" if spec is not None else "the SHA-256 the hub reported"
        raise ChecksumMismatchError(
            f"download of {label} from {url} has SHA-256 {actual}, not {source} ({describe_spec(expected)}); "
            f"the file was discarded (nothing written to {dest})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(got, dest)
    except FileNotFoundError:
        if not dest.is_file():  # else another process sharing the staging folder moved it first
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return dest


def load_vdna_from_hub(
    repo_id: str,
    file_path: str,
    device: str = "cpu",
    repo_type: str = "dataset",
    allow_download: Optional[bool] = None,
):
    """Load a VDNA published on the Hugging Face hub (reference signature, plus ``allow_download``).

    ``file_path`` is the DNA's path inside the repository without extension; its ``.json`` and
    ``.npz`` files are taken from the cache, or downloaded on first use (see ``fetch_hub_file``),
    then read with ``vdna.load_vdna_from_files``.
    """
    from .files import load_vdna_from_files

    file_path = str(file_path)
    for ext in (".json", ".npz"):
        if file_path.endswith(ext):
            file_path = file_path[: -len(ext)]
    json_path = fetch_hub_file(repo_id, file_path + ".json", repo_type, allow_download, what="VDNA file")
    fetch_hub_file(repo_id, file_path + ".npz", repo_type, allow_download, what="VDNA file")
    return load_vdna_from_files(os.fspath(json_path)[: -len(".json")], device=device)
