"""``Accumulator``: the one place where activations become a DNA.

Shaped like a torchmetrics metric: ``update`` with batches of activations (any number of times),
``merge`` accumulators of disjoint image sets (shards, workers, resumed runs), ``compute`` the DNA,
``reset`` to start again. Each layer is reduced by one C-core accumulator (histogram counts,
moments, covariance or min/max), so results do not depend on batch size, thread count or merge order
(exactly for counts and ranges, to rounding for moments).

Activations are a mapping layer -> array whose first axis is images. Per layer, the layout is
``channels``: (N, C, *spatial), each of the C neurons seeing prod(spatial) values per image; or
``tokens``: (N, T, C), each neuron seeing T values per image. Accepted arrays: NumPy, anything with
the buffer protocol or ``__array__``, DLPack producers, and torch tensors (on any device: they are
copied to the host only when not already there). float16, float32 and float64 are read as they are.
"""
import copy
import warnings
from typing import Dict, Mapping, Optional, Union

import numpy as np

from ._native import _core
from .dna import (
    ACTIVATION_RANGES,
    GAUSSIAN,
    HISTOGRAM,
    LAYER_GAUSSIAN,
    META_NAN_COUNTS,
    META_RANGES_SHA256,
    VDNA,
    get_vdna,
    merge_meta,
    parse_distribution_name,
)
from .ranges import ActivationRanges
from .settings import DataSettings, ExtractionSettings

LAYOUTS = ("channels", "tokens")

_NO_RANGES_HELP = (
    "histogram DNAs need per-neuron activation ranges (they fix the bins): pass activation_ranges= "
    "an ActivationRanges, a {layer: (mins, maxs)} dict, a reference-format activation_ranges.json "
    "(path or dict), or an 'activation-ranges' DNA (compute one with distribution_name="
    "'activation-ranges' on a calibration set, or use the extractor's shipped calibration)"
)


