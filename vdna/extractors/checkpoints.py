"""Finding and reading checkpoint files, without unpickling arbitrary Python objects.

Resolution order for a pretrained extractor's weights: the explicit path the caller gave, then the
cache (``<cache_dir()>/weights/<extractor name>/<original file name>``, or the hub cache for
checkpoints published on the Hugging Face hub), then a download on first use (unless network access
is off: ``VDNA_OFFLINE=1`` or ``allow_download=False``), SHA-256-checked where a digest is known.

Reading (``read_checkpoint``):

- ``*.safetensors``: ``safetensors.torch.load_file`` (needs the optional ``safetensors`` package);
- TorchScript archives (OpenAI's CLIP ``.pt`` files are ``torch.jit.save`` archives of the whole
  model): ``torch.jit.load(path, map_location="cpu").state_dict()``. This runs torch's TorchScript
  loader, which restores tensors and TorchScript code but does not unpickle arbitrary Python objects;
- anything else: ``torch.load(path, map_location="cpu", weights_only=True)``.
"""
import os
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..download import (
    ChecksumMismatchError,
    DownloadNotAllowedError,
    MissingFileError,
    cache_dir,
    describe_spec,
    download_url,
    downloads_allowed,
    refusal,
    sha256_file,
    sha256_matches,
)

__all__ = ["weights_cache_path", "resolve_weights", "read_checkpoint", "unwrap_state_dict", "strip_prefix"]


class MissingWeightsError(MissingFileError):
    """A pretrained extractor's checkpoint is neither given, cached, nor allowed to be downloaded."""


def weights_cache_path(extractor_name: str, file_name: str) -> Path:
    """Cache location of an extractor's checkpoint (whether or not it is there)."""
    return cache_dir() / "weights" / extractor_name / file_name


def resolve_weights(
    extractor_name: str,
    file_name: str,
    url: Optional[str],
    sha256: Optional[str],
    weights=None,
    allow_download: Optional[bool] = None,
    hub_file: Optional[Tuple[str, str]] = None,
) -> Path:
    """Path of the checkpoint to load: ``weights`` if given, else the cached file, else a download.

    An explicit path is used as is (fine-tuned or converted weights are allowed; the extractor's
    ``weights_sha256`` records what was loaded). A cached file must match the known checksum.
    ``hub_file = (repo_id, path)`` names checkpoints published on the Hugging Face hub: they are
    fetched with ``vdna.hub.fetch_hub_file`` (cached under ``hub/``; a copy at
    ``weights/<name>/<file_name>``, where earlier versions cached them, is used too); the others are
    downloaded from ``url`` into ``weights/<name>/<file_name>`` (``vdna.download.download_url``).
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights file for '{extractor_name}' not found: {path}")
        return path
    dest = weights_cache_path(extractor_name, file_name)
    if dest.is_file():
        if sha256 is not None and not sha256_matches(sha256_file(dest), sha256):
            raise ChecksumMismatchError(
                f"cached weights {dest} for '{extractor_name}' do not have the published SHA-256 "
                f"({describe_spec(sha256)}); delete the file to download it again, or pass it explicitly with "
                f"extractor_weights=<path>"
            )
        return dest
    what = f"the checkpoint of '{extractor_name}'"
    if hub_file is not None:
        from ..hub import fetch_hub_file

        try:
            return fetch_hub_file(hub_file[0], hub_file[1], "model", allow_download, what=what, sha256=sha256)
        except DownloadNotAllowedError as exc:
            raise MissingWeightsError(f"{exc}; or pass extractor_weights=<path>") from exc
    if not downloads_allowed(allow_download):
        raise MissingWeightsError(
            f"{refusal(what + f' ({file_name!r})', url, dest, allow_download)} (cache folder: $VDNA_HOME, "
            f"default ~/.cache/vdna); or pass extractor_weights=<path>"
        )
    return download_url(url, dest, sha256=sha256)


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    # torch.save archives hold <root>/data.pkl; TorchScript archives add <root>/constants.pkl and code/.
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names)


def read_checkpoint(path) -> object:
    """Read a checkpoint file into tensors / dicts of tensors (see the module docstring)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ImportError(f"reading {path} needs the 'safetensors' package (pip install safetensors)") from exc
        return load_file(os.fspath(path), device="cpu")
    if _is_torchscript_archive(path):
        module = torch.jit.load(os.fspath(path), map_location="cpu")
        return dict(module.state_dict())
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"could not read checkpoint {path} with torch.load(weights_only=True): {exc}. vdna never unpickles "
            f"arbitrary objects; if you trust the file, re-save only its tensors, e.g. "
            f"torch.save(torch.load(p, weights_only=False)['state_dict'], 'clean.pth')"
        ) from exc


def unwrap_state_dict(ckpt, source: str, wrappers=("state_dict", "model_state_dict", "model")) -> Dict[str, torch.Tensor]:
    """Descend through wrapper keys (the first one present, in ``wrappers`` order) to a {name: tensor} dict.

    Non-tensor entries next to the tensors (epoch counters, ...) are dropped.
    """
    for _ in range(4):
        if not isinstance(ckpt, dict):
            break
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(ckpt)
        inner = next((ckpt[w] for w in wrappers if isinstance(ckpt.get(w), dict)), None)
        if inner is None:
            break
        ckpt = inner
    if isinstance(ckpt, dict) and any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    raise ValueError(f"{source}: no state dict found (expected a dict of tensors, or one under {list(wrappers)})")


def strip_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (DataParallel's ``module.`` and the like)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}
