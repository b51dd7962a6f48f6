"""The offline attribute image family (vdna.procedural) and the with/without DNAs made from it."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from vdna import procedural as P

sys.path.insert(0, str(Path(__file__).parent))


def test_pure_function_and_disjoint_splits():
    a = P.make_attribute_image(3, ["stripes", "disc"], seed=1, size=(40, 48))
    assert a.shape == (40, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, P.make_attribute_image(3, {"stripes": True, "disc": True, "dim": False},
                                                            seed=1, size=(40, 48)))
    assert not np.array_equal(a, P.make_attribute_image(3, ["stripes", "disc"], seed=1, split="held-out",
                                                        size=(40, 48)))
    assert not np.array_equal(a, P.make_attribute_image(3, ["stripes", "disc"], seed=2, size=(40, 48)))
    assert not np.array_equal(a, P.make_attribute_image(4, ["stripes", "disc"], seed=1, size=(40, 48)))


def test_each_attribute_is_visible_and_local_ones_change_nothing_else():
    size = (64, 64)
    plain = P.make_attribute_image(5, [], size=size).astype(int)
    for name in P.ATTRIBUTES:
        if name == "blur":
            continue  # a blur of a smooth scene changes little: measured on stripes below
        img = P.make_attribute_image(5, [name], size=size).astype(int)
        assert np.abs(img - plain).mean() > 3, name  # a person can see it: a clear mean pixel change
    # blur: the stripes' pixel-to-pixel changes (their sharpness) drop by more than half
    def sharpness(img):
        return np.abs(np.diff(img, axis=1)).mean()

    stripes = P.make_attribute_image(5, ["stripes"], size=(128, 128)).astype(int)
    blurred = P.make_attribute_image(5, ["stripes", "blur"], size=(128, 128)).astype(int)
    assert sharpness(blurred) < 0.5 * sharpness(stripes)
    # the frame only touches the border (7% of 64 = 4 pixels): the inside is the same scene
    framed = P.make_attribute_image(5, ["frame"], size=size).astype(int)
    np.testing.assert_array_equal(framed[4:-4, 4:-4], plain[4:-4, 4:-4])
    assert framed[:4].max() == 0
    # the disc's own draws do not move the stripes: stripes+disc equals stripes outside the disc
    s = P.make_attribute_image(5, ["stripes"], size=size).astype(int)
    sd = P.make_attribute_image(5, ["stripes", "disc"], size=size).astype(int)
    same = (s == sd).all(axis=2)
    assert 0.5 < same.mean() < 1.0


def test_attribute_table_is_balanced():
    t = P.attribute_table(512)
    assert t.shape == (512, 8) and t.dtype == bool
    for block in (t[:256], t[256:]):
        codes = block.astype(int) @ (1 << np.arange(8))
        assert sorted(codes) == list(range(256))  # every combination exactly once
    for s in range(0, 64, 16):
        block = t[s:s + 16]
        for cols in itertools.combinations(range(8), 3):
            codes = block[:, cols].astype(int) @ np.array([1, 2, 4])
            assert np.bincount(codes, minlength=8).tolist() == [2] * 8
    np.testing.assert_array_equal(P.attribute_table(5, start=300), t[300:305])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown attribute"):
        P.make_attribute_image(0, ["hat"])
    with pytest.raises(ValueError, match="split"):
        P.make_attribute_image(0, [], split="test")
    with pytest.raises(ValueError, match="index"):
        P.make_attribute_image(-1, [])
    with pytest.raises(ValueError, match="n and start"):
        P.attribute_table(-1)


def test_generated_image_against_a_direct_computation():
    size = (20, 27)  # neither side a multiple of the 8-pixel blocks: partial tiles at two edges
    plain = P.make_attribute_image(7, ["stripes"], size=size)
    np.testing.assert_array_equal(P.make_generated_image(7, 0.0, ["stripes"], size=size), plain)
    x = plain.astype(np.float64) / 255.0
    for strength in (0.3, 1.0):
        # reference: every tile's mean by an explicit loop, the ripple from pixel parity
        blocky = np.empty_like(x)
        for y0 in range(0, size[0], 8):
            for x0 in range(0, size[1], 8):
                blocky[y0:y0 + 8, x0:x0 + 8] = x[y0:y0 + 8, x0:x0 + 8].mean(axis=(0, 1))
        ripple = np.array([[1.0 if (i + j) % 2 == 0 else -1.0 for j in range(size[1])] for i in range(size[0])])
        b = P.GENERATOR_BLEND * strength
        want = (1 - b) * x + b * blocky + P.GENERATOR_RIPPLE * strength * ripple[..., None]
        want = np.clip(np.rint(want * 255.0), 0, 255)
        got = P.make_generated_image(7, strength, ["stripes"], size=size).astype(np.float64)
        # the tile means are summed in another order than the loop's: a value within a few ulp of a
        # rounding midpoint may round the other way, so allow 1 grey level on a few pixels
        assert np.abs(got - want).max() <= 1
        assert (got == want).mean() > 0.99
    # a pure function; more strength, further from the plain image
    a = P.make_generated_image(7, 0.5, ["stripes"], size=(64, 64))
    np.testing.assert_array_equal(a, P.make_generated_image(7, 0.5, ["stripes"], size=(64, 64)))
    plain64 = P.make_attribute_image(7, ["stripes"], size=(64, 64)).astype(int)
    gaps = [np.abs(P.make_generated_image(7, s, ["stripes"], size=(64, 64)).astype(int) - plain64).mean()
            for s in (0.0, 0.25, 0.5, 1.0)]
    assert gaps[0] == 0 and all(g1 > g0 for g0, g1 in zip(gaps, gaps[1:])), gaps
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            P.make_generated_image(0, bad)


def test_write_attribute_set(tmp_path):
    folder = P.write_attribute_set(tmp_path / "set", 4, size=(20, 20))
    rows = (folder / "attributes.csv").read_text().splitlines()
    assert rows[0] == "image," + ",".join(P.ATTRIBUTES) and len(rows) == 5
    from PIL import Image

    img = np.asarray(Image.open(folder / "img_00002.png"))
    np.testing.assert_array_equal(img, P.make_attribute_image(2, P.attribute_table(4)[2], size=(20, 20)))


def test_attribute_dnas_match_direct_accumulation():
    import tiny_extractor  # noqa: F401  (registers "tiny")
    from vdna import Accumulator, calibrate
    from vdna.customise import PairDistances, attribute_dnas

    images, table = P.make_attribute_images(32, size=(32, 32))
    ranges = calibrate(np.stack(images), "tiny", backend="eager", verbose=False)
    attrs = {"stripes": table[:, 0], "dim": table[:, 7]}
    out = attribute_dnas(images, attrs, "tiny", ["histogram-16", "gaussian"], backend="eager",
                         activation_ranges=ranges, batch_size=10)
    from vdna import VDNAProcessor

    proc = VDNAProcessor()
    for name, mask in [("dim", attrs["dim"])]:  # one attribute is enough: the code is the same for all
        idx_with, idx_without = np.flatnonzero(mask), np.flatnonzero(~mask)
        for dist in ("histogram-16", "gaussian"):
            direct = [proc.make_vdna(np.stack([images[i] for i in idx]), feat_extractor_name="tiny",
                                     distribution_name=dist, backend="eager", activation_ranges=ranges,
                                     verbose=False) for idx in (idx_with, idx_without)]
            got = out[dist][name]
            for g, d in zip(got, direct):
                assert g.num_images == d.num_images
                for layer in d.neurons_list:
                    if dist.startswith("histogram"):
                        np.testing.assert_array_equal(g.data[layer], d.data[layer])  # counts: exact
                    else:
                        # means of 16-32 per-image float32 averages, accumulated in float64 in another
                        # order: float32 rounding of the activations (2^-24 relative) dominates
                        for k in ("mu", "var"):
                            np.testing.assert_allclose(g.data[layer][k], d.data[layer][k], rtol=1e-5,  # derived above
                                                       atol=1e-6 * float(np.abs(d.data[layer][k]).max()))  # derived above
    summary = attribute_dnas(images, attrs, "tiny", "gaussian", backend="eager", as_distances=True)
    assert isinstance(summary["gaussian"]["dim"], PairDistances)
    with pytest.raises(ValueError, match="both sides"):
        attribute_dnas(images, {"all": np.ones(32, bool)}, "tiny", "gaussian", backend="eager")
    with pytest.raises(ValueError, match="32 booleans"):
        attribute_dnas(images, {"x": np.ones(3, bool)}, "tiny", "gaussian", backend="eager")
