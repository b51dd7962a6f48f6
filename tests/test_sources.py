"""Image sources and batching: listing every source type, selection, array/PIL conversion,
crops, order and thread independence, and unreadable files."""
import io
import os
import subprocess
import sys
import tarfile
import threading
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from vdna.sources import (
    Batch,
    ImageReadError,
    ImageSource,
    SkippedImageWarning,
    array_to_rgb,
    crop_rng,
    iter_batches,
    open_source,
    resize_image,
    square_crop_box,
)


def _image(seed, h=23, w=31):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _save(path, arr, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _all(source, size=(16, 16), batch_size=4, **kw):
    batches = list(iter_batches(source, size, batch_size, **kw))
    images = np.concatenate([b.images for b in batches]) if batches else None
    return batches, images


def _decoded(source, i):
    """Image i of a source as an RGB uint8 array (for comparisons)."""
    return np.asarray(source.read(i).convert("RGB"))


# ----------------------------------------------------------------------------- listing


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    _save(str(root / "b.png"), _image(0))
    _save(str(root / "A.PNG"), _image(1))
    _save(str(root / "sub" / "c.Jpg"), _image(2), "JPEG")
    _save(str(root / "sub" / "deeper" / "d.TIFF"), _image(3), "TIFF")
    _save(str(root / "sub" / "e.webp"), _image(4), "WEBP")
    _save(str(root / "f.bmp"), _image(5), "BMP")
    (root / "notes.txt").write_text("not an image")
    (root / "arr.npy").write_bytes(b"\x93NUMPY")
    (root / "noext").write_bytes(_png_bytes(_image(6)))
    _save(str(root / ".hidden.png"), _image(7))
    _save(str(root / ".cache" / "x.png"), _image(8))
    return root


def test_folder_is_recursive_sorted_case_insensitive_and_ignores_other_files(folder):
    src = open_source(str(folder))
    rel = [os.path.relpath(n, folder) for n in src.names]
    assert rel == sorted(rel)
    assert rel == ["A.PNG", "b.png", "f.bmp", "sub/c.Jpg", "sub/deeper/d.TIFF", "sub/e.webp"]
    assert src.describe() == str(folder)
    assert isinstance(src, ImageSource) and len(src) == 6
    np.testing.assert_array_equal(_decoded(src, 1), _image(0))
    # pathlib.Path works too, same listing
    assert open_source(folder).names == src.names


def test_single_image_txt_and_path_list(tmp_path):
    paths = [_save(str(tmp_path / "imgs" / f"{i}.png"), _image(i)) for i in range(4)]
    single = open_source(paths[2])
    assert single.names == [paths[2]] and single.describe() == paths[2]

    lst = tmp_path / "lists" / "files.txt"
    lst.parent.mkdir()
    # relative to the txt's folder, absolute, blank lines; listed unsorted
    lst.write_text(f"../imgs/3.png\n\n{paths[0]}\n  ../imgs/1.png  \n")
    src = open_source(str(lst))
    assert src.names == sorted(src.names)
    assert sorted(os.path.realpath(n) for n in src.names) == [os.path.realpath(paths[i]) for i in (0, 1, 3)]
    for i, name in enumerate(src.names):
        np.testing.assert_array_equal(_decoded(src, i), _image(int(os.path.basename(name)[0])))

    # an explicit list keeps its order
    listed = open_source([paths[3], paths[1]])
    assert listed.names == [paths[3], paths[1]] and listed.describe() == [paths[3], paths[1]]


def test_txt_errors_name_the_line(tmp_path):
    _save(str(tmp_path / "ok.png"), _image(0))
    bad = tmp_path / "bad.txt"
    bad.write_text("ok.png\nmissing.png\n")
    with pytest.raises(FileNotFoundError, match="line 2"):
        open_source(str(bad))
    bad.write_text("ok.png\nnotes.doc\n")
    with pytest.raises(ValueError, match="line 2"):
        open_source(str(bad))
    bad.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        open_source(str(bad))


def test_zip_members_in_subfolders_are_read_directly(tmp_path):
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("top/", b"")
        z.writestr("top/b.png", _png_bytes(_image(1)))
        z.writestr("top/sub/a.PNG", _png_bytes(_image(2)))
        z.writestr("z.png", _png_bytes(_image(3)), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("readme.txt", b"hello")
        z.writestr("__MACOSX/top/._b.png", b"resource fork")
    src = open_source(str(zpath))
    assert src.names == [f"{zpath}:top/b.png", f"{zpath}:top/sub/a.PNG", f"{zpath}:z.png"]
    assert src.describe() == str(zpath)
    for i, seed in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(_decoded(src, i), _image(seed))
    assert list(tmp_path.iterdir()) == [zpath]  # nothing extracted
    batches, images = _all(src, num_workers=2)
    assert images.shape == (3, 3, 16, 16)
    src.close()


def _write_shard(path, items):
    with tarfile.open(path, "w") as tar:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_shards_glob_list_and_single(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_shard(
        shards / "s-001.tar",
        [("k2.jpg", _png_bytes(_image(12))), ("k2.cls", b"1"), ("k0.png", _png_bytes(_image(10)))],
    )
    _write_shard(shards / "s-000.tar", [("dir/k5.PNG", _png_bytes(_image(15))), ("k5.json", b"{}")])
    (shards / "other.txt").write_text("x")

    src = open_source(str(shards / "*.tar"))
    # shards sorted, members in archive order
    assert src.names == [f"{shards}/s-000.tar:dir/k5.PNG", f"{shards}/s-001.tar:k2.jpg", f"{shards}/s-001.tar:k0.png"]
    assert src.describe() == str(shards / "*.tar")
    for i, seed in enumerate([15, 12, 10]):
        np.testing.assert_array_equal(_decoded(src, i), _image(seed))

    listed = open_source([str(shards / "s-001.tar"), shards / "s-000.tar"])
    assert [n.split(":")[-1] for n in listed.names] == ["k2.jpg", "k0.png", "dir/k5.PNG"]
    assert len(open_source(str(shards / "s-000.tar"))) == 1

    _, a = _all(src, num_workers=3, batch_size=2)
    _, b = _all(src, num_workers=0, batch_size=3)
    np.testing.assert_array_equal(a, b)

    import gzip

    (tmp_path / "c.tar").write_bytes(gzip.compress((shards / "s-000.tar").read_bytes()))
    with pytest.raises(ValueError, match="uncompressed"):
        open_source(str(tmp_path / "c.tar"))


def test_missing_and_empty_sources_fail_before_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_source(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "text_only").mkdir()
    (tmp_path / "text_only" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        open_source(str(tmp_path / "text_only"))
    with pytest.raises(ValueError, match="empty list"):
        open_source([])
    with pytest.raises(FileNotFoundError, match="pattern"):
        open_source(str(tmp_path / "*.tar"))
    with pytest.raises(FileNotFoundError, match=r"\[1\]"):
        open_source([_save(str(tmp_path / "a.png"), _image(0)), str(tmp_path / "b.png")])
    with pytest.raises(ValueError, match="not an image"):
        open_source([str(tmp_path / "a.png"), str(tmp_path / "empty")])
    (tmp_path / "x.doc").write_text("x")
    with pytest.raises(ValueError, match="unsupported source file"):
        open_source(str(tmp_path / "x.doc"))
    with pytest.raises(TypeError, match="paths or only NumPy"):
        open_source([str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(TypeError):
        open_source(42)
    zpath = tmp_path / "none.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("a.txt", b"x")
    with pytest.raises(ValueError, match="zip"):
        open_source(str(zpath))
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.zip"):
        open_source(str(tmp_path / "broken.zip"))
    # iter_batches checks its arguments when called, before decoding anything
    with pytest.raises(ValueError, match="crop_to_square"):
        iter_batches(str(tmp_path / "a.png"), (8, 8), 2, crop_to_square="left")
    with pytest.raises(ValueError, match="batch_size"):
        iter_batches(str(tmp_path / "a.png"), (8, 8), 0)
    with pytest.raises(FileNotFoundError):
        iter_batches(str(tmp_path / "nope"), (8, 8), 2)


# ----------------------------------------------------------------------------- selection


def test_num_images_shuffle_and_seed(tmp_path):
    paths = sorted(_save(str(tmp_path / f"{i:02d}.png"), _image(i, 4, 4)) for i in range(20))
    assert open_source(str(tmp_path), num_images=5).names == paths[:5]
    assert open_source(str(tmp_path), num_images=50).names == paths
    a = open_source(str(tmp_path), num_images=7, shuffle=True, seed=3).names
    assert a == open_source(str(tmp_path), num_images=7, shuffle=True, seed=3).names
    perm = np.random.Generator(np.random.PCG64(3)).permutation(20)[:7]
    assert a == [paths[p] for p in perm]
    assert a != open_source(str(tmp_path), num_images=7, shuffle=True, seed=4).names
    full = open_source(str(tmp_path), shuffle=True, seed=1).names
    assert sorted(full) == paths and full != paths
    with pytest.raises(ValueError, match="num_images"):
        open_source(str(tmp_path), num_images=0)
    with pytest.raises(ValueError, match="seed"):
        open_source(str(tmp_path), shuffle=True, seed=-1)
    arrays = [np.full((3, 3, 3), i, np.uint8) for i in range(6)]
    sel = open_source(arrays, num_images=3, shuffle=True, seed=0)
    perm = np.random.Generator(np.random.PCG64(0)).permutation(6)[:3]
    assert sel.names == [f"array[{p}]" for p in perm]
    assert [int(sel.read(i)[0, 0, 0]) for i in range(3)] == list(perm)


# ----------------------------------------------------------------------------- arrays and modes


def _batch_of(source, size=(13, 17), **kw):
    _, images = _all(source, size, batch_size=8, num_workers=0, **kw)
    return images


ARRAY_KINDS = [
    "uint8_rgb", "gray", "gray1", "rgba", "float01", "float255", "int64", "uint16", "f16", "noncontig", "byteswapped"
]


@pytest.mark.parametrize("kind", ARRAY_KINDS)
def test_arrays_match_the_same_image_read_from_png(tmp_path, kind):
    rgb = _image(20, 19, 26)
    gray = rgb[:, :, 0].copy()
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 77, np.uint8)], axis=2)
    arrays = {
        "uint8_rgb": (rgb, rgb),
        "gray": (gray, gray),
        "gray1": (gray[:, :, None], gray),
        "rgba": (rgba, rgba),
        "float01": (rgb / 255.0, rgb),
        "float255": (rgb.astype(np.float32), rgb),
        "int64": (rgb.astype(np.int64), rgb),
        "uint16": (rgb.astype(np.uint16), rgb),
        "f16": ((rgb // 2).astype(np.float16), rgb // 2),
        "noncontig": (np.ascontiguousarray(rgb[:, ::-1])[:, ::-1], rgb),
        "byteswapped": ((rgb / 255.0).astype(">f8"), rgb),
    }
    arr, saved = arrays[kind]
    png = _save(str(tmp_path / "x.png"), saved)
    from_file = _batch_of(png)
    from_array = _batch_of([arr])
    assert from_array.shape == (1, 3, 13, 17)
    if arr.dtype.kind == "f":
        # floats are not quantised: k/255*255 comes back as k up to float rounding
        np.testing.assert_allclose(from_array, from_file, rtol=0, atol=1e-3)
    else:
        np.testing.assert_array_equal(from_array, from_file)
    for crop in ("center", "random"):
        np.testing.assert_allclose(
            # Same bound as above: k/255*255 vs k through the float32 resize, ~1e-4 on 0..255.
            _batch_of([arr], crop_to_square=crop, seed=4), _batch_of(png, crop_to_square=crop, seed=4), atol=1e-3
        )


def test_float_unit_images_do_not_turn_black():
    img = np.random.default_rng(0).random((16, 16, 3))  # [0, 1)
    batch = _batch_of([img], size=(16, 16))
    # Identity-size resize of float pixels: only float32 rounding of x*255 (eps32 * 255 ~ 1.5e-5).
    np.testing.assert_allclose(batch[0], (img * 255).transpose(2, 0, 1), rtol=0, atol=1e-3)
    assert batch.mean() > 100
    # the documented rule: max <= 1 means [0, 1]; max in (1, 255] is used as is
    np.testing.assert_allclose(array_to_rgb(np.full((2, 2), 1.0)), 255.0)
    # 1.0*255 and 1.5 are exact in float32: default tolerances only guard the dtype round trip.
    np.testing.assert_allclose(array_to_rgb(np.full((2, 2), 1.5)), 1.5)


@pytest.mark.parametrize(
    "arr,exc,match",
    [
        (np.zeros((4, 4, 3), bool), ValueError, "bool"),
        (np.zeros((4, 4, 3), complex), ValueError, "dtype"),
        (np.zeros((4, 4, 2), np.uint8), ValueError, r"\(4, 4, 2\)"),
        (np.zeros((3, 8, 9), np.uint8), ValueError, r"\(3, 8, 9\)"),
        (np.zeros((1, 4, 4, 3), np.uint8), ValueError, "shape"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
        (np.full((4, 4, 3), np.nan), ValueError, "NaN"),
        (np.full((4, 4, 3), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((4, 4, 3), -0.5), ValueError, "negative"),
        (np.full((4, 4, 3), 300.0), ValueError, "300"),
        (np.full((4, 4, 3), 256, np.int32), ValueError, "256"),
        (np.full((4, 4, 3), -1, np.int8), ValueError, "-1"),
        (np.array([["a"]]), ValueError, "dtype"),
    ],
)
def test_bad_arrays_are_rejected_naming_index(arr, exc, match):
    good = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(exc, match=match) as info:
        open_source([good, good, arr])
    assert "[2]" in str(info.value)


def test_pil_modes_are_converted_sensibly(tmp_path):
    size = (6, 5)  # the images' own size: the clean resize is then the identity
    g16 = np.array([[0, 257, 65535, 25700, 1000]] * 6, dtype=np.uint16)
    p16 = str(tmp_path / "g16.png")
    Image.fromarray(g16).save(p16)
    with Image.open(p16) as check:
        assert check.mode.startswith("I")
    got = _batch_of(p16, size)[0]
    # 16-bit -> 8-bit scale 1/257 applied in float32: eps32 * 255 ~ 1.5e-5 absolute; 1e-3 with margin,
    # while the wrong divisor (256) is off by up to 1.0.
    np.testing.assert_allclose(got, np.broadcast_to(g16 / 257.0, (3,) + g16.shape), rtol=0, atol=1e-3)

    pal = Image.fromarray(_image(3, 6, 5)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    ppath = str(tmp_path / "pal.png")
    pal.save(ppath, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _batch_of(ppath, size)[0]
    np.testing.assert_array_equal(got, np.asarray(pal.convert("RGB")).transpose(2, 0, 1))

    cmyk = Image.fromarray(_image(4, 6, 5)).convert("CMYK")
    cpath = str(tmp_path / "c.tif")
    cmyk.save(cpath)
    np.testing.assert_array_equal(_batch_of(cpath, size)[0], np.asarray(cmyk.convert("RGB")).transpose(2, 0, 1))

    la = Image.fromarray(np.stack([_image(5, 6, 5)[:, :, 0], np.zeros((6, 5), np.uint8)], axis=2), "LA")
    lpath = str(tmp_path / "la.png")
    la.save(lpath)
    np.testing.assert_array_equal(_batch_of(lpath, size)[0], np.asarray(la.convert("RGB")).transpose(2, 0, 1))


# ----------------------------------------------------------------------------- batching


@pytest.fixture
def mixed(tmp_path):
    """Non-square images of several sizes, PNG and JPEG."""
    for i in range(11):
        h, w = (20 + 3 * i, 35 - i) if i % 2 else (30 - i, 18 + 2 * i)
        _save(str(tmp_path / f"{i:02d}.{'png' if i % 3 else 'jpg'}"), _image(100 + i, h, w))
    return str(tmp_path)


@pytest.mark.parametrize("crop", ["none", "center", "random"])
@pytest.mark.parametrize("mode", ["clean", "fast"])
def test_batches_independent_of_workers_and_batch_size(mixed, crop, mode):
    runs = []
    for workers, bs in [(0, 11), (1, 3), (3, 2), (2, 50), (4, 1)]:
        batches, images = _all(mixed, (12, 14), bs, num_workers=workers, crop_to_square=crop, resize_mode=mode, seed=9)
        assert all(len(b) <= bs for b in batches)
        assert np.concatenate([b.indices for b in batches]).tolist() == list(range(11))
        runs.append(images)
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])  # bit-identical


def test_fast_mode_decodes_large_jpegs_at_reduced_scale(tmp_path):
    yy, xx = np.mgrid[0:600, 0:900]
    rgb = np.stack([xx % 256, yy % 256, (xx // 3 + yy // 2) % 256], axis=2).astype(np.uint8)
    path = _save(str(tmp_path / "big.jpg"), rgb, "JPEG")
    fast = next(iter(iter_batches([path], (100, 120), 1, resize_mode="fast"))).images[0]
    manual = Image.open(path)
    manual.draft("RGB", (120, 100))
    assert manual.size == (225, 150)  # libjpeg decoded at 1/4 scale
    want = manual.convert("RGB").resize((120, 100), Image.BICUBIC, reducing_gap=3.0)
    np.testing.assert_array_equal(fast, np.asarray(want).transpose(2, 0, 1))
    clean = next(iter(iter_batches([path], (100, 120), 1))).images[0]
    assert np.abs(fast - clean).mean() < 3


def test_batch_fields(mixed):
    src = open_source(mixed)
    batches = list(iter_batches(src, (8, 9), 4, num_workers=2))
    assert [len(b) for b in batches] == [4, 4, 3]
    b = batches[1]
    assert isinstance(b, Batch) and b.indices.dtype == np.int64 and b.indices.tolist() == [4, 5, 6, 7]
    assert b.names == src.names[4:8] and b.skipped == []
    assert b.images.dtype == np.float32 and b.images.shape == (4, 3, 8, 9)
    assert 0 <= b.images.min() and b.images.max() <= 255
    # each row is the resize of that file, as resize_image gives it
    np.testing.assert_array_equal(b.images[2], resize_image(Image.open(src.names[6]).convert("RGB"), (8, 9)))


def test_random_crop_reproducible_and_seed_dependent(tmp_path):
    img = np.arange(10 * 30 * 3, dtype=np.uint8).reshape(10, 30, 3)
    path = _save(str(tmp_path / "wide.png"), img)
    src = open_source([path] * 4)  # same file four times: each position gets its own crop
    batches, a = _all(src, (10, 10), 3, num_workers=2, crop_to_square="random", seed=1)
    _, b = _all(src, (10, 10), 2, num_workers=1, crop_to_square="random", seed=1)
    np.testing.assert_array_equal(a, b)
    for i in range(4):  # identity resize: row i is the crop that crop_rng(seed, i) places
        top, left, h, w = square_crop_box(10, 30, "random", crop_rng(1, i))
        np.testing.assert_array_equal(a[i], img[top : top + h, left : left + w].transpose(2, 0, 1))
    _, c = _all(src, (10, 10), 3, crop_to_square="random", seed=2)
    assert not np.array_equal(a, c)
    _, center = _all(src, (10, 10), 3, crop_to_square="center")
    np.testing.assert_array_equal(center[0], img[:, 10:20].transpose(2, 0, 1))


def test_corrupt_files_are_skipped_with_a_warning(tmp_path):
    for i in (0, 2, 4, 5):
        _save(str(tmp_path / f"{i}.png"), _image(i, 9, 9))
    (tmp_path / "1.png").write_bytes(b"this is not a png")
    jpeg = io.BytesIO()
    Image.fromarray(_image(3, 64, 64)).save(jpeg, "JPEG")
    (tmp_path / "3.jpg").write_bytes(jpeg.getvalue()[:300])  # truncated
    src = open_source(str(tmp_path))
    assert len(src) == 6
    with pytest.warns(SkippedImageWarning) as record:
        batches = list(iter_batches(src, (9, 9), 2, num_workers=2))
    messages = " ".join(str(w.message) for w in record)
    assert "1.png" in messages and "3.jpg" in messages
    assert [b.indices.tolist() for b in batches] == [[0], [2], [4, 5]]
    assert [os.path.basename(n) for b in batches for n, _ in b.skipped] == ["1.png", "3.jpg"]
    assert all(reason for b in batches for _, reason in b.skipped)
    images = np.concatenate([b.images for b in batches])
    want = np.stack([_image(i, 9, 9).transpose(2, 0, 1) for i in (0, 2, 4, 5)])
    np.testing.assert_array_equal(images, want)

    with pytest.raises(ImageReadError) as info:
        list(iter_batches(src, (9, 9), 2, num_workers=2, strict=True))
    assert info.value.name.endswith("1.png")
    with pytest.raises(ImageReadError):
        src.read(1)


def test_all_skipped_batches_carry_over_and_all_bad_raises(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"junk")
    _save(str(tmp_path / "c.png"), _image(0, 5, 5))
    with pytest.warns(SkippedImageWarning):
        batches = list(iter_batches(str(tmp_path), (5, 5), 1, num_workers=2))
    assert len(batches) == 1 and batches[0].indices.tolist() == [2]
    assert [os.path.basename(n) for n, _ in batches[0].skipped] == ["a.png", "b.png"]

    (tmp_path / "d.png").write_bytes(b"junk")  # last batch: only a skip to report
    with pytest.warns(SkippedImageWarning):
        batches = list(iter_batches(str(tmp_path), (5, 5), 1, num_workers=0))
    assert [len(b) for b in batches] == [1, 0] and batches[1].images.shape == (0, 3, 5, 5)
    assert [os.path.basename(n) for n, _ in batches[1].skipped] == ["d.png"]

    (tmp_path / "c.png").write_bytes(b"junk")
    with pytest.warns(SkippedImageWarning), pytest.raises(ValueError, match="none of the 4 images"):
        list(iter_batches(str(tmp_path), (5, 5), 2))


def test_allocate_provides_the_buffers(mixed):
    shapes, buffers = [], []

    def allocate(shape):
        shapes.append(shape)
        buffers.append(np.full(shape, -1, np.float32))
        return buffers[-1]

    batches = list(iter_batches(mixed, (6, 7), 5, num_workers=2, allocate=allocate))
    assert shapes == [(5, 3, 6, 7), (5, 3, 6, 7), (1, 3, 6, 7)]
    for b, buf in zip(batches, buffers):
        assert np.shares_memory(b.images, buf) and (b.images >= 0).all()
    with pytest.raises(TypeError, match="allocate"):
        list(iter_batches(mixed, (6, 7), 5, allocate=lambda s: np.empty(s, np.float64)))


def test_stopping_early_shuts_the_pool_down(mixed):
    before = threading.active_count()
    it = iter_batches(mixed, (6, 6), 2, num_workers=3)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_sources_work_without_torch(mixed):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from vdna.sources import iter_batches\n"
        f"n = sum(len(b) for b in iter_batches({mixed!r}, (8, 8), 4, num_workers=2))\n"
        "assert n == 11, n\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
