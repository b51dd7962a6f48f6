"""Resizing and cropping: the "clean" resize against an independent NumPy model of PIL's bicubic
filter and hand-worked values, the "fast" mode's closeness to it, and input checks."""
import io

import numpy as np
import pytest
from PIL import Image

from vdna.sources import (
    RESIZE_MODES,
    array_to_rgb,
    crop_rng,
    crop_to_square,
    jpeg_draft_request,
    resize_image,
    square_crop_box,
)


def _cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _weights(in_size, out_size):
    """Dense (out, in) matrix of PIL's bicubic coefficients (antialiased when downscaling)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    w = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = np.arange(lo, hi)
        k = _cubic((x - center + 0.5) / filterscale)
        w[xx, lo:hi] = k / k.sum()
    return w


def _model_resize(channel, height, width):
    """PIL's two-pass float resize: horizontal pass first, float32 storage between the passes."""
    img = channel.astype(np.float64)
    if img.shape[1] != width:
        img = (img @ _weights(img.shape[1], width).T).astype(np.float32).astype(np.float64)
    if img.shape[0] != height:
        img = (_weights(img.shape[0], height) @ img).astype(np.float32)
    return img.astype(np.float32)


def _model_clean(rgb, height, width):
    return np.stack([np.clip(_model_resize(rgb[:, :, c], height, width), 0, 255) for c in range(3)])


@pytest.mark.parametrize(
    "in_hw,out_hw", [((37, 50), (16, 16)), ((20, 13), (31, 40)), ((64, 48), (64, 30)), ((9, 9), (9, 9))]
)
def test_clean_resize_matches_numpy_model_of_pil_bicubic(in_hw, out_hw):
    rng = np.random.default_rng(1)
    rgb = (rng.random(in_hw + (3,)) * 255).astype(np.uint8)
    got = resize_image(rgb, out_hw, "clean")
    assert got.shape == (3,) + out_hw and got.dtype == np.float32
    # float32 storage and double accumulation: agreement to ~1e-4; the contract is 1e-3 on 0..255.
    np.testing.assert_allclose(got, _model_clean(rgb, *out_hw), rtol=0, atol=1e-3)


def test_clean_resize_matches_reference_recipe():
    # The reference (clean-fid) recipe, written out: per channel float32 "F" image, bicubic, clip.
    rng = np.random.default_rng(2)
    rgb = (rng.random((45, 61, 3)) * 255).astype(np.uint8)
    want = np.stack(
        [
            np.asarray(Image.fromarray(rgb[:, :, c].astype(np.float32), mode="F").resize((24, 20), Image.BICUBIC)).clip(
                0, 255
            )
            for c in range(3)
        ]
    )
    np.testing.assert_array_equal(resize_image(rgb, (20, 24), "clean"), want)
    np.testing.assert_array_equal(resize_image(Image.fromarray(rgb), (20, 24), "clean"), want)


def test_clean_resize_hand_worked_values():
    # Row [0, 0, 255, 255] halved: weights filter((x - 0.5) / 2) = [0.8671875, 0.8671875,
    # 0.2265625, -0.0703125] (sum 121/64), so output 0 = 255 * (10/64) / (121/64) = 2550/121.
    row = np.array([0, 0, 255, 255], dtype=np.uint8)
    rgb = np.repeat(np.tile(row, (2, 1))[:, :, None], 3, axis=2)
    got = resize_image(rgb, (2, 2), "clean")
    want = np.array([2550 / 121, 28305 / 121])
    for c in range(3):
        for r in range(2):
            # The resize runs in float32 (eps32 * 255 = 1.5e-5 per op, 4 taps + normalisation): ~1e-4 absolute on
            # 0..255 values; the hand-worked fractions differ from neighbouring wrong kernels by > 0.1.
            np.testing.assert_allclose(got[c, r], want, rtol=0, atol=1e-4)


def test_clean_resize_clips_overshoot_and_keeps_fractions():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:, 2:] = 255
    got = resize_image(rgb, (4, 12), "clean")
    unclipped = _model_resize(rgb[:, :, 0], 4, 12)
    assert unclipped.min() < -1 and unclipped.max() > 256  # bicubic rings at the step
    assert got.min() == 0 and got.max() == 255
    # float32 resize against the float64 model: ~taps * eps32 * 255 ~ 1e-4; 1e-3 leaves margin on 0..255.
    np.testing.assert_allclose(got[0], np.clip(unclipped, 0, 255), atol=1e-3)
    assert np.any(got % 1 != 0)  # not re-quantised to integers


def test_same_size_is_identity_and_float_input_is_not_rescaled():
    rng = np.random.default_rng(3)
    f = (rng.random((7, 5, 3)) * 0.9).astype(np.float32)  # resize_image takes 0..255 as is
    np.testing.assert_array_equal(resize_image(f, (7, 5)), f.transpose(2, 0, 1))


def test_pil_modes_are_converted_like_rgb():
    rng = np.random.default_rng(4)
    gray = (rng.random((30, 20)) * 255).astype(np.uint8)
    from_l = resize_image(Image.fromarray(gray), (10, 10))
    from_rgb = resize_image(np.repeat(gray[:, :, None], 3, axis=2), (10, 10))
    np.testing.assert_array_equal(from_l, from_rgb)


