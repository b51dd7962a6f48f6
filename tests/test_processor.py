"""VDNAProcessor.make_vdna and the streaming form, end to end on small generated images."""
import warnings

import numpy as np
import pytest

import vdna
from vdna import procedural
from vdna.processor import VDNAProcessor

from reference_binning import reference_histogram
import tiny_extractor  # noqa: F401  (registers the "tiny" extractor: 32x32 input, two conv layers)

TINY = tiny_extractor.NAME


@pytest.fixture(scope="module")
def proc():
    return VDNAProcessor()


@pytest.fixture(scope="module")
def images():
    return procedural.make_images(10, seed=5, style="base", size=(40, 48))


@pytest.fixture(scope="module")
def folder(tmp_path_factory, images):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    for i, im in enumerate(images):
        Image.fromarray(im).save(d / f"im_{i:02d}.png")
    return d


@pytest.fixture(scope="module")
def tiny_ranges(proc, images):
    return vdna.calibrate(images, TINY, processor=proc, device="cpu", verbose=False, backend="eager")


def make(proc, source, **kw):
    kw.setdefault("feat_extractor_name", TINY)
    kw.setdefault("device", "cpu")
    kw.setdefault("verbose", False)
    kw.setdefault("backend", "eager")
    return proc.make_vdna(source, **kw)


def test_histogram_counts_match_direct_accumulation(proc, images, tiny_ranges):
    """Independent path: resize + forward by hand, then NumPy histograms with docs/design.md's formula."""
    import torch

    from vdna.extractors import get_extractor
    from vdna.sources import resize_image

    v = make(proc, images, distribution_name="histogram-16", activation_ranges=tiny_ranges)
    ext = get_extractor(TINY)
    batch = np.stack([resize_image(im, (32, 32), "clean") for im in images]).astype(np.float32)
    if batch.shape[-1] == 3:
        batch = batch.transpose(0, 3, 1, 2)
    with torch.no_grad():
        acts = ext(torch.from_numpy(np.ascontiguousarray(batch)))
    ranges = vdna.ActivationRanges.from_any(tiny_ranges)
    for layer, a in acts.items():
        mins, maxs = ranges[layer]
        expected, _ = reference_histogram(a.numpy(), mins, maxs, 16)
        np.testing.assert_array_equal(v.data[layer], expected)
    assert v.num_images == len(images)
    assert v.feature_extractor_name == TINY


def test_files_and_arrays_give_identical_dnas(proc, images, folder, tiny_ranges):
    a = make(proc, images, distribution_name="histogram-32", activation_ranges=tiny_ranges)
    b = make(proc, str(folder), distribution_name="histogram-32", activation_ranges=tiny_ranges)
    for layer in a.data:
        np.testing.assert_array_equal(a.data[layer], b.data[layer])


@pytest.mark.parametrize("num_workers", [0, 1, 3])
def test_num_workers_do_not_change_counts(proc, folder, tiny_ranges, num_workers):
    ref = make(proc, str(folder), distribution_name="histogram-50", activation_ranges=tiny_ranges, batch_size=4,
               num_workers=2)
    v = make(proc, str(folder), distribution_name="histogram-50", activation_ranges=tiny_ranges, batch_size=4,
             num_workers=num_workers)
    for layer in ref.data:
        np.testing.assert_array_equal(v.data[layer], ref.data[layer])


def test_batch_size_does_not_change_counts_with_rand_resnet50(proc):
    """Our pipeline adds no batch dependence; ResNet-50's CPU forward is batch-invariant too (PyTorch's
    kernels for tiny convolutions are not always: that is why this uses the real default extractor)."""
    imgs = procedural.make_images(5, seed=11, style="shifted", size=(64, 80))
    kw = dict(feat_extractor_name="rand_resnet50", distribution_name="histogram-1000", device="cpu",
              verbose=False, backend="eager")
    ref = proc.make_vdna(imgs, batch_size=5, **kw)
    for bs in (1, 2):
        v = proc.make_vdna(imgs, batch_size=bs, **kw)
        for layer in ref.data:
            np.testing.assert_array_equal(v.data[layer], ref.data[layer])


def test_two_runs_are_bit_identical_and_shuffle_subset_is_seeded(proc, folder, tiny_ranges):
    kw = dict(distribution_name="histogram-20", activation_ranges=tiny_ranges, num_images=4, shuffle_files=True)
    a = make(proc, str(folder), seed=3, **kw)
    b = make(proc, str(folder), seed=3, **kw)
    c = make(proc, str(folder), seed=4, **kw)
    assert a.num_images == b.num_images == 4
    for layer in a.data:
        np.testing.assert_array_equal(a.data[layer], b.data[layer])
    assert any(not np.array_equal(a.data[layer], c.data[layer]) for layer in a.data)


