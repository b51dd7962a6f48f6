"""Small hand-made DNAs for the API tests (built directly, independently of the Accumulator)."""
import numpy as np

from vdna.dna import get_vdna

NEURONS = {"conv.a": 3, "block_1": 5}  # a dotted layer name on purpose


def make_dna(distribution, rng, neurons=None, num_images=10, extractor="toy_net"):
    """A DNA of ``distribution`` with random but valid data."""
    neurons = dict(NEURONS if neurons is None else neurons)
    v = get_vdna(distribution)
    v.neurons_list = neurons
    v.feature_extractor_name = extractor
    v.num_images = num_images
    for layer, c in neurons.items():
        if v.type == "histogram":
            v.data[layer] = rng.integers(0, 50, size=(c, v.hist_nb_bins)).astype(np.int64)
            v.data[layer][:, 0] += 1  # never an empty histogram
        elif v.type == "gaussian":
            v.data[layer] = {"mu": rng.normal(size=c), "var": rng.uniform(0.1, 2.0, size=c)}
        elif v.type == "layer-gaussian":
            a = rng.normal(size=(c, c + 3))
            v.data[layer] = {"mu": rng.normal(size=c), "sigma": a @ a.T / (c + 3) + 0.1 * np.eye(c)}
        else:
            v.data[layer] = {"min": rng.uniform(-2.0, -0.1, size=c), "max": rng.uniform(0.1, 2.0, size=c)}
    return v


def assert_same_data(a, b):
    """Exact equality of two DNAs' data (values and layer order)."""
    assert list(a.data) == list(b.data)
    for layer in a.data:
        x, y = a.data[layer], b.data[layer]
        if isinstance(x, dict):
            assert list(x) == list(y)
            for k in x:
                np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]))
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
