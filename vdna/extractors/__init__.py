"""The extractor zoo: ``get_extractor(name)`` returns a frozen, eval-mode ``Extractor``.

Built-in names: see ``list_extractors()`` and ``vdna/extractors/zoo.py`` (checkpoints, cache file
names, sources). ``rand_resnet50`` works offline; the others need their checkpoint, given with
``extractor_weights=<path>``, found in the cache, or downloaded on first use (unless ``VDNA_OFFLINE=1``
or ``allow_download=False``; docs/weights.md). User-defined extractors are added with ``register_extractor``.
"""
from importlib import resources
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..download import MissingFileError, sha256_file
from .base import Extractor, ExtractorInfo, MissingRangesError, load_state_dict_strict, module_state_sha256
from .checkpoints import MissingWeightsError, read_checkpoint, resolve_weights, weights_cache_path
from .random_weights import rand_resnet50_state
from .zoo import RANGES_HUB_REPO, ZOO, ZooEntry

__all__ = [
    "Extractor",
    "ExtractorInfo",
    "MissingRangesError",
    "MissingWeightsError",
    "get_extractor",
    "get_extractor_info",
    "list_extractors",
    "register_extractor",
    "shipped_ranges_path",
    "weights_cache_path",
]

RAND_RESNET50_RANGES_FILE = "rand_resnet50_activation_ranges.json"

# name -> (builder, info, ranges); user-registered extractors
_USER: Dict[str, tuple] = {}
_GENERATION: Dict[str, int] = {}
_REGISTRATIONS = 0


def list_extractors() -> List[str]:
    """Names accepted by ``get_extractor``: the built-in ones, then the registered ones."""
    return list(ZOO) + [n for n in _USER if n not in ZOO]


def get_extractor_info(name: str) -> ExtractorInfo:
    """The ``ExtractorInfo`` of an extractor, without building it or loading weights."""
    if name in _USER:
        return _USER[name][1]
    if name in ZOO:
        return ZOO[name].info
    raise ValueError(f"unknown feature extractor {name!r}; available: {', '.join(list_extractors())}")


def register_extractor(name: str, builder: Callable[[], torch.nn.Module], info: ExtractorInfo,
                       ranges=None) -> None:
    """Register a user-defined extractor under ``name`` (replacing an earlier registration of it).

    ``builder()`` returns a ``torch.nn.Module`` that maps a normalised (N, 3, H, W) batch to a dict of
    activations with the layers, order and layouts of ``info``; ``ranges`` (optional) are its
    activation ranges in any form ``vdna.ranges.ActivationRanges.from_any`` accepts. The built
    extractor's ``weights_sha256`` is ``module_state_sha256`` of the built module (or the SHA-256 of
    the file passed as ``extractor_weights=``).
    """
    if not isinstance(info, ExtractorInfo):
        raise TypeError(f"info must be an ExtractorInfo, got {type(info).__name__}")
    if name != info.name:
        raise ValueError(f"register_extractor: name {name!r} differs from info.name {info.name!r}")
    if name in ZOO:
        raise ValueError(f"{name!r} is a built-in extractor; register yours under another name")
    if not callable(builder):
        raise TypeError("builder must be a callable returning a torch.nn.Module")
    global _REGISTRATIONS
    _USER[name] = (builder, info, ranges)
    _REGISTRATIONS += 1
    _GENERATION[name] = _REGISTRATIONS


def registration_generation(name: str) -> int:
    """A number that changes whenever ``name`` is (re-)registered (0 for built-in extractors): lets
    callers that cache built extractors (``VDNAProcessor``) notice a new registration."""
    return _GENERATION.get(name, 0)


def shipped_ranges_path() -> Path:
    """Where the activation ranges of ``rand_resnet50`` ship inside the package."""
    return Path(str(resources.files("vdna") / "data" / RAND_RESNET50_RANGES_FILE))