@pytest.mark.parametrize("distribution", ["histogram-24", "gaussian", "layer-gaussian", "activation-ranges"])
def test_device_accumulation_path_equals_host_accumulation(proc, images, tiny_ranges, distribution):
    """The accelerator path (reduce on the device, read back once), run on the CPU device."""
    ranges = tiny_ranges if distribution.startswith("histogram") else None
    host = make(proc, images, distribution_name=distribution, activation_ranges=ranges, batch_size=4)
    s = proc.stream(TINY, distribution, device="cpu", batch_size=4, backend="eager", activation_ranges=ranges,
                    device_accumulation=True)
    s.update(np.stack(images[:3]))
    s.update(np.stack(images[3:]))
    dev = s.compute()
    assert dev.num_images == host.num_images
    for layer in host.data:
        h, d = host.data[layer], dev.data[layer]
        if isinstance(h, dict):
            for k in h:
                # Device vs host accumulation: the same float32 activations reduced in float64 in other orders (torch vs the
                # core): <= n*eps64 ~ 1e-12 relative, one digit more for the covariance's cancellation.
                np.testing.assert_allclose(d[k], h[k], rtol=1e-11, atol=1e-13)
        else:
            np.testing.assert_array_equal(d, h)


def test_stream_equals_make_vdna_whatever_the_split(proc, images, tiny_ranges):
    ref = make(proc, images, distribution_name="histogram-40", activation_ranges=tiny_ranges)
    s = proc.stream(TINY, "histogram-40", device="cpu", batch_size=3, backend="eager", activation_ranges=tiny_ranges)
    s.update(np.stack(images[:1]))
    s.update(np.stack(images[1:7]))
    s.update([images[7], images[8], images[9]])
    v = s.compute()
    assert v.num_images == 10
    for layer in ref.data:
        np.testing.assert_array_equal(v.data[layer], ref.data[layer])


def test_stream_accepts_float_tensors_in_unit_range(proc, images):
    import torch

    s1 = proc.stream(TINY, "gaussian", device="cpu", backend="eager")
    s1.update(np.stack(images))
    s2 = proc.stream(TINY, "gaussian", device="cpu", backend="eager")
    s2.update(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0)
    a, b = s1.compute(), s2.compute()
    for layer in a.data:
        # uint8 -> float32 / 255 -> * 255 is not the identity in float32 (<= 1 ulp per pixel, 6e-8 relative);
        # the error passes through a 27-term float32 conv (sqrt(27)*eps32 ~ 3e-7) and a few layers: 1e-5 relative
        # on per-neuron means is generous; feeding 0..1 floats unscaled would be off by x255.
        np.testing.assert_allclose(b.data[layer]["mu"], a.data[layer]["mu"], rtol=1e-5)  # derived above


def test_corrupt_image_is_skipped_recorded_and_strict_raises(proc, folder, tmp_path, tiny_ranges):
    import shutil

    from vdna.sources import ImageReadError

    d = tmp_path / "mixed"
    shutil.copytree(folder, d)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v = make(proc, str(d), distribution_name="gaussian")
    assert v.num_images == 10
    assert [s["name"] for s in v.meta["skipped_files"]] == [str(d / "broken.png")]
    assert any("broken.png" in str(w.message) for w in caught)
    v.save(tmp_path / "dna")
    w = vdna.load_vdna_from_files(tmp_path / "dna")
    assert w.meta["skipped_files"] == v.meta["skipped_files"]
    with pytest.raises(ImageReadError, match="broken.png"):
        make(proc, str(d), distribution_name="gaussian", strict=True)