class Accumulator:
    """Accumulate activations of many images into a DNA.

    Args:
        distribution_name: "histogram-B", "gaussian", "layer-gaussian" or "activation-ranges".
        neurons_list: {layer: neuron count}, in network order.
        activation_ranges: required for histograms (see ``vdna.ranges.ActivationRanges.from_any``).
        layouts: "channels" (default) or "tokens", for all layers or as {layer: layout}.
        feature_extractor_name: recorded in the DNA (DNAs of different extractors never compare).
        data_settings, extraction_settings: recorded in the DNA's file (reference fields).
        meta: extra metadata for the DNA (see ``VDNA.meta``).
    """

    def __init__(
        self,
        distribution_name: str,
        neurons_list: Mapping[str, int],
        activation_ranges=None,
        layouts: Union[None, str, Mapping[str, str]] = None,
        feature_extractor_name: str = "custom",
        data_settings: Optional[DataSettings] = None,
        extraction_settings: Optional[ExtractionSettings] = None,
        meta: Optional[dict] = None,
    ):
        self.distribution_name = distribution_name
        self.kind, self.bins = parse_distribution_name(distribution_name)
        self.neurons_list = _check_neurons_list(neurons_list)
        self.layouts = _check_layouts(layouts, self.neurons_list)
        self.feature_extractor_name = str(feature_extractor_name)
        self.data_settings = data_settings if data_settings is not None else DataSettings()
        self.extraction_settings = extraction_settings if extraction_settings is not None else ExtractionSettings()
        self.meta = dict(meta) if meta else {}

        self.activation_ranges: Optional[ActivationRanges] = None
        if self.kind == HISTOGRAM:
            if activation_ranges is None:
                raise ValueError(_NO_RANGES_HELP)
            self.activation_ranges = ActivationRanges.from_any(activation_ranges, self.neurons_list)
        self._accs = {layer: self._new_layer_accumulator(layer) for layer in self.neurons_list}

    def _new_layer_accumulator(self, layer: str):
        c, layout = int(self.neurons_list[layer]), self.layouts[layer]
        if self.kind == HISTOGRAM:
            mins, maxs = self.activation_ranges[layer]
            return _core.HistAccumulator(mins, maxs, self.bins, layout=layout)
        if self.kind == GAUSSIAN:
            return _core.MomentAccumulator(c, layout=layout)
        if self.kind == LAYER_GAUSSIAN:
            return _core.CovAccumulator(c, layout=layout)
        return _core.RangeAccumulator(c, layout=layout)

    # ------------------------------------------------------------------ streaming
    def update(self, activations: Mapping[str, object]) -> None:
        """Add a batch: {layer: activations of N images}; every layer of ``neurons_list``, no other.

        The whole batch is validated before any layer is updated, so a bad batch changes nothing.
        """
        if not isinstance(activations, Mapping):
            raise TypeError(f"update expects a mapping {{layer: activations}}, got {type(activations).__name__}")
        missing = [l for l in self.neurons_list if l not in activations]
        if missing:
            raise ValueError(f"update: layers {missing} are missing (every layer of neurons_list must be given)")
        unknown = [l for l in activations if l not in self.neurons_list]
        if unknown:
            raise ValueError(f"update: unknown layers {unknown}; this accumulator has {list(self.neurons_list)}")
        arrays = {}
        n_images = None
        for layer in self.neurons_list:
            x = as_host_array(activations[layer], layer)
            check_layer_shape(layer, self.layouts[layer], self.neurons_list[layer], x.shape)
            if n_images is None:
                n_images, first = x.shape[0], layer
            elif x.shape[0] != n_images:
                raise ValueError(
                    f"update: layer '{layer}' has {x.shape[0]} images but layer '{first}' has {n_images} "
                    "(the first axis is images and must agree across layers)"
                )
            arrays[layer] = x
        for layer, x in arrays.items():
            self._accs[layer].update(x)

    def merge(self, other: "Accumulator") -> "Accumulator":
        """Add ``other``'s images (a disjoint set) to this accumulator; returns ``self``."""
        if not isinstance(other, Accumulator):
            raise TypeError(f"merge expects an Accumulator, got {type(other).__name__}")
        for attr in ("distribution_name", "feature_extractor_name"):
            if getattr(self, attr) != getattr(other, attr):
                raise ValueError(f"merge: different {attr} ('{getattr(self, attr)}' and '{getattr(other, attr)}')")
        if dict(self.neurons_list) != dict(other.neurons_list):
            raise ValueError("merge: the accumulators have different neuron lists")
        if self.layouts != other.layouts:
            raise ValueError(f"merge: different layouts ({self.layouts} and {other.layouts})")
        if self.kind == HISTOGRAM and self.activation_ranges.checksum() != other.activation_ranges.checksum():
            raise ValueError("merge: the histograms were binned with different activation ranges")
        for layer in self.neurons_list:
            self._accs[layer].merge(other._accs[layer])
        self.meta = merge_meta(self.meta, other.meta)
        return self

    # ------------------------------------------------------------------ state as a value
    def state_dict(self, as_tensors: bool = False) -> dict:
        """Everything this accumulator holds, as plain values (see :mod:`vdna.accumulator_state`).

        ``as_tensors=True`` gives torch tensors instead of NumPy arrays, so that ``torch.save`` /
        ``torch.load(..., weights_only=True)`` round-trip it. The arrays are copies.
        """
        from .accumulator_state import STATE_FORMAT, STATE_VERSION, layer_state, to_tensors
        from .settings import settings_to_json

        state = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "distribution_name": self.distribution_name,
            "feature_extractor_name": self.feature_extractor_name,
            "neurons_list": dict(self.neurons_list),
            "layouts": dict(self.layouts),
            "num_images": self.num_images,
            "meta_json": _json_text(self.meta, "meta"),
            "data_settings_json": _json_text(settings_to_json(self.data_settings), "data_settings"),
            "extraction_settings_json": _json_text(settings_to_json(self.extraction_settings), "extraction_settings"),
            "layers": {layer: layer_state(self.kind, acc) for layer, acc in self._accs.items()},
        }
        return to_tensors(state) if as_tensors else state

    def load_state_dict(self, state: Mapping) -> None:
        """Replace this accumulator's images, NaN counts and meta with ``state`` (from ``state_dict``).

        The state must have this accumulator's distribution, extractor, neurons, layouts and (for
        histograms) activation ranges; anything else raises ``ValueError`` naming the difference, and
        nothing is changed unless every layer is valid.
        """
        from .accumulator_state import check_header, set_layer_state, state_array, state_int, state_json

        check_header(state, {"distribution_name": self.distribution_name,
                             "feature_extractor_name": self.feature_extractor_name,
                             "neurons_list": dict(self.neurons_list), "layouts": dict(self.layouts)})
        layers = state["layers"]
        if not isinstance(layers, Mapping) or list(layers) != list(self.neurons_list):
            got = list(layers) if isinstance(layers, Mapping) else type(layers).__name__
            raise ValueError(f"accumulator state: layers are {got}, expected {list(self.neurons_list)}")
        if self.kind == HISTOGRAM:
            for layer in self.neurons_list:
                c = (self.neurons_list[layer],)
                where = f"accumulator state, layer '{layer}'"
                mins, maxs = self.activation_ranges[layer]
                if not (np.array_equal(state_array(layers[layer], "range_mins", c, "f", where), mins)
                        and np.array_equal(state_array(layers[layer], "range_maxs", c, "f", where), maxs)):
                    raise ValueError(f"{where}: binned with other activation ranges than this accumulator's")
        num_images = state_int(state, "num_images", "accumulator state")
        meta = state_json(state, "meta_json")
        if not isinstance(meta, dict):
            raise ValueError("accumulator state: 'meta_json' must hold a JSON object")
        # Fill fresh layer accumulators first, so that a bad layer leaves this one unchanged.
        fresh = {}
        for layer in self.neurons_list:
            acc = self._new_layer_accumulator(layer)
            set_layer_state(self.kind, acc, layer, layers[layer], num_images, self.neurons_list[layer], self.bins)
            fresh[layer] = acc
        self._accs = fresh
        self.meta = meta

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "Accumulator":
        """A new accumulator holding ``state`` (settings, activation ranges and images)."""
        from .accumulator_state import check_header, state_array, state_json
        from .settings import settings_from_json

        check_header(state, {})
        name = state["distribution_name"]
        if not isinstance(name, str):
            raise ValueError("accumulator state: 'distribution_name' must be a string")
        kind, _ = parse_distribution_name(name)
        neurons = state["neurons_list"]
        if not isinstance(neurons, Mapping):
            raise ValueError("accumulator state: 'neurons_list' must be a dict {layer: neuron count}")
        neurons = {k: (int(v.item()) if hasattr(v, "item") else v) for k, v in neurons.items()}
        ranges = None
        if kind == HISTOGRAM:
            layers = state["layers"]
            if not isinstance(layers, Mapping) or any(layer not in layers for layer in neurons):
                raise ValueError(f"accumulator state: 'layers' must hold every layer of {list(neurons)}")
            ranges = {}
            for layer, c in _check_neurons_list(neurons).items():
                where = f"accumulator state, layer '{layer}'"
                ranges[layer] = (state_array(layers[layer], "range_mins", (c,), "f", where),
                                 state_array(layers[layer], "range_maxs", (c,), "f", where))
        data, extraction = state_json(state, "data_settings_json"), state_json(state, "extraction_settings_json")
        if not isinstance(data, dict) or not isinstance(extraction, dict):
            raise ValueError("accumulator state: the settings must be JSON objects")
        acc = cls(name, neurons, activation_ranges=ranges, layouts=state["layouts"],
                  feature_extractor_name=state["feature_extractor_name"],
                  data_settings=settings_from_json(DataSettings, data)[0],
                  extraction_settings=settings_from_json(ExtractionSettings, extraction)[0])
        acc.load_state_dict(state)
        return acc

    def __reduce__(self):
        # Pickling goes through the state dict (the C-core objects themselves are not picklable).
        return (Accumulator.from_state_dict, (self.state_dict(),))

    def device_specs(self) -> list:
        """What a backend must accumulate on its device for this DNA: one
        ``vdna.backends.LayerSpec`` per layer (imports torch-side code only when called)."""
        from .backends.device_accum import LayerSpec

        specs = []
        for layer, c in self.neurons_list.items():
            kw = {}
            if self.kind == HISTOGRAM:
                mins, maxs = self.activation_ranges[layer]
                kw = {"hist_mins": mins, "hist_maxs": maxs, "bins": self.bins}
            else:
                kw = {{GAUSSIAN: "moments", LAYER_GAUSSIAN: "cov"}.get(self.kind, "ranges"): True}
            specs.append(LayerSpec(layer, self.layouts[layer], c, **kw))
        return specs

    def merge_device_states(self, states: Mapping[str, object]) -> None:
        """Merge per-layer states read back from a device (``DeviceAccumulators.states()``)."""
        missing = [layer for layer in self.neurons_list if layer not in states]
        if missing:
            raise ValueError(f"device states lack layer(s) {missing}")
        role = {HISTOGRAM: "hist", GAUSSIAN: "moments", LAYER_GAUSSIAN: "cov"}.get(self.kind, "ranges")
        for layer, acc in self._accs.items():
            states[layer].merge_into(**{role: acc})

    def reset(self) -> None:
        """Forget every image (settings, ranges and meta are kept)."""
        for acc in self._accs.values():
            acc.reset()

    @property
    def num_images(self) -> int:
        """Images accumulated so far."""
        return int(next(iter(self._accs.values())).num_images)

    @property
    def nan_counts(self) -> Dict[str, np.ndarray]:
        """{layer: (C,) int64 number of NaN activation values seen per neuron}."""
        return {layer: acc.nan_counts for layer, acc in self._accs.items()}

    # ------------------------------------------------------------------ result
    def compute(self) -> VDNA:
        """The DNA of every image accumulated so far."""
        n = self.num_images
        if n == 0:
            raise ValueError("compute: no images have been accumulated (call update first)")
        vdna = get_vdna(self.distribution_name)
        vdna.num_images = n
        vdna.feature_extractor_name = self.feature_extractor_name
        vdna.neurons_list = dict(self.neurons_list)
        vdna.data_settings_used = copy.deepcopy(self.data_settings)
        vdna.extraction_settings_used = self._extraction_settings_for_kind()
        vdna.device = "cpu"
        vdna.data = {layer: self._layer_result(layer) for layer in self.neurons_list}

        nan_totals = {layer: int(np.sum(acc.nan_counts)) for layer, acc in self._accs.items()}
        meta = copy.deepcopy(self.meta)
        meta[META_NAN_COUNTS] = nan_totals
        meta.setdefault("layouts", dict(self.layouts))
        if self.kind == HISTOGRAM:
            meta[META_RANGES_SHA256] = self.activation_ranges.checksum()
        vdna.meta = meta
        if any(nan_totals.values()):
            effect = "they were not binned" if self.kind in (HISTOGRAM, ACTIVATION_RANGES) else (
                "they propagate into the means and (co)variances"
            )
            seen = {l: c for l, c in nan_totals.items() if c}
            warnings.warn(f"NaN activations seen ({effect}): {seen}", RuntimeWarning, stacklevel=2)
        return vdna

    def _layer_result(self, layer: str):
        acc = self._accs[layer]
        try:
            if self.kind == HISTOGRAM:
                return np.asarray(acc.counts, dtype=np.int64)
            if self.kind == GAUSSIAN:
                return {"mu": acc.mean, "var": acc.var}
            if self.kind == LAYER_GAUSSIAN:
                return {"mu": acc.mean, "sigma": acc.cov}
            return {"min": acc.mins, "max": acc.maxs}
        except ValueError as exc:
            raise ValueError(f"compute: layer '{layer}': {exc}") from exc

    def _extraction_settings_for_kind(self) -> ExtractionSettings:
        # Record how the reference would have described this kind of DNA.
        s = copy.deepcopy(self.extraction_settings)
        if self.kind == HISTOGRAM:
            s.accumulate_spatial_feats_in_hist = True
            s.accumulate_sample_feats_in_hist = True
            s.normalise_feats = True
            s.hist_nb_bins = self.bins
        elif self.kind in (GAUSSIAN, LAYER_GAUSSIAN):
            s.average_feats_spatially = True
        else:
            s.keep_only_min_max = True
        return s

    def __repr__(self) -> str:
        return (
            f"Accumulator('{self.distribution_name}', layers={len(self.neurons_list)}, "
            f"neurons={sum(self.neurons_list.values())}, num_images={self.num_images})"
        )


