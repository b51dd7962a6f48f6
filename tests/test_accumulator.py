"""Accumulator: activations -> DNA, against independent NumPy computations; merging; input types; errors.

The binning reference below re-implements docs/design.md's rule with NumPy float64 operations (the same
IEEE operations in the same order as the core, without FMA), so histogram counts must match exactly.
Moments: NumPy's two-pass mean/var/cov in float64 on O(1) data; 1e-12 relative is well above the
rounding of either method at these sizes.
"""
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import vdna
from reference_binning import neuron_values, per_image_means, reference_histogram
from vdna import Accumulator
from vdna.ranges import ActivationRanges

NEURONS = {"conv": 3, "tok": 4}
LAYOUTS = {"conv": "channels", "tok": "tokens"}
B = 11


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def ranges():
    return {"conv": (np.array([-1.0, -0.5, 0.0]), np.array([1.0, 2.0, 0.0])),
            "tok": (np.array([-2.0, -2.0, -1.0, -0.1]), np.array([2.0, 0.5, 3.0, 0.1]))}


def batch(rng, n, dtype=np.float32, spatial=(2, 3), tokens=5):
    return {"conv": (rng.normal(size=(n, NEURONS["conv"], *spatial)) * 1.5).astype(dtype),
            "tok": (rng.normal(size=(n, tokens, NEURONS["tok"])) * 1.5).astype(dtype)}


def accumulate(kind, batches, **kwargs):
    acc = Accumulator(kind, NEURONS, activation_ranges=ranges() if kind.startswith("histogram") else None,
                      layouts=LAYOUTS, feature_extractor_name="toy", **kwargs)
    for b in batches:
        acc.update(b)
    return acc


def concat(batches):
    return {l: np.concatenate([b[l] for b in batches]) for l in NEURONS}


# --------------------------------------------------------------------------------- results vs NumPy
def test_histogram_matches_numpy_binning(rng):
    batches = [batch(rng, 4), batch(rng, 3)]
    # values exactly at the range limits, beyond them, and infinities
    batches[0]["conv"][0, 1, 0, :] = [-0.5 * 1.2, 2.0 * 1.2, np.inf]
    batches[0]["tok"][1, 0, :] = [-np.inf, 100.0, 0.0, -0.1 * 1.2]
    v = accumulate(f"histogram-{B}", batches).compute()
    assert v.type == "histogram" and v.hist_nb_bins == B and v.num_images == 7
    allx = concat(batches)
    for layer in NEURONS:
        mn, mx = ranges()[layer]
        expected, _ = reference_histogram(allx[layer], mn, mx, B, LAYOUTS[layer])
        assert v.data[layer].dtype == np.int64
        np.testing.assert_array_equal(v.data[layer], expected)
    # a neuron whose calibrated range is a single point still counts every value once
    assert v.data["conv"][2].sum() == 7 * 6


def test_gaussian_matches_numpy(rng):
    batches = [batch(rng, 5, np.float64), batch(rng, 6, np.float64)]
    v = accumulate("gaussian", batches).compute()
    allx = concat(batches)
    for layer in NEURONS:
        m = per_image_means(allx[layer], LAYOUTS[layer])
        # float64 accumulation vs NumPy's float64 pairwise mean of the same values: both within n*eps64 ~ 1e-12
        # relative (n <= 10^4 values); the variance/covariance lose a further digit to cancellation (atol at eps64
        # times the matrix scale for entries near zero).
        np.testing.assert_allclose(v.data[layer]["mu"], m.mean(0), rtol=1e-12)
        np.testing.assert_allclose(v.data[layer]["var"], m.var(0, ddof=1), rtol=1e-12)