def test_errors_before_any_work(proc, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises((ValueError, FileNotFoundError), match="empty"):
        make(proc, str(tmp_path / "empty"), distribution_name="gaussian")
    with pytest.raises(FileNotFoundError):
        make(proc, str(tmp_path / "missing"), distribution_name="gaussian")
    with pytest.raises(ValueError, match="crop_to_square_pre_resize"):
        make(proc, str(tmp_path), distribution_name="gaussian", crop_to_square_pre_resize="middle")
    with pytest.raises(ValueError, match="histogram"):
        make(proc, str(tmp_path), distribution_name="histogram-x")
    with pytest.raises(ValueError, match="batch_size"):
        make(proc, str(tmp_path), distribution_name="gaussian", batch_size=0)


def test_histogram_without_ranges_explains_how_to_get_them(proc, images):
    with pytest.raises(Exception, match="(?i)calibrat"):
        make(proc, images, distribution_name="histogram-10")


def test_sample_images_and_settings_recorded(proc, images, tmp_path):
    v = make(proc, images, distribution_name="gaussian", save_sample_images=tmp_path / "samples", n_sample_images=3,
             crop_to_square_pre_resize="center", num_workers=2)
    saved = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert saved == ["0.png", "1.png", "2.png"]
    assert v.data_settings_used.crop_to_square_pre_resize == "center"
    assert v.extraction_settings_used.num_workers == 2
    assert v.meta["resize_mode"] == "clean"
    assert v.meta["backend"] == "eager"
    assert v.device == "cpu"


def test_default_device_is_cpu_without_cuda():
    from vdna.processor import resolve_device

    import torch

    assert resolve_device(None) == ("cuda:0" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_rand_resnet50_shipped_ranges_cover_a_calibration_subset(proc):
    """The shipped ranges were calibrated on scripts/calibrate_rand_resnet50.py's set: the ranges of any
    subset of that set lie inside them (exactly: min/max are order-independent)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "calib", Path(__file__).resolve().parents[1] / "scripts" / "calibrate_rand_resnet50.py")
    calib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calib)
    subset = calib.calibration_images(n_per_style=1)
    sub = proc.make_vdna(subset, feat_extractor_name="rand_resnet50", distribution_name="activation-ranges",
                         device="cpu", verbose=False, backend="eager", batch_size=3)
    shipped = vdna.ActivationRanges.from_json_file(Path(vdna.__file__).parent / "data" /
                                                   "rand_resnet50_activation_ranges.json")
    # Not exact across machines: the shipped file was calibrated on one CPU, and float32 convolutions run
    # different SIMD kernels (AVX2 / AVX-512 / NEON) that sum their up-to-4608-term reductions in different
    # orders. The per-layer difference is ~sqrt(K)*eps32 ~ 70 * 6e-8 ~ 4e-6 relative and compounds over the
    # ~50 layers, so the slack is 1e-3 of the layer's largest |range| (measured excess: ~1e-6 relative).
    # A set outside the calibration set exceeds the ranges by whole percent, which this still catches.
    for layer in sub.neurons_list:
        mins, maxs = shipped[layer]
        slack = 1e-3 * max(np.abs(mins).max(), np.abs(maxs).max())
        assert np.all(sub.data[layer]["min"] >= mins - slack), layer
        assert np.all(sub.data[layer]["max"] <= maxs + slack), layer
    # and a histogram DNA with the default offline extractor works out of the box
    h = proc.make_vdna(subset[:2], feat_extractor_name="rand_resnet50", distribution_name="histogram-100",
                       device="cpu", verbose=False, backend="eager")
    assert sum(h.neurons_list.values()) == 15104
    assert int(h.data["layer4_2"].sum()) == 2 * 2048 * 49


def test_re_registering_an_extractor_is_seen_by_an_existing_processor(proc, images):
    from vdna.extractors import register_extractor

    before = make(proc, images, distribution_name="gaussian")
    import dataclasses

    info = dataclasses.replace(tiny_extractor.INFO, name="tiny_rereg")
    register_extractor("tiny_rereg", tiny_extractor.TinyNet, info)
    a = make(proc, images, distribution_name="gaussian", feat_extractor_name="tiny_rereg")
    register_extractor("tiny_rereg", lambda: _Scaled(tiny_extractor.TinyNet()), info)
    b = make(proc, images, distribution_name="gaussian", feat_extractor_name="tiny_rereg")
    layer = next(iter(a.data))
    np.testing.assert_allclose(a.data[layer]["mu"], before.data[layer]["mu"])
    # x2 is exact in binary floating point, so this is exact unless torch picks another conv algorithm for the
    # wrapped module (another float32 summation order, ~sqrt(K)*eps32 ~ 3e-7 relative for K=27); an
    # extractor that was not replaced gives exactly 1x, a factor 2 off.
    np.testing.assert_allclose(b.data[layer]["mu"], 2 * a.data[layer]["mu"], rtol=1e-6)  # derived above


class _Scaled:
    """Wraps a module and doubles its activations (a different network under the same name)."""

    def __new__(cls, net):
        import torch

        class Scaled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                return {k: 2 * v for k, v in self.net(x).items()}

        return Scaled()
