"""Files on the Hugging Face hub, fetched over plain HTTPS into vdna's cache (no ``huggingface_hub``).

A hub file ``<path>`` of repository ``<owner>/<repo>`` is cached at
``<cache_dir()>/hub/<repo_type>/<owner>/<repo>/<path>`` and downloaded, only when allowed, from
``https://huggingface.co/[datasets/|spaces/]<owner>/<repo>/resolve/<revision>/<path>``.
"""
import os
from pathlib import Path, PurePosixPath
from typing import Optional
from urllib.parse import quote

from .download import MissingFileError, cache_dir, download_file, downloads_allowed, how_to_allow

__all__ = ["hub_file_url", "hub_cache_path", "fetch_hub_file", "load_vdna_from_hub"]

HUB_ENDPOINT = "https://huggingface.co"
_REPO_TYPES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


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


def hub_file_url(repo_id: str, file_path: str, repo_type: str = "model", revision: str = "main") -> str:
    """The HTTPS URL of one file of a hub repository."""
    _check_repo(repo_id, repo_type)
    parts = _relative_parts(file_path)
    return "/".join(
        [HUB_ENDPOINT, _REPO_TYPES[repo_type] + repo_id, "resolve", quote(revision, safe=""),
         "/".join(quote(p) for p in parts)]
    )


def hub_cache_path(repo_id: str, file_path: str, repo_type: str = "model") -> Path:
    """Where a hub file lives in the local cache (whether or not it is there)."""
    _check_repo(repo_id, repo_type)
    owner, name = repo_id.split("/")
    return cache_dir().joinpath("hub", repo_type, owner, name, *_relative_parts(file_path))


def fetch_hub_file(
    repo_id: str,
    file_path: str,
    repo_type: str = "model",
    allow_download: Optional[bool] = None,
    what: str = "hub file",
) -> Path:
    """Return the cached path of a hub file, downloading it first when missing and allowed.

    Raises ``MissingFileError`` (a ``FileNotFoundError``) naming the URL and the cache path when the
    file is not cached and downloads are not allowed.
    """
    dest = hub_cache_path(repo_id, file_path, repo_type)
    if dest.is_file():
        return dest
    url = hub_file_url(repo_id, file_path, repo_type)
    if not downloads_allowed(allow_download):
        raise MissingFileError(
            f"{what} '{file_path}' of the hub repository '{repo_id}' is not in the cache and needs network "
            f"access: download {url} to {dest}, or {how_to_allow()}"
        )
    return download_file(url, dest, sha256=None, allow_download=True)


def load_vdna_from_hub(
    repo_id: str,
    file_path: str,
    device: str = "cpu",
    repo_type: str = "dataset",
    allow_download: Optional[bool] = None,
):
    """Load a VDNA published on the Hugging Face hub (reference signature, plus ``allow_download``).

    ``file_path`` is the DNA's path inside the repository without extension; its ``.json`` and
    ``.npz`` files are taken from the cache, or downloaded when allowed (``allow_download=True`` or
    ``VDNA_ALLOW_DOWNLOAD=1``), then read with ``vdna.load_vdna_from_files``.
    """
    from .files import load_vdna_from_files

    file_path = str(file_path)
    for ext in (".json", ".npz"):
        if file_path.endswith(ext):
            file_path = file_path[: -len(ext)]
    json_path = fetch_hub_file(repo_id, file_path + ".json", repo_type, allow_download, what="VDNA file")
    fetch_hub_file(repo_id, file_path + ".npz", repo_type, allow_download, what="VDNA file")
    return load_vdna_from_files(os.fspath(json_path)[: -len(".json")], device=device)