def _json_text(value, what: str) -> str:
    import json

    try:
        return json.dumps(value, allow_nan=True, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state_dict: the accumulator's {what} cannot be written as JSON ({exc})") from exc


def check_layer_shape(layer: str, layout: str, n_neurons: int, shape) -> None:
    """Raise ValueError unless activations of ``shape`` fit ``layout`` with ``n_neurons`` neurons:
    ``channels`` (N, C, *spatial) or ``tokens`` (N, T, C). The one shape rule of every accumulator
    (host and device)."""
    shape, c = tuple(int(d) for d in shape), int(n_neurons)
    if layout == "channels":
        ok, expected = len(shape) >= 2 and shape[1] == c, f"(N, {c}, *spatial)"
    else:
        ok, expected = len(shape) == 3 and shape[2] == c, f"(N, T, {c})"
    if not ok:
        raise ValueError(
            f"layer '{layer}' ({layout} layout, {c} neurons): expected activations of shape {expected}, got {shape}"
        )


def as_host_array(x, layer: str = "?") -> np.ndarray:
    """A NumPy view (or, for device tensors, a host copy) of an activation array; float16/32/64 only."""
    if not isinstance(x, np.ndarray):
        if _is_torch_tensor(x):
            x = x.detach()
            if x.device.type != "cpu":
                x = x.cpu()
            if str(x.dtype) == "torch.bfloat16":
                x = x.float()  # exact: every bfloat16 is a float32; NumPy has no bfloat16
            x = x.numpy()
        else:
            x = _to_numpy(x, layer)
    if x.dtype.kind != "f" or x.dtype.itemsize not in (2, 4, 8):  # any byte order; the core handles it
        raise TypeError(
            f"layer '{layer}': activations must be float16, float32 or float64, got dtype {x.dtype}"
        )
    return x


def _is_torch_tensor(x) -> bool:
    # No torch import: recognise tensors (and subclasses such as Parameter) by their class's package.
    return hasattr(x, "detach") and any(c.__module__.split(".")[0] == "torch" for c in type(x).__mro__)


def _to_numpy(x, layer: str) -> np.ndarray:
    if hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
        try:
            return np.from_dlpack(x)
        except Exception as exc:
            raise TypeError(
                f"layer '{layer}': cannot read the {type(x).__name__} through DLPack on the host ({exc}); "
                "copy it to host memory first"
            ) from exc
    try:
        return np.asarray(x)
    except Exception as exc:
        raise TypeError(f"layer '{layer}': cannot read activations of type {type(x).__name__} ({exc})") from exc


def _check_neurons_list(neurons_list) -> Dict[str, int]:
    if not isinstance(neurons_list, Mapping) or not neurons_list:
        raise ValueError("neurons_list must be a non-empty mapping {layer: neuron count}")
    out = {}
    for layer, count in neurons_list.items():
        if not isinstance(layer, str):
            raise TypeError(f"neurons_list: layer names must be strings, got {layer!r}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"neurons_list['{layer}'] must be a positive integer, got {count!r}")
        out[layer] = int(count)
    return out


def _check_layouts(layouts, neurons_list) -> Dict[str, str]:
    if layouts is None or isinstance(layouts, str):
        layouts = {layer: layouts or "channels" for layer in neurons_list}
    if not isinstance(layouts, Mapping):
        raise TypeError(f"layouts must be 'channels', 'tokens' or {{layer: layout}}, got {type(layouts).__name__}")
    unknown = [l for l in layouts if l not in neurons_list]
    if unknown:
        raise ValueError(f"layouts: unknown layers {unknown}")
    out = {}
    for layer in neurons_list:
        layout = layouts.get(layer, "channels")
        if layout not in LAYOUTS:
            raise ValueError(f"layouts['{layer}'] must be 'channels' or 'tokens', got {layout!r}")
        out[layer] = layout
    return out
