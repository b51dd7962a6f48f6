"""A summary of a DNA file: what ``vdna inspect`` shows (``vdna.describe.describe_dna``)."""
import os

from .files import OUR_KEY, _load

__all__ = ["describe_dna"]


def describe_dna(file_path) -> dict:
    """Load the DNA at ``file_path`` (with or without ".json"/".npz"; checked like every load) and
    summarise it: path, distribution name and type, extractor, image count, skipped files, NaN values,
    layers and neuron counts, file format, writer, time of compute, file sizes, image source.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for a bad one.
    """
    vdna, raw, json_path, npz_used = _load(file_path)
    ours = raw.get(OUR_KEY) if isinstance(raw.get(OUR_KEY), dict) else None
    nan_counts = {layer: int(c) for layer, c in (vdna.meta.get("nan_counts") or {}).items()}
    source = getattr(vdna.data_settings_used, "source", None)
    kind = f"histogram-{vdna.hist_nb_bins}" if vdna.type == "histogram" else vdna.type
    return {
        "path": json_path[: -len(".json")],
        "name": vdna.name,
        "type": kind,
        "extractor": vdna.feature_extractor_name,
        "num_images": int(vdna.num_images),
        "skipped_files": list(vdna.meta.get("skipped_files") or []),
        "nan_values": sum(nan_counts.values()),
        "layers": {layer: int(c) for layer, c in vdna.neurons_list.items()},
        "neurons": sum(int(c) for c in vdna.neurons_list.values()),
        "format": ("vdna format %s (readable by the reference package 0.1.1)" % ours.get("format_version"))
        if ours else "reference vdna 0.1.1 format",
        "written_by": f"vdna {raw.get('vdna_version', '?')}",
        "time_of_compute": raw.get("time_of_compute"),
        "files": {"json": os.path.getsize(json_path), "npz": os.path.getsize(npz_used)},
        "source": source if isinstance(source, str) else None,
    }