def test_layer_gaussian_matches_numpy(rng):
    batches = [batch(rng, 5, np.float64), batch(rng, 7, np.float64)]
    v = accumulate("layer-gaussian", batches).compute()
    allx = concat(batches)
    for layer in NEURONS:
        m = per_image_means(allx[layer], LAYOUTS[layer])
        np.testing.assert_allclose(v.data[layer]["mu"], m.mean(0), rtol=1e-12)
        cov = np.cov(m.T)
        np.testing.assert_allclose(v.data[layer]["sigma"], cov, rtol=1e-12, atol=1e-14 * np.abs(cov).max())


def test_activation_ranges_match_numpy(rng):
    batches = [batch(rng, 2), batch(rng, 3)]
    v = accumulate("activation-ranges", batches).compute()
    allx = concat(batches)
    for layer in NEURONS:
        vals = neuron_values(allx[layer], LAYOUTS[layer]).T
        np.testing.assert_array_equal(v.data[layer]["min"], vals.min(1))
        np.testing.assert_array_equal(v.data[layer]["max"], vals.max(1))


def test_one_image_gives_zero_variance(rng):
    v = accumulate("gaussian", [batch(rng, 1)]).compute()
    assert v.num_images == 1
    np.testing.assert_array_equal(v.data["tok"]["var"], np.zeros(4))
    lg = accumulate("layer-gaussian", [batch(rng, 1)]).compute()
    np.testing.assert_array_equal(lg.data["conv"]["sigma"], np.zeros((3, 3)))


def test_rank2_channels_is_one_sample_per_image(rng):
    acc = Accumulator("gaussian", {"fc": 3})
    x = rng.normal(size=(6, 3))
    acc.update({"fc": x})
    v = acc.compute()
    # 6 float64 values: <= 6 * eps64 relative plus cancellation; 1e-12 (see above).
    np.testing.assert_allclose(v.data["fc"]["var"], x.var(0, ddof=1), rtol=1e-12)


# --------------------------------------------------------------------------------- merging, batching
@pytest.mark.parametrize("kind", [f"histogram-{B}", "gaussian", "layer-gaussian", "activation-ranges"])
def test_merge_of_two_accumulations_equals_one_accumulation(rng, kind):
    b1, b2, b3 = batch(rng, 3), batch(rng, 4), batch(rng, 2)
    whole = accumulate(kind, [b1, b2, b3]).compute()
    left, right = accumulate(kind, [b1]), accumulate(kind, [b2, b3])
    merged_acc = left.merge(right)
    assert merged_acc is left and left.num_images == 9
    from_accs = merged_acc.compute()
    from_dnas = accumulate(kind, [b1]).compute().merge(accumulate(kind, [b2, b3]).compute())
    for merged in (from_accs, from_dnas):
        assert merged.num_images == whole.num_images == 9
        for layer in NEURONS:
            if kind.startswith("histogram"):
                np.testing.assert_array_equal(merged.data[layer], whole.data[layer])
                continue
            for key, value in whole.data[layer].items():
                if kind == "activation-ranges":
                    np.testing.assert_array_equal(merged.data[layer][key], value)
                else:
                    # Merging float64 states reorders float64 sums only: <= n*eps64 ~ 1e-12 relative (atol for zero entries).
                    np.testing.assert_allclose(merged.data[layer][key], value, rtol=1e-12, atol=1e-15)


def test_results_do_not_depend_on_batch_size(rng):
    x = batch(rng, 7)
    one = accumulate(f"histogram-{B}", [x]).compute()
    split = accumulate(f"histogram-{B}", [{l: x[l][i:i + 2] for l in NEURONS} for i in range(0, 7, 2)]).compute()
    for layer in NEURONS:
        np.testing.assert_array_equal(one.data[layer], split.data[layer])


def test_empty_batch_is_a_no_op_and_reset_forgets(rng):
    acc = accumulate("gaussian", [batch(rng, 3)])
    acc.update({l: v[:0] for l, v in batch(rng, 2).items()})
    assert acc.num_images == 3
    acc.reset()
    assert acc.num_images == 0
    with pytest.raises(ValueError, match="no images"):
        acc.compute()
    acc.update(batch(rng, 2))
    assert acc.compute().num_images == 2