def test_out_is_written_in_place_and_non_contiguous_input():
    rng = np.random.default_rng(5)
    rgb = (rng.random((40, 30, 3)) * 255).astype(np.uint8)
    view = rgb[::-1, ::2]  # non-contiguous
    buf = np.zeros((2, 3, 8, 9), dtype=np.float32)
    res = resize_image(view, (8, 9), out=buf[1])
    assert np.shares_memory(res, buf)
    np.testing.assert_array_equal(buf[1], resize_image(np.ascontiguousarray(view), (8, 9)))
    assert not buf[0].any()


def test_fast_mode_is_close_to_clean():
    yy, xx = np.mgrid[0:300, 0:400]
    smooth = np.stack([(xx * 0.6) % 255, (yy * 0.8) % 255, (xx + yy) * 0.3], axis=2)
    rgb = np.clip(smooth + np.random.default_rng(6).normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)
    clean = resize_image(rgb, (64, 64), "clean")
    fast = resize_image(rgb, (64, 64), "fast")
    assert np.array_equal(fast, np.round(fast))  # 8-bit output
    diff = np.abs(fast - clean)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 8, (diff.mean(), diff.max())
    # float input is rounded first
    np.testing.assert_array_equal(resize_image(rgb.astype(np.float32) + 0.2, (64, 64), "fast"), fast)


def test_jpeg_draft_request_keeps_the_crop_large_enough():
    assert jpeg_draft_request((224, 300), "none") == (300, 224)
    assert jpeg_draft_request((224, 300), "center") == (300, 300)
    img = Image.fromarray(np.zeros((1000, 1600, 3), np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    jpeg = Image.open(io.BytesIO(buf.getvalue()))
    jpeg.draft("RGB", jpeg_draft_request((224, 224), "center"))
    assert min(jpeg.size) >= 224 and jpeg.size[0] < 1600  # reduced, still big enough


@pytest.mark.parametrize(
    "bad,exc",
    [
        (np.zeros((5, 5), np.uint8), ValueError),
        (np.zeros((5, 5, 4), np.uint8), ValueError),
        (np.zeros((5, 5, 3), np.int32), ValueError),
        (np.zeros((0, 5, 3), np.uint8), ValueError),
        ([[1, 2]], TypeError),
    ],
)
def test_resize_rejects_bad_images(bad, exc):
    with pytest.raises(exc):
        resize_image(bad, (4, 4))


def test_resize_rejects_bad_arguments():
    rgb = np.zeros((5, 5, 3), np.uint8)
    for size in [(0, 4), (4,), "44", (4.0, 4), (True, 4)]:
        with pytest.raises(ValueError, match="size"):
            resize_image(rgb, size)
    with pytest.raises(ValueError, match="resize_mode"):
        resize_image(rgb, (4, 4), "bilinear")
    with pytest.raises(ValueError, match="out"):
        resize_image(rgb, (4, 4), out=np.zeros((3, 4, 4), np.float64))
    assert resize_image(rgb, 4).shape == (3, 4, 4)
    assert RESIZE_MODES == ("clean", "fast")


def test_center_crop_by_hand():
    img = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    np.testing.assert_array_equal(crop_to_square(img, "center"), img[:, 1:6])
    tall = np.arange(8 * 5 * 3, dtype=np.uint8).reshape(8, 5, 3)
    np.testing.assert_array_equal(crop_to_square(tall, "center"), tall[1:6])
    assert square_crop_box(6, 9, "center") == (0, 1, 6, 6)  # odd difference: extra column right
    assert square_crop_box(6, 9, "none") == (0, 0, 6, 9)
    pil = Image.fromarray(img)
    np.testing.assert_array_equal(np.asarray(crop_to_square(pil, "center")), img[:, 1:6])


def test_random_crop_is_seeded_per_image_and_reaches_every_offset():
    img = np.arange(3 * 7 * 3, dtype=np.uint8).reshape(3, 7, 3)
    a = crop_to_square(img, "random", seed=5, index=2)
    np.testing.assert_array_equal(a, crop_to_square(img, "random", seed=5, index=2))
    offsets = set()
    for seed in range(200):
        box = square_crop_box(3, 7, "random", crop_rng(seed, 0))
        assert box[0] == 0 and box[2:] == (3, 3) and 0 <= box[1] <= 4
        offsets.add(box[1])
        top, left, h, w = box
        np.testing.assert_array_equal(crop_to_square(img, "random", seed, 0), img[top : top + h, left : left + w])
    assert offsets == {0, 1, 2, 3, 4}  # including the last one (the reference never draws it)
    with pytest.raises(ValueError, match="crop_to_square"):
        crop_to_square(img, "left")


def test_array_to_rgb_then_resize_float_unit_scale():
    rng = np.random.default_rng(8)
    u8 = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(
        # u8/255*255 is within 1 ulp of u8 in float64, then the same float32 resize: ~1e-4 absolute as above.
        resize_image(array_to_rgb(u8 / 255.0), (5, 5)), resize_image(u8, (5, 5)), rtol=0, atol=1e-4
    )
