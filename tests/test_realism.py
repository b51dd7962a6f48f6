"""Realism ranking with a few neurons (paper Fig. 7): neurons selected by their sensitivity to real vs
generated images rank held-out generated images by their distance to the real images' DNA.

benchmarks/bench_realism.py measures this on rand_resnet50. This test runs the same loop on a tiny
extractor with one neuron of known behaviour (neuron 0 of "pixels" is a 2x2 checkerboard detector,
which sees the generator's period-2 ripple; neurons 1-7 are seeded random 2x2 filters that mostly see
the scene). The loop must select that neuron and order the images by artefact strength: Spearman's
rho >= 0.8, and higher than with all neurons. Every input is deterministic (pure-function images, a
seeded network), so the rankings are the same on every run.
"""
import numpy as np
import pytest
import torch

import vdna
from vdna import NeuronWeights, procedural as P
from vdna.customise import attribute_dnas
from vdna.extractors import ExtractorInfo, register_extractor

NAME = "ripple_probe"
SIZE = (48, 48)
DIST = "histogram-32"
INFO = ExtractorInfo(name=NAME, neurons_per_layer={"pixels": 8}, layouts={"pixels": "channels"}, input_size=SIZE,
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


class RippleProbe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pixels = torch.nn.Conv2d(3, 8, 2)
        w = np.random.default_rng(5).standard_normal((8, 3, 2, 2)) * 0.3
        w[0] = np.array([[1.0, -1.0], [-1.0, 1.0]]) / 3.0  # the same checkerboard kernel on R, G and B
        with torch.no_grad():
            self.pixels.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            self.pixels.bias.zero_()

    def forward(self, x):
        return {"pixels": self.pixels(x)}


register_extractor(NAME, RippleProbe, INFO)


def _generated(n, start, split, seed):
    strengths = np.random.default_rng(seed).uniform(0.0, 1.0, n)
    table = P.attribute_table(n, start)
    return [P.make_generated_image(start + i, s, row, split=split, size=SIZE)
            for i, (s, row) in enumerate(zip(strengths, table))], strengths


def _spearman(x, y):
    # strengths are continuous draws and distances sums of floats: no ties, so ranks are argsort positions
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


@pytest.fixture(scope="module")
def setup():
    real, _ = P.make_attribute_images(48, split="train", size=SIZE)
    fake, _ = _generated(48, 48, "train", 0)
    ranges = vdna.calibrate(np.stack(real + fake), NAME, backend="eager", verbose=False)
    masks = {"generated": np.r_[np.zeros(48, bool), np.ones(48, bool)]}
    for s in (0, 1):
        half = np.zeros(96, bool)
        half[np.random.default_rng(s).permutation(96)[:48]] = True
        masks[f"split{s}"] = half
    pairs = attribute_dnas(real + fake, masks, NAME, DIST, backend="eager", activation_ranges=ranges)[DIST]
    held_real, _ = P.make_attribute_images(32, split="held-out", size=SIZE)
    reference = vdna.VDNAProcessor().make_vdna(np.stack(held_real), feat_extractor_name=NAME, distribution_name=DIST,
                                               backend="eager", activation_ranges=ranges, verbose=False)
    held_fake, strengths = _generated(32, 32, "held-out", 1)
    return dict(pairs=pairs, reference=reference, held=np.stack(held_fake), strengths=strengths, ranges=ranges)


def _rho(setup, weights):
    ranking = vdna.rank_images(setup["held"], setup["reference"], neuron_weights=weights, backend="eager",
                               activation_ranges=setup["ranges"], num_workers=1)
    order = np.array([int(name[len("array["):-1]) for name, _ in ranking])  # most realistic first
    dist = np.empty(len(order))
    dist[order] = [score for _, score in ranking]
    return _spearman(dist, setup["strengths"])


def test_selected_neurons_rank_generated_images_by_realism(setup):
    pairs = setup["pairs"]
    scores = vdna.sensitivity([pairs["generated"]], baseline=[pairs["split0"], pairs["split1"]])
    selected = NeuronWeights.top_k(scores, 1, like=setup["reference"])
    assert selected.to_dict()["pixels"][0] == 1.0  # the checkerboard detector, found from the data
    rho_selected, rho_all = _rho(setup, selected), _rho(setup, None)
    assert rho_selected >= 0.8 and rho_selected > rho_all, (rho_selected, rho_all)
