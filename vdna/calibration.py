"""Activation ranges of an extractor: per-neuron min and max over a calibration image set.

Histogram bins lie between 1.2·min and 1.2·max of each neuron (docs/design.md), so two histogram DNAs are
only comparable when they were binned with the same ranges. Calibrate once per extractor on a fixed
image set, keep the file, and pass it to every run (``activation_ranges=...`` or ``vdna make --ranges``).
"""
from __future__ import annotations

import json
from typing import Optional

from .atomic import write_text_atomic

ACTIVATION_RANGES = "activation-ranges"


def calibrate(source, feat_extractor_name: str = "rand_resnet50", output: Optional[str] = None, **make_vdna_kwargs):
    """The activation-ranges DNA of ``source`` for ``feat_extractor_name``.

    ``make_vdna_kwargs`` are passed to :meth:`vdna.VDNAProcessor.make_vdna` (``num_images``,
    ``batch_size``, ``device``, ``crop_to_square_pre_resize``, ...). With ``output``, the ranges are also
    written there in the reference JSON format (``{"mins_per_neuron": ..., "maxs_per_neuron": ...}``),
    atomically, ready for ``activation_ranges=output``.
    """
    from .processor import VDNAProcessor
    from .ranges import ActivationRanges

    dist = make_vdna_kwargs.pop("distribution_name", ACTIVATION_RANGES)
    if dist != ACTIVATION_RANGES:
        raise ValueError(f"calibrate makes '{ACTIVATION_RANGES}' DNAs; got distribution_name={dist!r}")
    make_vdna_kwargs.pop("activation_ranges", None)  # ranges are what is being computed
    processor = make_vdna_kwargs.pop("processor", None) or VDNAProcessor()
    vdna = processor.make_vdna(source, feat_extractor_name=feat_extractor_name,
                               distribution_name=ACTIVATION_RANGES, **make_vdna_kwargs)
    if vdna is None:  # torch.distributed with dst= naming another rank
        return None
    if int(vdna.num_images) == 0:
        raise ValueError(f"no readable image in {source!r}: cannot calibrate activation ranges")
    if output is not None:
        write_ranges_json(ActivationRanges.from_any(vdna), output)
    return vdna


def write_ranges_json(ranges, path) -> None:
    """Write activation ranges (any form ``ActivationRanges.from_any`` takes) as reference JSON, atomically."""
    from .ranges import ActivationRanges

    parsed = ActivationRanges.from_any(ranges)
    # repr-exact floats: the file must give back exactly the ranges that were measured
    write_text_atomic(path, json.dumps(parsed.to_reference_json()))
