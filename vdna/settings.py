"""Settings recorded in a DNA's JSON file.

The two dataclasses have exactly the fields and defaults of the reference package (vdna 0.1.1), because
its loader rebuilds them with ``DataSettings(**d)`` / ``ExtractionSettings(**d)`` and fails on any
other key. Anything else we want to record goes into ``VDNA.meta`` (the JSON's "vdna" key).
"""
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, List, Union

import numpy as np


@dataclass
class DataSettings:
    """Which images were used and how they were prepared."""

    source: Union[str, List[str], List[np.ndarray]] = "NotFilled"
    crop_to_square_pre_resize: str = "none"
    resize_mode: str = "clean"
    custom_fn_resize: Union[None, Callable] = None
    custom_np_image_tranform: Union[None, Callable] = None  # (sic) reference spelling
    custom_pil_image_tranform: Union[None, Callable] = None  # (sic) reference spelling
    shuffle_files: bool = True
    num_images: int = -1


@dataclass
class ExtractionSettings:
    """How activations were extracted and summarised."""

    average_feats_spatially: bool = False
    accumulate_spatial_feats_in_hist: bool = False
    accumulate_sample_feats_in_hist: bool = False
    keep_only_min_max: bool = False
    normalise_feats: bool = False
    range_scale_for_norm_params: float = 1.2
    hist_range: List[float] = field(default_factory=lambda: [-1.0, 1.0])
    hist_nb_bins: int = 0
    hist_channel_batch_size: int = 10
    num_workers: int = 12
    batch_size: int = 64
    device: str = "cuda:0"
    description: str = ""
    verbose: bool = True
    n_sample_images: int = 10
    sample_images_folder: str = "sample_images"
    seed: int = 0
    hub_repo: str = "bramtoula/visual-dna-models"


def settings_to_json(settings) -> Dict[str, Any]:
    """The settings as a JSON-ready dict, fields in declaration order (the reference's order).

    Values JSON cannot hold are written as short descriptions: a list of NumPy images becomes the
    reference's placeholder sentence, a callable its qualified name.
    """
    out = {}
    for f in fields(settings):
        out[f.name] = _jsonable_setting(getattr(settings, f.name))
    return out


def settings_from_json(cls, values: Dict[str, Any]):
    """Rebuild ``cls`` from a JSON dict; unknown keys are returned separately instead of failing."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in values.items() if k in known}
    unknown = {k: v for k, v in values.items() if k not in known}
    return cls(**kwargs), unknown


def _jsonable_setting(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, np.ndarray) for v in value):
            return "Provided NumPy Arrays - not saved in metadata"
        return [_jsonable_setting(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable_setting(v) for k, v in value.items()}
    if callable(value):
        return "callable: " + getattr(value, "__qualname__", type(value).__name__)
    if hasattr(value, "__fspath__"):
        return str(value)
    return str(value)
