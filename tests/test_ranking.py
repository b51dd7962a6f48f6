"""rank_images / rank_neurons against distances computed here with NumPy from the network's own activations."""
import warnings

import numpy as np
import pytest
import torch

import tiny_extractor
import vdna
from dna_factory import make_dna
from reference_binning import reference_histogram
from vdna.calibration import calibrate
from vdna.procedural import write_image_set
from vdna.ranking import layer_distances, metric_name, rank_images, rank_neurons

N = 5
BINS = 16
EAGER = dict(backend="eager", device="cpu", num_workers=1, batch_size=4)


def emd_numpy(h1, h2):
    p = h1 / h1.sum(axis=-1, keepdims=True)
    q = h2 / h2.sum(axis=-1, keepdims=True)
    return np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)).sum(axis=-1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rank")
    ref_dir = write_image_set(root / "base", N, seed=0, style="base", size=(32, 32))
    close = sorted(write_image_set(root / "close", 3, seed=0, style="close", size=(32, 32)).glob("*.png"))
    shifted = sorted(write_image_set(root / "shifted", 3, seed=0, style="shifted", size=(32, 32)).glob("*.png"))
    candidates = [str(p) for p in close + shifted]
    proc = vdna.VDNAProcessor()
    ranges = calibrate(str(ref_dir), "tiny", output=root / "ranges.json", processor=proc, verbose=False,
                            **{k: v for k, v in EAGER.items()})
    kw = dict(feat_extractor_name="tiny", verbose=False, activation_ranges=str(root / "ranges.json"), **EAGER)
    refs = {d: proc.make_vdna(str(ref_dir), distribution_name=d, **kw)
            for d in (f"histogram-{BINS}", "gaussian", "layer-gaussian")}
    return dict(root=root, candidates=candidates, proc=proc, ranges=ranges, refs=refs)


def activations(paths):
    from PIL import Image

    x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in paths]).transpose(0, 3, 1, 2)
    with torch.no_grad():
        out = tiny_extractor.TinyNet()((torch.from_numpy(x) / 255.0 - 0.5) / 0.25)
    return {k: v.numpy().astype(np.float64) for k, v in out.items()}


def test_calibrate_writes_exact_reference_json(setup):
    from vdna.ranges import ActivationRanges

    v = setup["ranges"]
    assert v.type == "activation-ranges" and v.num_images == N
    back = ActivationRanges.from_json_file(setup["root"] / "ranges.json")
    for layer in v.neurons_list:
        np.testing.assert_array_equal(back.mins[layer], v.data[layer]["min"])  # exact round trip
        np.testing.assert_array_equal(back.maxs[layer], v.data[layer]["max"])
    with pytest.raises(ValueError, match="activation-ranges"):
        calibrate(setup["candidates"], "tiny", distribution_name="gaussian")


def test_histogram_ranking_matches_numpy(setup):
    ref = setup["refs"][f"histogram-{BINS}"]
    ranking = rank_images(setup["candidates"], ref, processor=setup["proc"],
                          activation_ranges=str(setup["root"] / "ranges.json"), **EAGER)
    assert sorted(n for n, _ in ranking) == sorted(setup["candidates"])
    assert [d for _, d in ranking] == sorted(d for _, d in ranking)
    acts = activations(setup["candidates"])
    expected = {}
    for i, name in enumerate(setup["candidates"]):
        per_neuron = []
        for layer, a in acts.items():
            lo, hi = setup["ranges"].data[layer]["min"], setup["ranges"].data[layer]["max"]
            counts, _ = reference_histogram(a[i:i + 1], lo, hi, BINS)
            per_neuron.append(emd_numpy(ref.data[layer].astype(np.float64), counts.astype(np.float64)))
        expected[name] = np.concatenate(per_neuron).mean()
    for name, d in ranking:
        # activations computed here may differ from the backend's in the last float32 bit; a value moving
        # across a bin edge changes one neuron's EMD by at most 1/225 bins, i.e. the mean by < 1e-3
        assert d == pytest.approx(expected[name], abs=1e-3)


def test_ranking_independent_of_batching_and_chunks(setup):
    ref = setup["refs"][f"histogram-{BINS}"]
    common = dict(processor=setup["proc"], activation_ranges=str(setup["root"] / "ranges.json"), backend="eager",
                  device="cpu", num_workers=1)
    a = rank_images(setup["candidates"], ref, batch_size=4, **common)
    b = rank_images(setup["candidates"], ref, batch_size=1, max_chunk_bytes=1, **common)
    assert a == b


