"""Ranking by distance: images against a reference DNA, neurons between two DNAs, per-layer breakdowns.

``rank_images`` gives every image of a source its own DNA (same extractor, distribution, bins and
activation ranges as the reference) and compares them all with the reference; the distance of one
image says how typical it is of the reference dataset (paper Sec. 5, Fig. 4). Per-image DNAs are
built from batched forward passes by resetting one :class:`vdna.Accumulator` per image, and compared in
chunks whose size is bounded in bytes, so memory does not grow with the number of images.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np

from .distances import metric_function, metric_name


def distance(a, b, use_neurons_from_layer=None, use_neuron_index=None, weights=None) -> Tuple[str, float]:
    """(metric name, value) of the distance that fits the DNAs' type."""
    name = metric_name(a)
    value = metric_function(name)(a, b, use_neurons_from_layer=use_neurons_from_layer,
                                  use_neuron_index=use_neuron_index, weights=weights)
    return name, float(value)


def layer_distances(a, b) -> Tuple[str, Dict[str, float]]:
    """(metric name, {layer: distance}) in network order."""
    name = metric_name(a)
    fn = metric_function(name)
    return name, {layer: float(fn(a, b, use_neurons_from_layer=layer)) for layer in a.neurons_list}


def neuron_distances(a, b, use_neurons_from_layer: Optional[str] = None) -> Tuple[str, Dict[str, np.ndarray]]:
    """(metric name, {layer: per-neuron distances}) (EMD for histograms, NFD for Gaussians)."""
    name = metric_name(a, neuron_wise=True)
    values = metric_function(name)(a, b, use_neurons_from_layer=use_neurons_from_layer, return_neuron_wise=True)
    return name, {layer: np.asarray(v, dtype=np.float64).reshape(-1) for layer, v in values.items()}


def rank_neurons(a, b, top_k: int = 10, use_neurons_from_layer: Optional[str] = None,
                 most_different: bool = True) -> List[Tuple[str, int, float]]:
    """The ``top_k`` neurons whose distributions differ most (or least) between two DNAs.

    Returns ``[(layer, neuron index, distance), ...]``, most different first (or least different first
    with ``most_different=False``). Ties keep network order.
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    _, values = neuron_distances(a, b, use_neurons_from_layer)
    layers = [layer for layer in values for _ in range(values[layer].shape[0])]
    index = np.concatenate([np.arange(values[layer].shape[0]) for layer in values])
    flat = np.concatenate([values[layer] for layer in values])
    order = np.argsort(-flat if most_different else flat, kind="stable")[: int(top_k)]
    return [(layers[i], int(index[i]), float(flat[i])) for i in order]


def _image_dna_bytes(reference) -> int:
    """Approximate memory of one per-image DNA of the reference's type."""
    n = sum(int(c) for c in reference.neurons_list.values())
    if reference.type == "histogram":
        return 8 * n * int(reference.hist_nb_bins)
    if reference.type == "layer-gaussian":
        return 8 * sum(int(c) * (int(c) + 1) for c in reference.neurons_list.values())
    return 16 * n


