"""Backends on the CPU device: LibTorch shim vs eager PyTorch vs the C core vs a NumPy reference.

The shim is built once per test session into a temporary cache (see ``shim_dirs``); both backends
run the same small extractor defined here (channels, rank-2 and tokens layers, and a pass-through
layer so that tests can place NaN, Inf and bin-edge values in the activations directly).
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reference_binning import per_image_means, reference_histogram
from vdna._native import _core
from vdna.backends import BackendFallbackWarning, LayerSpec, get_backend
from vdna.backends import build as build_mod
from vdna.backends.device_accum import normalisation_constants
from vdna.backends.eager import EagerBackend
from vdna.backends.libtorch import LibTorchBackend

SIZE = 16


class ToyExtractor(torch.nn.Module):
    """A small extractor with the interface of vdna.extractors (dict outputs, .info)."""

    def __init__(self, seed=0, name="toy_backends"):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 6, 3, stride=2)
        self.conv2 = torch.nn.Conv2d(6, 5, 3, stride=2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.info = SimpleNamespace(name=name, neurons_per_layer={"pix": 3, "conv1": 6, "pooled": 6, "tokens": 5},
                                    layouts={"pix": "channels", "conv1": "channels", "pooled": "channels",
                                             "tokens": "tokens"},
                                    input_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.weights_sha256 = None

    def forward(self, x):
        pix = x * 1.0  # the input itself: tests control these activations exactly
        a = torch.relu(self.conv1((x / 255.0 - 0.5) / 0.25))
        b = self.conv2(a)
        return {"pix": pix, "conv1": a, "pooled": a.mean((2, 3)), "tokens": b.flatten(2).transpose(1, 2)}


@pytest.fixture(scope="session")
def shim_dirs(tmp_path_factory):
    """(shim cache, TorchScript cache) shared by the session: the shim compiles once."""
    base = tmp_path_factory.getbasetemp()
    build_mod.build_shim(base / "vdna-shim", quiet=True)
    return {"cache_dir": base / "vdna-shim", "torchscript_dir": base / "vdna-torchscript"}


@pytest.fixture(scope="module")
def backends(shim_dirs):
    model = ToyExtractor()
    lt = get_backend(model, backend="libtorch", **shim_dirs)
    eg = get_backend(model, backend="eager")
    yield lt, eg
    lt.close()


def images(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) + torch.rand(x.shape, generator=g).to(dtype) * 0.5


def special_images():
    """Images with NaN, +-Inf and values one float32 ulp around histogram edges of PIX_RANGE."""
    x = images(3, 7)
    centre, half = normalisation_constants(PIX_MINS, PIX_MAXS)
    edges = (np.arange(BINS + 1) * 2.0 / BINS - 1.0)[None, :] * half[:, None] + centre[:, None]  # (3, B+1)
    for ch in range(3):
        e = edges[ch].astype(np.float32)
        vals = np.concatenate([e, np.nextafter(e, np.float32(np.inf)), np.nextafter(e, np.float32(-np.inf))])
        flat = x[1, ch].view(-1)
        flat[: vals.size] = torch.from_numpy(vals)
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), float("-inf"), float("nan")])
    x[2, 2, 3, 3] = float("nan")
    x[2, 1, :2, :2] = 1e30  # far outside the range: clamps to the last bin
    return x


PIX_MINS = np.array([0.0, 10.0, -50.0])
PIX_MAXS = np.array([255.0, 200.0, 300.0])
BINS = 7


def all_specs(ranges):
    """Specs with every statistic for each toy layer; ranges: layer -> (mins, maxs)."""
    m = ToyExtractor().info
    return [LayerSpec(layer, m.layouts[layer], m.neurons_per_layer[layer], ranges[layer][0], ranges[layer][1],
                      BINS, moments=True, cov=True, ranges=True) for layer in m.layouts]


def calibrated_ranges(backend, x):
    out = backend.forward(x)
    r = {}
    for layer, a in out.items():
        a = np.asarray(a, dtype=np.float64)
        axes = (0, 2, 3) if a.ndim == 4 else (0,) if a.ndim == 2 else (0, 1)
        r[layer] = (np.nanmin(a, axis=axes), np.nanmax(a, axis=axes))
    r["pix"] = (PIX_MINS, PIX_MAXS)
    return r


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_forward_libtorch_equals_eager(backends, dtype):
    lt, eg = backends
    x = images(3, 1, dtype)
    got, ref = lt.forward(x), eg.forward(x)
    assert list(got) == list(ref) == ["pix", "conv1", "pooled", "tokens"]
    for layer in ref:
        np.testing.assert_array_equal(got[layer], ref[layer].numpy(), err_msg=layer)


def test_forward_hands_views_without_copy(backends):
    lt, _ = backends
    out = lt.forward(images(2, 2))
    for layer, a in out.items():
        assert isinstance(a, np.ndarray) and not a.flags.owndata and not a.flags.writeable, layer
    # The tokens layer is a transposed view in the shim: handed over with its strides, not copied.
    assert not out["tokens"].flags.c_contiguous
    # Views alias the shim's output tensors: the next batch is written elsewhere, the view stays put.
    assert out["tokens"].strides == (4 * 5 * 9, 4, 4 * 9)


@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_cpu_forward_runs_in_heap_forward_scope(backends, which, monkeypatch):
    # vdna/heap.py: the network's allocations on the CPU come from the reused heap (tests/test_heap.py)
    import contextlib

    from vdna import heap

    entered = []

    @contextlib.contextmanager
    def scope():
        entered.append(which)
        yield

    monkeypatch.setattr(heap, "forward_scope", scope)
    backend = backends[0] if which == "libtorch" else backends[1]
    backend.forward(images(2, 3))
    assert entered == [which]


def test_forward_rejects_bad_batches(backends):
    for b in backends:
        with pytest.raises(ValueError, match=r"\(N>=1, 3, H, W\)"):
            b.forward(torch.zeros(2, 4, SIZE, SIZE))
        with pytest.raises(TypeError, match="float64"):
            b.forward(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.float64))


# ---------------------------------------------------------------- device accumulation


def run_device(backend, specs, batches):
    acc = backend.device_accumulators(specs)
    for x in batches:
        acc.update(x)
    states = acc.states()
    acc.close()
    return states


@pytest.fixture(scope="module")
def scenario(backends):
    lt, eg = backends
    batches = [special_images(), images(1, 11), images(4, 12)]
    specs = all_specs(calibrated_ranges(eg, images(4, 10)))
    acts = [eg.forward(x) for x in batches]
    host = {layer: np.concatenate([a[layer].numpy() for a in acts]) for layer in acts[0]}
    return specs, batches, host


@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_device_accumulation_matches_numpy_reference(backends, scenario, which):
    specs, batches, host = scenario
    backend = backends[0] if which == "libtorch" else backends[1]
    states = run_device(backend, specs, batches)
    for spec in specs:
        st, a = states[spec.layer], host[spec.layer]
        counts, nans = reference_histogram(a, spec.hist_mins, spec.hist_maxs, BINS, spec.layout)
        np.testing.assert_array_equal(st.hist_counts, counts, err_msg=spec.layer)
        np.testing.assert_array_equal(st.hist_nan_counts, nans, err_msg=spec.layer)
        assert st.num_images == a.shape[0] == 8
        # ranges: NaN ignored, Inf kept
        flat = np.moveaxis(per_layout(a, spec.layout), 1, 0).reshape(spec.n_neurons, -1).astype(np.float64)
        np.testing.assert_array_equal(st.ranges[1], np.nanmin(flat, axis=1))
        np.testing.assert_array_equal(st.ranges[2], np.nanmax(flat, axis=1))
        np.testing.assert_array_equal(st.range_nan_counts, np.isnan(flat).sum(1))
        if spec.layer == "pix":
            continue  # NaN/Inf make its moments NaN; checked separately below
        m = per_image_means(a, spec.layout)
        # float64 accumulation of <= 10^4 values (activations are exact float32 values widened): Welford/pairwise
        # sums err by <= n*eps64 ~ 1e4 * 1.1e-16 ~ 1e-12 relative of the sum of |terms|; the variance and the
        # covariance lose one further digit to cancellation (mean subtraction), hence 1e-11 with an absolute floor
        # at eps64-scale for entries near zero. Identical on every CPU: no float32 step differs between them.
        np.testing.assert_allclose(st.moments[1], m.mean(0), rtol=1e-12)
        np.testing.assert_allclose(st.moments[2], ((m - m.mean(0)) ** 2).sum(0), rtol=1e-12)
        np.testing.assert_allclose(st.cov[1], m.mean(0), rtol=1e-12)
        np.testing.assert_allclose(st.cov[2] / (m.shape[0] - 1), np.cov(m, rowvar=False), rtol=1e-11, atol=1e-14)
    # The pass-through layer saw NaN and Inf: they propagate into the moments (IEEE), never crash.
    assert np.isnan(states["pix"].moments[1]).any()
    # Special values really were present: NaN counted, Inf in the ranges, edges straddled.
    assert states["pix"].hist_nan_counts.tolist() == [2, 0, 1]
    assert states["pix"].ranges[2][0] == np.inf and states["pix"].ranges[1][0] == -np.inf


def per_layout(a, layout):
    """(N, C, S) for either layout."""
    return a.reshape(a.shape[0], a.shape[1], -1) if layout == "channels" else np.swapaxes(a, 1, 2)


def test_libtorch_and_eager_device_states_identical(backends, scenario):
    specs, batches, _ = scenario
    s_lt, s_eg = (run_device(b, specs, batches) for b in backends)
    for spec in specs:
        a, b = s_lt[spec.layer], s_eg[spec.layer]
        np.testing.assert_array_equal(a.hist_counts, b.hist_counts)
        np.testing.assert_array_equal(a.ranges[1], b.ranges[1])
        np.testing.assert_array_equal(a.ranges[2], b.ranges[2])
        for x, y in ((a.moments, b.moments), (a.cov, b.cov)):
            assert x[0] == y[0]
            # Same float64 inputs in another merge order: <= n*eps64 ~ 1e-12 relative (see above).
            np.testing.assert_allclose(x[1], y[1], rtol=1e-12)
            np.testing.assert_allclose(x[2], y[2], rtol=1e-12)


def test_device_state_independent_of_batching(backends):
    lt, eg = backends
    # Only the pass-through layer: a convolution's float32 result may depend on the batch size.
    x = images(6, 21)
    specs = [s for s in all_specs(calibrated_ranges(eg, x)) if s.layer == "pix"]
    one = run_device(lt, specs, [x])
    split = run_device(lt, specs, [x[:1], x[1:4], x[4:]])
    for spec in specs:
        np.testing.assert_array_equal(one[spec.layer].hist_counts, split[spec.layer].hist_counts)
        # Splitting into batches only changes the float64 merge order (Chan et al. update): <= n*eps64 ~ 1e-12,
        # one digit more for the covariance's cancellation (see the first moments test above).
        np.testing.assert_allclose(one[spec.layer].moments[2], split[spec.layer].moments[2], rtol=1e-12)
        np.testing.assert_allclose(one[spec.layer].cov[2], split[spec.layer].cov[2], rtol=1e-11, atol=1e-12)


class OffsetExtractor(torch.nn.Module):
    """Per-image features with a mean of 1e8 and a spread of ~1: naive sum/sum-of-squares fails."""

    def __init__(self):
        super().__init__()
        self.info = SimpleNamespace(name="offset", input_size=4)
        self.weights_sha256 = "0" * 64

    def forward(self, x):
        return {"f": x.double().mean((2, 3)) / 255.0 + 1e8}


@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_covariance_stable_with_large_mean(shim_dirs, which):
    backend = get_backend(OffsetExtractor(), backend=which, **(shim_dirs if which == "libtorch" else {}))
    g = torch.Generator().manual_seed(3)
    batches = [torch.rand((5, 3, 4, 4), generator=g) * 255 for _ in range(3)]
    states = run_device(backend, [LayerSpec("f", "channels", 3, cov=True, moments=True)], batches)
    f = np.concatenate([x.double().mean((2, 3)).numpy() / 255.0 + 1e8 for x in batches])
    st = states["f"]
    # Values ~1e8 with spread ~1: the activations are float32 (eps32 * 1e8 = 6: rounded to multiples of 8),
    # so the reference is computed from the same float32-rounded means; what remains is float64 cancellation
    # in the centred sums: 1e8 * eps64 / var ~ 1e8 * 1.1e-16 / 0.08 ~ 1.4e-7 relative per term, hence 1e-6.
    # A naive E[x^2] - E[x]^2 loses everything here (1e16 * eps64 ~ 1).
    np.testing.assert_allclose(st.cov[2] / 14, np.cov(f - 1e8, rowvar=False), rtol=1e-6)  # derived above
    np.testing.assert_allclose(st.moments[2] / 14, np.var(f - 1e8, axis=0, ddof=1), rtol=1e-6)  # derived above
    backend.close()


def test_device_accumulation_rejects_wrong_layers(backends):
    for b in backends:
        acc = b.device_accumulators([LayerSpec("nope", "channels", 3, moments=True)])
        with pytest.raises(ValueError, match="nope"):
            acc.update(images(1, 0))
        acc.close()
        acc = b.device_accumulators([LayerSpec("conv1", "channels", 4, moments=True)])
        with pytest.raises(ValueError, match=r"conv1.*\(N, 4, (\.\.\.|\*spatial)\).*\(1, 6, 7, 7\)"):
            acc.update(images(1, 0))
        acc.close()


def test_layer_spec_validates_ranges():
    with pytest.raises(ValueError, match="neuron 1"):
        LayerSpec("l", "channels", 2, np.array([0.0, np.nan]), np.array([1.0, 1.0]), 4)
    with pytest.raises(ValueError, match="neuron 0"):
        LayerSpec("l", "channels", 2, np.array([2.0, 0.0]), np.array([1.0, 1.0]), 4)
    with pytest.raises(ValueError, match="bins"):
        LayerSpec("l", "channels", 2, np.zeros(2), np.ones(2), 0)
    with pytest.raises(ValueError, match="layout"):
        LayerSpec("l", "spatial", 2)


# ---------------------------------------------------------------- against the C core


def core_accumulators(spec):
    return dict(hist=_core.HistAccumulator(spec.hist_mins, spec.hist_maxs, BINS, layout=spec.layout),
                moments=_core.MomentAccumulator(spec.n_neurons, layout=spec.layout),
                cov=_core.CovAccumulator(spec.n_neurons, layout=spec.layout),
                ranges=_core.RangeAccumulator(spec.n_neurons, layout=spec.layout))


@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_device_states_merge_into_core_like_host_accumulation(backends, scenario, which):
    specs, batches, _ = scenario
    backend = backends[0] if which == "libtorch" else backends[1]
    extra = images(2, 99)
    # Host: the C core accumulates every batch's forward() output, handed over without copies.
    host = {s.layer: core_accumulators(s) for s in specs}
    for x in batches + [extra]:
        out = backend.forward(x)
        for s in specs:
            for acc in host[s.layer].values():
                acc.update(out[s.layer])
    # Device: the same batches on the device, merged into core accumulators that already hold `extra`.
    states = run_device(backend, specs, batches)
    merged = {s.layer: core_accumulators(s) for s in specs}
    out = backend.forward(extra)
    for s in specs:
        for acc in merged[s.layer].values():
            acc.update(out[s.layer])
        states[s.layer].merge_into(**merged[s.layer])
    for s in specs:
        h, m = host[s.layer], merged[s.layer]
        np.testing.assert_array_equal(m["hist"].counts, h["hist"].counts, err_msg=s.layer)
        np.testing.assert_array_equal(m["hist"].nan_counts, h["hist"].nan_counts)
        assert m["hist"].num_images == h["hist"].num_images == 10
        np.testing.assert_array_equal(m["ranges"].mins, h["ranges"].mins)
        np.testing.assert_array_equal(m["ranges"].maxs, h["ranges"].maxs)
        if s.layer == "pix":
            continue
        np.testing.assert_allclose(m["moments"].mean, h["moments"].mean, rtol=1e-12)
        np.testing.assert_allclose(m["moments"].var, h["moments"].var, rtol=1e-12)
        np.testing.assert_allclose(m["cov"].mean, h["cov"].mean, rtol=1e-12)
        np.testing.assert_allclose(m["cov"].cov, h["cov"].cov, rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------- selection and fallback


def test_get_backend_choices(backends, shim_dirs, monkeypatch):
    lt, eg = backends
    assert isinstance(lt, LibTorchBackend) and lt.name == "libtorch"
    assert isinstance(eg, EagerBackend) and eg.name == "eager"
    assert isinstance(get_backend(ToyExtractor(), backend="auto", **shim_dirs), LibTorchBackend)
    with pytest.raises(ValueError, match="backend must be one of"):
        get_backend(ToyExtractor(), backend="tensorrt")


def test_auto_falls_back_to_eager_with_one_warning(monkeypatch, tmp_path):
    import vdna.backends as backends_pkg
    import vdna.backends.libtorch as libtorch_mod

    def no_compiler(*args, **kwargs):
        raise build_mod.ShimBuildError("no C++ compiler found (set CXX or install g++ / clang++)")

    monkeypatch.setattr(libtorch_mod, "build_shim", no_compiler)
    monkeypatch.setattr(backends_pkg, "_warned", False)
    with pytest.warns(BackendFallbackWarning, match="no C\\+\\+ compiler"):
        b = get_backend(ToyExtractor(), backend="auto", cache_dir=tmp_path)
    assert isinstance(b, EagerBackend)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(get_backend(ToyExtractor(), backend="auto", cache_dir=tmp_path), EagerBackend)
    with pytest.raises(build_mod.ShimBuildError, match="no C\\+\\+ compiler"):
        get_backend(ToyExtractor(), backend="libtorch", cache_dir=tmp_path)


def test_failing_compiler_gives_build_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.raises(build_mod.ShimBuildError, match="compiling the shim failed"):
        build_mod.build_shim(tmp_path, quiet=True)
    assert not list(tmp_path.rglob("*.so"))


@pytest.mark.parametrize("which", ["libtorch", "eager"])
def test_bf16_forward_is_an_option(shim_dirs, which):
    model = ToyExtractor()
    b16 = get_backend(model, backend=which, amp_dtype="bf16", **(shim_dirs if which == "libtorch" else {}))
    b32 = get_backend(model, backend="eager")
    x = images(2, 5)
    got, ref = b16.forward(x), b32.forward(x)
    a, r = np.asarray(got["conv1"]), ref["conv1"].numpy()
    assert a.dtype == np.float32  # bfloat16 is widened for the core
    # bfloat16 keeps 8 significant bits (eps = 2^-8 = 0.0039) for inputs, weights and the 27-term conv
    # reduction's partial results: ~sqrt(27) * 0.0039 ~ 2% of the output scale, so 5%; a missing cast or
    # missing normalisation is off by O(1).
    np.testing.assert_allclose(a, r, atol=0.05 * np.abs(r).max())
    assert not np.array_equal(a, r)  # the option really changed the precision
    b16.close()