def test_gaussian_and_layer_gaussian_rankings(setup):
    acts = activations(setup["candidates"])
    means = {layer: a.mean(axis=(2, 3)) for layer, a in acts.items()}  # per-image neuron means
    ref = setup["refs"]["gaussian"]
    ranking = dict(rank_images(setup["candidates"], ref, processor=setup["proc"], **EAGER))
    for i, name in enumerate(setup["candidates"]):
        # one image: variance 0, so NFD = (mu - m)^2 + var_ref
        nfd = np.concatenate([(means[l][i] - ref.data[l]["mu"]) ** 2 + ref.data[l]["var"] for l in means])
        # The reference means here come from a separate float32 forward (batch 1 vs the ranker's batches, so
        # possibly another conv summation order, ~sqrt(K)*eps32 ~ 3e-7 relative per activation); (mu - m)^2
        # can amplify that by |mu|/|mu - m| (up to ~100x for close images): 1e-4 relative, absolute 1e-9 near 0.
        assert ranking[name] == pytest.approx(nfd.mean(), rel=1e-4, abs=1e-9)
    ref = setup["refs"]["layer-gaussian"]
    ranking = dict(rank_images(setup["candidates"], ref, processor=setup["proc"], **EAGER))
    for i, name in enumerate(setup["candidates"]):
        # zero covariance: FD = |mu - m|^2 + tr(Sigma_ref), mean over layers
        fd = [np.sum((means[l][i] - ref.data[l]["mu"]) ** 2) + np.trace(ref.data[l]["sigma"]) for l in means]
        assert ranking[name] == pytest.approx(np.mean(fd), rel=1e-4, abs=1e-9)


def test_layer_selection(setup):
    ref = setup["refs"][f"histogram-{BINS}"]
    common = dict(processor=setup["proc"], activation_ranges=str(setup["root"] / "ranges.json"), **EAGER)
    whole = dict(rank_images(setup["candidates"], ref, **common))
    conv2 = dict(rank_images(setup["candidates"], ref, use_neurons_from_layer="conv2", **common))
    neuron = dict(rank_images(setup["candidates"], ref, use_neurons_from_layer="conv2", use_neuron_index=1, **common))
    w = np.full(10, 0.1)
    weighted = dict(rank_images(setup["candidates"], ref, neuron_weights=w, **common))
    for name in whole:
        assert weighted[name] == pytest.approx(whole[name], rel=1e-12)  # equal weights 1/10 = the mean
        assert conv2[name] != whole[name] and neuron[name] != conv2[name]


def test_skipped_and_errors(setup, tmp_path):
    ref = setup["refs"][f"histogram-{BINS}"]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    common = dict(processor=setup["proc"], activation_ranges=str(setup["root"] / "ranges.json"), **EAGER)
    with pytest.warns(UserWarning, match="skipped"):
        ranking = rank_images(setup["candidates"][:2] + [str(bad)], ref, **common)
    assert len(ranking) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no readable image|could be read"):
            rank_images([str(bad)], ref, **common)
    with pytest.raises(Exception, match="bad.png"):
        rank_images([str(bad)], ref, strict=True, **common)
    with pytest.raises(ValueError, match="activation-ranges"):
        rank_images(setup["candidates"], setup["ranges"], **common)
    other = make_dna("gaussian", np.random.default_rng(0), extractor="tiny")  # tiny's name, other neurons
    with pytest.raises(ValueError, match="neurons"):
        rank_images(setup["candidates"], other, **common)


def test_rank_neurons_and_layer_distances():
    rng = np.random.default_rng(5)
    a, b = make_dna("histogram-8", rng), make_dna("histogram-8", rng)
    flat = {(l, i): e for l in a.neurons_list for i, e in enumerate(emd_numpy(a.data[l] * 1.0, b.data[l] * 1.0))}
    top = rank_neurons(a, b, 3)
    assert [(l, i) for l, i, _ in top] == sorted(flat, key=lambda k: -flat[k])[:3]
    for l, i, d in top:
        # float64 EMD of the same histograms computed twice (by neuron, then by layer): summation order only.
        assert d == pytest.approx(flat[(l, i)], rel=1e-12)
    low = rank_neurons(a, b, 2, most_different=False)
    assert [(l, i) for l, i, _ in low] == sorted(flat, key=lambda k: flat[k])[:2]
    only = rank_neurons(a, b, 100, use_neurons_from_layer="conv.a")
    assert len(only) == 3 and {l for l, _, _ in only} == {"conv.a"}
    # ties keep network order
    tie = rank_neurons(a, a, 4)
    assert [(l, i) for l, i, _ in tie] == [("conv.a", 0), ("conv.a", 1), ("conv.a", 2), ("block_1", 0)]
    with pytest.raises(ValueError, match="top_k"):
        rank_neurons(a, b, 0)

    name, per_layer = layer_distances(a, b)
    assert name == "EMD" and list(per_layer) == list(a.neurons_list)
    for l, v in per_layer.items():
        assert v == pytest.approx(emd_numpy(a.data[l] * 1.0, b.data[l] * 1.0).mean(), rel=1e-12)
    assert metric_name(make_dna("layer-gaussian", rng)) == "FD"
    assert metric_name(make_dna("layer-gaussian", rng), neuron_wise=True) == "NFD"