def test_merge_refuses_different_accumulators(rng):
    a = accumulate(f"histogram-{B}", [])
    with pytest.raises(ValueError, match="distribution_name"):
        a.merge(accumulate("gaussian", []))
    other_ranges = ranges()
    other_ranges["conv"] = (other_ranges["conv"][0] - 1, other_ranges["conv"][1])
    b = Accumulator(f"histogram-{B}", NEURONS, activation_ranges=other_ranges, layouts=LAYOUTS,
                    feature_extractor_name="toy")
    with pytest.raises(ValueError, match="different activation ranges"):
        a.merge(b)
    with pytest.raises(ValueError, match="layouts"):
        a.merge(Accumulator(f"histogram-{B}", NEURONS, activation_ranges=ranges(), feature_extractor_name="toy"))
    with pytest.raises(TypeError):
        a.merge("x")


# ------------------------------------------------------------------------------------- input types
def test_dtypes_and_non_contiguous_inputs_agree(rng):
    x = batch(rng, 4, np.float64)
    ref = accumulate("layer-gaussian", [x]).compute()
    # a non-contiguous view with the same values
    big = {l: np.repeat(v, 2, axis=-1) for l, v in x.items()}
    view = {l: v[..., ::2] for l, v in big.items()}
    assert not view["conv"].flags.c_contiguous
    got = accumulate("layer-gaussian", [view]).compute()
    np.testing.assert_array_equal(got.data["conv"]["sigma"], ref.data["conv"]["sigma"])
    for dtype in (np.float16, np.float32, ">f8"):
        xd = {l: v.astype(dtype) for l, v in x.items()}
        got = accumulate("gaussian", [xd]).compute()
        want = accumulate("gaussian", [{l: v.astype(dtype).astype(np.float64) for l, v in x.items()}]).compute()
        # Widening to float64 is exact, so both sides sum identical float64 values; only the order may differ:
        # <= n*eps64 ~ 1e-12.
        np.testing.assert_allclose(got.data["tok"]["mu"], want.data["tok"]["mu"], rtol=1e-12)


class _Device:
    def __init__(self, kind):
        self.type = kind


class FakeTorchTensor:
    """Quacks like a torch tensor on an accelerator; records the calls the accumulator makes."""

    calls = []

    def __init__(self, array, device="cuda"):
        self._array, self.device = array, _Device(device)
        self.dtype = "torch.float32"

    def detach(self):
        FakeTorchTensor.calls.append("detach")
        return self

    def cpu(self):
        FakeTorchTensor.calls.append("cpu")
        return FakeTorchTensor(self._array, "cpu")

    def numpy(self):
        if self.device.type != "cpu":
            raise TypeError("can't convert cuda tensor to numpy")
        return self._array


FakeTorchTensor.__module__ = "torch.fake"


def test_tensor_like_inputs_are_moved_to_host_only_when_needed(rng):
    x = batch(rng, 3)
    want = accumulate("gaussian", [x]).compute()
    FakeTorchTensor.calls = []
    got = accumulate("gaussian", [{l: FakeTorchTensor(v) for l, v in x.items()}]).compute()
    assert FakeTorchTensor.calls.count("cpu") == 2
    np.testing.assert_array_equal(got.data["conv"]["mu"], want.data["conv"]["mu"])
    FakeTorchTensor.calls = []
    accumulate("gaussian", [{l: FakeTorchTensor(v, "cpu") for l, v in x.items()}])
    assert "cpu" not in FakeTorchTensor.calls


