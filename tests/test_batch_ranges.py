"""iter_batches(start=, stop=): a part of a source (a rank's share, a resumed run's remainder) gives
exactly the rows the whole run gives for those positions (random crops included)."""
import warnings

import numpy as np
import pytest

from vdna import procedural
from vdna.sources import ArrayImageSource, iter_batches


def rows(batches):
    out = {}
    for b in batches:
        for i, idx in enumerate(b.indices):
            out[int(idx)] = b.images[i].copy()
    return out


def test_a_range_gives_the_whole_runs_rows_and_positions():
    images = procedural.make_images(11, seed=1, style="base", size=(30, 40))
    src = ArrayImageSource(images)
    full = rows(iter_batches(src, (16, 16), 4, num_workers=0, crop_to_square="random", seed=3))
    batches = list(iter_batches(src, (16, 16), 4, num_workers=2, crop_to_square="random", seed=3, start=5, stop=10))
    assert [b.indices.tolist() for b in batches] == [[5, 6, 7, 8], [9]]
    assert [b.end for b in batches] == [9, 10]
    part = rows(batches)
    assert sorted(part) == list(range(5, 10))
    for i in part:
        np.testing.assert_array_equal(part[i], full[i])
    assert list(iter_batches(src, (16, 16), 4, start=7, stop=7)) == []
    with pytest.raises(ValueError, match="start <= stop"):
        iter_batches(src, (16, 16), 4, start=8, stop=3)
    with pytest.raises(ValueError, match="start <= stop"):
        iter_batches(src, (16, 16), 4, start=0, stop=12)


def test_a_range_with_no_readable_image_is_not_an_error(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        p.write_bytes(b"not a png")
        paths.append(str(p))
    from vdna.sources import open_source

    src = open_source(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(iter_batches(src, (8, 8), 2, num_workers=0, start=1, stop=3))
        assert [len(b) for b in batches] == [0] and len(batches[0].skipped) == 2 and batches[0].end == 3
        with pytest.raises(ValueError, match="none of the 4 images could be read"):
            list(iter_batches(src, (8, 8), 2, num_workers=0))
