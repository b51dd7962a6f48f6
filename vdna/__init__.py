"""Visual DNA: compare images and image datasets neuron by neuron.

``import vdna`` needs only NumPy and the compiled core; ``VDNAProcessor`` (which needs torch) and
``load_vdna_from_hub`` are imported on first use.
"""
from .accumulator import Accumulator
from .customise import choose_learning_settings, evaluate_weights, learn_weights, sensitivity, sensitivity_deviation
from .distances import EMD, FD, NFD, distances_to
from .dna import VDNA, get_vdna
from .files import load_vdna_from_files
from .neuron_weights import NeuronWeights
from .ranges import ActivationRanges
from .results import get_result_type, set_result_type
from .version import __version__

_LAZY = {
    "VDNAProcessor": ("vdna.processor", "VDNAProcessor"),
    "load_vdna_from_hub": ("vdna.hub", "load_vdna_from_hub"),
    "calibrate": ("vdna.calibration", "calibrate"),
    "rank_images": ("vdna.ranking", "rank_images"),
    "SubsetAccumulator": ("vdna.stability", "SubsetAccumulator"),
    "StabilityCurve": ("vdna.stability", "StabilityCurve"),
    "rank_datasets": ("vdna.transfer", "rank_datasets"),
    "ranking_discrepancy": ("vdna.transfer", "ranking_discrepancy"),
    "random_ranking_discrepancy": ("vdna.transfer", "random_ranking_discrepancy"),
}

__all__ = [
    "VDNA",
    "EMD",
    "NFD",
    "FD",
    "load_vdna_from_files",
    "load_vdna_from_hub",
    "Accumulator",
    "ActivationRanges",
    "distances_to",
    "get_vdna",
    "VDNAProcessor",
    "calibrate",
    "rank_images",
    "set_result_type",
    "get_result_type",
    "SubsetAccumulator",
    "StabilityCurve",
    "rank_datasets",
    "ranking_discrepancy",
    "random_ranking_discrepancy",
    "NeuronWeights",
    "sensitivity",
    "sensitivity_deviation",
    "learn_weights",
    "choose_learning_settings",
    "evaluate_weights",
    "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'vdna' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