def rank_images(
    source,
    reference,
    *,
    num_images: int = -1,
    batch_size: int = 32,
    device: Optional[str] = None,
    num_workers: int = 4,
    crop_to_square_pre_resize: Optional[str] = None,
    resize_mode: Optional[str] = None,
    backend: str = "auto",
    strict: bool = False,
    extractor_weights=None,
    activation_ranges=None,
    allow_download: Optional[bool] = None,
    use_neurons_from_layer: Optional[str] = None,
    use_neuron_index: Optional[int] = None,
    neuron_weights=None,
    seed: int = 0,
    max_chunk_bytes: int = 256 * 2**20,
    verbose: bool = False,
    processor=None,
    distributed: Optional[bool] = None,
    group=None,
    feat_extractor_name: Optional[str] = None,
    distribution_name: Optional[str] = None,
) -> List[Tuple[str, float]]:
    """Distance of every image of ``source`` to the ``reference`` DNA, closest first.

    ``reference`` may also be a single image (a path to an image file, or an (H, W, 3) uint8 array):
    its DNA is made with ``feat_extractor_name`` and ``distribution_name`` (both required then) and the
    other settings given here, and the ranking is an image-to-image retrieval (paper Fig. 6; with
    ``neuron_weights`` selecting the neurons that see an attribute).

    Each image gets a DNA of the reference's kind (extractor, distribution and bins, activation
    ranges); the distance is EMD for histograms, NFD for Gaussians, FD for layer-Gaussians (whose
    per-image covariance is zero). ``crop_to_square_pre_resize`` and ``resize_mode`` default to the
    settings recorded in the reference. ``extractor_weights``/``activation_ranges``/``allow_download`` locate the
    extractor's assets as in ``make_vdna``; ``neuron_weights`` weights neurons in the distance (paper
    Eq. 5). Unreadable images are skipped with a warning (or raise with ``strict=True``).

    Returns ``[(image name, distance), ...]`` sorted by increasing distance (ties keep source order).
    Under ``torch.distributed`` (``distributed`` / ``group`` as in ``make_vdna``) each rank scores its
    share of the images and every rank returns the ranking of all of them.
    """
    from . import distances_to
    from .dna import VDNA
    from .processor import VDNAProcessor, accumulator_for, resolve_device, source_batches
    from .sources import open_source

    if not isinstance(reference, VDNA):
        processor = processor if processor is not None else VDNAProcessor()
        reference = _single_image_dna(reference, processor, feat_extractor_name, distribution_name, dict(
            device=device, crop_to_square_pre_resize=crop_to_square_pre_resize or "none",
            resize_mode=resize_mode or "clean", backend=backend, extractor_weights=extractor_weights,
            activation_ranges=activation_ranges, allow_download=allow_download))
    elif feat_extractor_name is not None or distribution_name is not None:
        raise ValueError("feat_extractor_name and distribution_name are for a single-image reference; a reference "
                         "DNA carries its own")
    metric = metric_name(reference)  # rejects activation-range references early
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if crop_to_square_pre_resize is None:
        crop_to_square_pre_resize = getattr(reference.data_settings_used, "crop_to_square_pre_resize", "none")
    if resize_mode is None:
        resize_mode = reference.meta.get("resize_mode") or getattr(reference.data_settings_used, "resize_mode", "clean")
    distribution = f"histogram-{reference.hist_nb_bins}" if reference.type == "histogram" else reference.type

    proc = processor if processor is not None else VDNAProcessor()
    dev = resolve_device(device)
    extractor = proc.get_extractor(reference.feature_extractor_name, extractor_weights=extractor_weights,
                                   allow_download=allow_download)
    be = proc.get_backend(extractor, dev, backend)
    info = extractor.info
    if dict(info.neurons_per_layer) != dict(reference.neurons_list):
        raise ValueError(
            f"the reference DNA's neurons do not match extractor '{info.name}' (was it made with another "
            "version of the extractor?)"
        )
    acc = accumulator_for(extractor, distribution, activation_ranges)

    src = open_source(source, num_images=num_images, shuffle=False, seed=seed)
    from .distributed import context as dist_context

    ctx = dist_context(distributed, group)
    start, stop = (0, len(src)) if ctx is None else ctx.shard(len(src))
    verbose = bool(verbose) and (ctx is None or ctx.rank == 0)
    chunk = max(1, int(max_chunk_bytes) // max(1, _image_dna_bytes(reference)))
    names: List[str] = []
    scores: List[np.ndarray] = []
    pending: list = []
    skipped: list = []

    def flush():
        if pending:
            scores.append(np.asarray(distances_to(reference, pending, use_neurons_from_layer=use_neurons_from_layer,
                                                  use_neuron_index=use_neuron_index, weights=neuron_weights),
                                     dtype=np.float64).reshape(-1))
            pending.clear()

    import torch

    from .distributed import ranks_agree

    with ranks_agree(ctx):  # under torch.distributed a failing rank reports to the others, none is left waiting
        for batch in source_batches(src, info, int(batch_size), num_workers, crop_to_square_pre_resize, resize_mode,
                                    seed, strict, verbose, desc=f"vdna rank ({metric})", start=start, stop=stop):
            skipped.extend(batch.skipped)
            if len(batch.names):
                acts = be.forward(torch.from_numpy(batch.images))
                for i, name in enumerate(batch.names):
                    acc.reset()
                    acc.update({layer: a[i:i + 1] for layer, a in acts.items()})
                    pending.append(acc.compute())
                    names.append(str(name))
                    if len(pending) >= chunk:
                        flush()
        flush()
    if ctx is not None:  # every rank's (names, scores, skipped), in rank order = source order
        from .distributed import all_gather_json

        local = [names, [float(v) for s in scores for v in s], [list(x) for x in skipped]]
        everyone = all_gather_json(ctx, local)
        names = [n for r in everyone for n in r[0]]
        scores = [np.asarray([v for r in everyone for v in r[1]], dtype=np.float64)]
        skipped = [tuple(x) for r in everyone for x in r[2]]
    if skipped:
        warnings.warn(f"{len(skipped)} unreadable image(s) were skipped and not ranked, e.g. "
                      f"{skipped[0][0]}: {skipped[0][1]}", stacklevel=2)
    if not names:
        raise ValueError("no readable image to rank in the source")
    values = np.concatenate(scores) if scores else np.zeros(0)
    order = np.argsort(values, kind="stable")
    return [(names[i], float(values[i])) for i in order]


def _single_image_dna(image, processor, extractor: Optional[str], distribution: Optional[str], kwargs: dict):
    """The DNA of one reference image (a path or an (H, W, 3) array)."""
    import os

    if extractor is None or distribution is None:
        raise ValueError("a single-image reference needs feat_extractor_name= and distribution_name= (the DNA "
                         "settings to compare with); or pass a reference DNA")
    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise ValueError(f"reference image not found (or not a file): {image}")
        source = os.fspath(image)
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"a reference image must be an (H, W, 3) array or an image path; got shape {arr.shape}")
        source = arr[None]
    v = processor.make_vdna(source, feat_extractor_name=extractor, distribution_name=distribution, verbose=False,
                            num_workers=1, strict=True, **kwargs)
    if int(v.num_images) != 1:
        raise ValueError(f"the reference image gave {v.num_images} images; expected exactly one")
    return v