def test_real_torch_tensors(rng):
    torch = pytest.importorskip("torch")  # an optional dependency of vdna
    x = batch(rng, 3)
    want = accumulate(f"histogram-{B}", [x]).compute()
    t = {l: torch.from_numpy(v).requires_grad_(True) for l, v in x.items()}
    got = accumulate(f"histogram-{B}", [t]).compute()
    np.testing.assert_array_equal(got.data["tok"], want.data["tok"])
    bf = {l: torch.from_numpy(v).to(torch.bfloat16) for l, v in x.items()}
    exact = {l: v.to(torch.float32).numpy() for l, v in bf.items()}
    np.testing.assert_array_equal(accumulate("gaussian", [bf]).compute().data["conv"]["mu"],
                                  accumulate("gaussian", [exact]).compute().data["conv"]["mu"])


class DLPackOnly:
    """An array reachable only through DLPack (no __array__, no buffer protocol)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_and_buffer_inputs(rng):
    x = batch(rng, 3)
    want = accumulate("activation-ranges", [x]).compute()
    got = accumulate("activation-ranges", [{l: DLPackOnly(v) for l, v in x.items()}]).compute()
    np.testing.assert_array_equal(got.data["tok"]["max"], want.data["tok"]["max"])
    got = accumulate("activation-ranges", [{l: memoryview(np.ascontiguousarray(v)) for l, v in x.items()}]).compute()
    np.testing.assert_array_equal(got.data["conv"]["min"], want.data["conv"]["min"])


# -------------------------------------------------------------------------------------- bad input
def test_update_errors_name_the_problem(rng):
    acc = accumulate(f"histogram-{B}", [batch(rng, 2)])
    good = batch(rng, 2)
    with pytest.raises(ValueError, match=r"layers \['tok'\] are missing"):
        acc.update({"conv": good["conv"]})
    with pytest.raises(ValueError, match=r"unknown layers \['extra'\]"):
        acc.update({**good, "extra": good["conv"]})
    expected = r"layer 'conv' \(channels layout, 3 neurons\).*\(N, 3, \*spatial\), got \(2, 4, 2, 3\)"
    with pytest.raises(ValueError, match=expected):
        acc.update({**good, "conv": rng.normal(size=(2, 4, 2, 3))})
    with pytest.raises(ValueError, match=r"layer 'tok' \(tokens layout, 4 neurons\).*\(N, T, 4\), got \(2, 4\)"):
        acc.update({**good, "tok": rng.normal(size=(2, 4))})
    with pytest.raises(ValueError, match=r"layer 'conv'.*got \(2,\)"):
        acc.update({**good, "conv": np.zeros(2)})
    with pytest.raises(TypeError, match=r"layer 'tok'.*dtype int64"):
        acc.update({**good, "tok": np.zeros((2, 5, 4), np.int64)})
    with pytest.raises(TypeError, match=r"layer 'conv'.*dtype complex128"):
        acc.update({**good, "conv": np.zeros((2, 3), np.complex128)})
    with pytest.raises(ValueError, match=r"layer 'tok' has 3 images but layer 'conv' has 2"):
        acc.update({**good, "tok": rng.normal(size=(3, 5, 4))})
    with pytest.raises(TypeError, match="mapping"):
        acc.update([good["conv"], good["tok"]])
    # none of the bad batches changed anything
    assert acc.num_images == 2
    assert sum(acc.compute().data["conv"][0]) == 2 * 6


def test_histogram_needs_valid_ranges():
    with pytest.raises(ValueError, match="need per-neuron activation ranges.*activation-ranges"):
        Accumulator("histogram-10", NEURONS)
    bad = ranges()
    bad["tok"] = (np.array([0.0, 0.0, 2.0, 0.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"layer 'tok', neuron 2: min 2.0 > max 1.0"):
        Accumulator("histogram-10", NEURONS, activation_ranges=bad, layouts=LAYOUTS)
    bad["tok"] = (np.array([0.0, np.nan, 0.0, 0.0]), np.ones(4))
    with pytest.raises(ValueError, match=r"layer 'tok', neuron 1: min is nan"):
        Accumulator("histogram-10", NEURONS, activation_ranges=bad, layouts=LAYOUTS)
    short = ranges()
    short["conv"] = (np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="layer 'conv' have 2 neurons, the layer has 3"):
        Accumulator("histogram-10", NEURONS, activation_ranges=short, layouts=LAYOUTS)
    with pytest.raises(ValueError, match="no layer 'tok'"):
        Accumulator("histogram-10", NEURONS, activation_ranges={"conv": ranges()["conv"]})


@pytest.mark.parametrize("name", ["histogram-0", "histogram-x", "normal"])
def test_bad_distribution_names(name):
    with pytest.raises(ValueError):
        Accumulator(name, NEURONS, activation_ranges=ranges())


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        Accumulator("gaussian", {})
    with pytest.raises(ValueError, match=r"neurons_list\['a'\] must be a positive integer"):
        Accumulator("gaussian", {"a": 0})
    with pytest.raises(ValueError, match=r"layouts\['conv'\] must be 'channels' or 'tokens'"):
        Accumulator("gaussian", NEURONS, layouts={"conv": "nchw"})
    with pytest.raises(ValueError, match=r"layouts: unknown layers \['x'\]"):
        Accumulator("gaussian", NEURONS, layouts={"x": "tokens"})


def test_nan_activations_are_counted_reported_and_never_binned(rng):
    x = batch(rng, 3)
    x["conv"][0, 1, 0, :2] = np.nan
    x["tok"][2, 4, 3] = np.nan
    acc = accumulate(f"histogram-{B}", [x])
    np.testing.assert_array_equal(acc.nan_counts["conv"], [0, 2, 0])
    with pytest.warns(RuntimeWarning, match=r"NaN activations.*'conv': 2.*'tok': 1"):
        v = acc.compute()
    assert v.meta["nan_counts"] == {"conv": 2, "tok": 1}
    assert v.data["conv"][1].sum() == 3 * 6 - 2 and v.data["conv"][0].sum() == 3 * 6
    assert v.data["tok"][3].sum() == 3 * 5 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = accumulate(f"histogram-{B}", [batch(rng, 2)]).compute()
    assert clean.meta["nan_counts"] == {"conv": 0, "tok": 0}


# ------------------------------------------------------------------------------ the whole workflow
def test_calibrate_then_histogram_then_save_and_compare(tmp_path, rng):
    calib = accumulate("activation-ranges", [batch(rng, 5)]).compute()
    ranges_obj = ActivationRanges.from_any(calib)
    dnas = []
    for seed in range(2):
        acc = Accumulator("histogram-20", NEURONS, activation_ranges=calib, layouts=LAYOUTS,
                          feature_extractor_name="toy", meta={"resize_mode": "pil_bicubic"})
        acc.update(batch(np.random.default_rng(seed), 4))
        dnas.append(acc.compute())
    a = dnas[0]
    assert a.meta["activation_ranges_sha256"] == ranges_obj.checksum()
    assert a.meta["resize_mode"] == "pil_bicubic" and a.meta["layouts"] == LAYOUTS
    es = a.extraction_settings_used
    assert es.hist_nb_bins == 20 and es.normalise_feats and es.accumulate_spatial_feats_in_hist
    a.save(tmp_path / "a")
    loaded = vdna.load_vdna_from_files(tmp_path / "a")
    assert loaded.meta["activation_ranges_sha256"] == ranges_obj.checksum()
    assert vdna.EMD(loaded, dnas[1]) == vdna.EMD(a, dnas[1]) > 0


def test_accumulator_checks_survive_python_O():
    script = textwrap.dedent(
        """
        import numpy as np
        from vdna import Accumulator
        acc = Accumulator("gaussian", {"a": 2, "b": 3})
        try:
            acc.update({"a": np.zeros((1, 2))})
        except ValueError as e:
            print("OK", e)
        """
    )
    out = subprocess.run([sys.executable, "-O", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK") and "'b'" in out.stdout