def get_extractor(name: str, extractor_weights=None, ranges=None, allow_download: Optional[bool] = None) -> Extractor:
    """Build extractor ``name`` in eval mode with gradients off.

    extractor_weights: checkpoint path overriding the cache/download resolution (in the publisher's
        layout, or already converted). For ``rand_resnet50`` the weights are generated unless this is given.
    ranges: activation ranges overriding the published/shipped ones (path to the reference JSON
        format, or a dict; see ``vdna.ranges``).
    allow_download: True/False forces fetching missing checkpoints/ranges on/off; None (default): on
        unless ``$VDNA_OFFLINE`` (hub files: or ``$HF_HUB_OFFLINE``) is set.
    """
    if name in _USER:
        return _build_user(name, extractor_weights, ranges)
    if name not in ZOO:
        raise ValueError(f"unknown feature extractor {name!r}; available: {', '.join(list_extractors())}")
    entry = ZOO[name]
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        net = entry.build()
    if entry.file_name is None and extractor_weights is None:
        state, digest = rand_resnet50_state()
        load_state_dict_strict(net, state, f"generated weights of '{name}'")
    else:
        if entry.file_name is None:
            path = resolve_weights(name, "", "", None, weights=extractor_weights)
        else:
            hub_file = None if entry.hub_weights is None else (RANGES_HUB_REPO, entry.hub_weights)
            path = resolve_weights(name, entry.file_name, entry.url, entry.sha256, extractor_weights, allow_download,
                                   hub_file=hub_file)
        source = f"checkpoint {path} (for '{name}')"
        load_state_dict_strict(net, entry.convert(read_checkpoint(path), source), source)
        digest = sha256_file(path)
    generated = entry.file_name is None and extractor_weights is None
    loader = _zoo_ranges_loader(entry, ranges, allow_download, generated=generated)
    return Extractor(net, entry.info, digest, loader).eval()


def _zoo_ranges_loader(entry: ZooEntry, ranges, allow_download, generated: bool):
    name = entry.info.name
    if ranges is not None:
        return lambda: ranges
    if entry.file_name is None:
        def shipped():
            if not generated:
                raise MissingRangesError(
                    f"'{name}' was built from a weights file, so its shipped activation ranges (calibrated for the "
                    f"generated weights) do not apply: pass ranges=<json> or compute them with vdna.calibrate")
            path = shipped_ranges_path()
            if not path.is_file():
                raise MissingRangesError(
                    f"the activation ranges of '{name}' are missing from this installation (expected {path}); they "
                    f"are produced by the calibration script (vdna.calibrate, an 'activation-ranges' distribution over "
                    f"the procedural calibration set). Pass ranges=<json> meanwhile")
            return path
        return shipped
    if entry.hub_ranges is None:
        def unpublished():
            raise MissingRangesError(
                f"no activation ranges were published for '{name}': compute them with vdna.calibrate (an "
                f"'activation-ranges' distribution over a fixed calibration set) and pass ranges=<json>")
        return unpublished

    def from_hub():
        from ..hub import fetch_hub_file

        try:
            return fetch_hub_file(RANGES_HUB_REPO, entry.hub_ranges, "model", allow_download,
                                  what=f"activation ranges of '{name}'")
        except MissingFileError as exc:
            raise MissingRangesError(f"{exc}; or pass ranges=<json> (e.g. from vdna.calibrate)") from exc
    return from_hub


def _build_user(name: str, weights, ranges) -> Extractor:
    builder, info, registered_ranges = _USER[name]
    net = builder()
    if not isinstance(net, torch.nn.Module):
        raise TypeError(f"the builder of extractor '{name}' returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        from .checkpoints import unwrap_state_dict

        source = f"checkpoint {weights} (for '{name}')"
        net.load_state_dict(unwrap_state_dict(read_checkpoint(weights), source), strict=True)
        digest = sha256_file(weights)
    else:
        digest = module_state_sha256(net)  # the builder's own weights
    net.requires_grad_(False)
    chosen = ranges if ranges is not None else registered_ranges
    loader = None if chosen is None else (lambda: chosen)
    return Extractor(net, info, digest, loader).eval()
