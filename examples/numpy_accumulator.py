"""Build DNAs from activations computed anywhere (JAX, TensorFlow, ONNX Runtime...) with plain NumPy.

    python examples/numpy_accumulator.py [--save my_dna]

vdna.Accumulator takes {layer: array} batches: (N, C, *spatial) arrays in the "channels" layout or
(N, T, C) in the "tokens" layout (ViT-like). Here random NumPy arrays stand in for another
framework's activations of two datasets; no torch involved.
"""
import argparse

import numpy as np

from vdna import EMD, NFD, Accumulator

NEURONS = {"conv": 8, "tokens": 16}
LAYOUTS = {"conv": "channels", "tokens": "tokens"}


def fake_batches(shift, n_batches=5, batch=10, seed=0):
    """Stand-in for a model's outputs: yields {layer: activations} per batch."""
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        yield {
            "conv": np.maximum(rng.normal(shift, 1.0, size=(batch, 8, 7, 7)), 0).astype(np.float32),
            "tokens": rng.normal(shift, 1.0, size=(batch, 50, 16)).astype(np.float32),
        }


def dna(distribution, shift, ranges=None, seed=0):
    acc = Accumulator(distribution, NEURONS, activation_ranges=ranges, layouts=LAYOUTS,
                      feature_extractor_name="my_jax_model")
    for activations in fake_batches(shift, seed=seed):
        acc.update(activations)
    return acc.compute()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", default=None, help="save the first DNA (PATH.json + PATH.npz)")
    args = parser.parse_args(argv)
    # Histogram bins need fixed per-neuron ranges: measure them once on calibration data.
    ranges_dna = dna("activation-ranges", 0.0, seed=99)
    ranges = {layer: (d["min"], d["max"]) for layer, d in ranges_dna.data.items()}

    a = dna("histogram-200", 0.0, ranges, seed=1)
    b = dna("histogram-200", 0.0, ranges, seed=2)   # same distribution, other samples
    c = dna("histogram-200", 0.5, ranges, seed=3)   # shifted activations
    print(f"EMD same distribution: {float(EMD(a, b)):.4f}   shifted: {float(EMD(a, c)):.4f}")

    ga, gc = dna("gaussian", 0.0, seed=1), dna("gaussian", 0.5, seed=3)
    print(f"NFD shifted: {float(NFD(ga, gc)):.4f} (per layer: "
          + ", ".join(f"{l} {float(NFD(ga, gc, use_neurons_from_layer=l)):.4f}" for l in NEURONS) + ")")
    if args.save:
        a.save(args.save)  # readable by `vdna inspect PATH`
        print(f"saved {args.save}.json and {args.save}.npz")


if __name__ == "__main__":
    main()
