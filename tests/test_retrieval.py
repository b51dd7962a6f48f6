"""Retrieval with a few neurons (paper Fig. 6): neurons selected by their sensitivity to an attribute on
training images rank held-out images against a single reference image that has it.

The issue's bound (precision@10 >= 0.9) is for the notebook on a real extractor; this test runs the same
loop on the "probe" extractor (tests/probe_extractor.py, 16 neurons, 48x48) at a looser bound: the
selected neurons' precision@10 >= 0.8, and higher than all neurons'. Every input is deterministic (pure
function images, a seeded network), so the rankings are the same on every run.
"""
import numpy as np
import pytest

import probe_extractor  # noqa: F401  (registers "probe")
import vdna
from vdna import NeuronWeights, procedural as P
from vdna.customise import attribute_dnas

SIZE = (48, 48)
DIST = "histogram-32"


@pytest.fixture(scope="module")
def setup():
    train, t_table = P.make_attribute_images(64, size=SIZE)
    held, h_table = P.make_attribute_images(32, split="held-out", size=SIZE)
    ranges = vdna.calibrate(np.stack(train), "probe", backend="eager", verbose=False)
    pairs = attribute_dnas(train, {"warm": t_table[:, P.ATTRIBUTES.index("warm")]}, "probe", DIST, backend="eager",
                           activation_ranges=ranges)[DIST]
    return dict(train=train, t_table=t_table, held=np.stack(held), h_table=h_table, ranges=ranges, pairs=pairs)


def precision_at_10(setup, weights, reference):
    ranking = vdna.rank_images(setup["held"], reference, neuron_weights=weights, feat_extractor_name="probe",
                               distribution_name=DIST, backend="eager", activation_ranges=setup["ranges"],
                               num_workers=1)
    top = [int(name[len("array["):-1]) for name, _ in ranking[:10]]  # array sources name images "array[i]"
    return float(np.mean(setup["h_table"][top, P.ATTRIBUTES.index("warm")]))


def test_selected_neurons_retrieve_the_attribute(setup):
    col = P.ATTRIBUTES.index("warm")
    assert setup["h_table"][:, col].sum() == 16  # half of the held-out images have it
    pair = setup["pairs"]["warm"]
    scores = vdna.sensitivity([pair])
    selected = NeuronWeights.top_k(scores, 1, like=pair[0])
    reference = setup["train"][int(np.flatnonzero(setup["t_table"][:, col])[0])]  # one training image, warm
    p_sel = precision_at_10(setup, selected, reference)
    p_all = precision_at_10(setup, None, reference)
    assert p_sel >= 0.8 and p_sel > p_all, (p_sel, p_all)


def test_single_image_reference_equals_its_dna(setup):
    image = setup["train"][0]
    ref_dna = vdna.VDNAProcessor().make_vdna(image[None], feat_extractor_name="probe", distribution_name=DIST,
                                             backend="eager", activation_ranges=setup["ranges"], verbose=False)
    a = vdna.rank_images(setup["held"][:6], image, feat_extractor_name="probe", distribution_name=DIST,
                         backend="eager", activation_ranges=setup["ranges"], num_workers=1)
    b = vdna.rank_images(setup["held"][:6], ref_dna, backend="eager", activation_ranges=setup["ranges"],
                         num_workers=1)
    assert a == b
    with pytest.raises(ValueError, match="feat_extractor_name"):
        vdna.rank_images(setup["held"][:2], image, backend="eager")
    with pytest.raises(ValueError, match="single-image reference"):
        vdna.rank_images(setup["held"][:2], ref_dna, feat_extractor_name="probe", backend="eager")
    with pytest.raises(ValueError, match="not found"):
        vdna.rank_images(setup["held"][:2], "/no/such/image.png", feat_extractor_name="probe",
                         distribution_name=DIST, backend="eager")
