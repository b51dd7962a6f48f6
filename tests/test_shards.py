"""Tar shards at scale: brace ranges, streaming make_vdna (same DNA as the listing reader), bounded
memory with many shards, checkpoints at shard boundaries."""
import io
import tarfile
import tracemalloc

import numpy as np
import pytest

import tiny_extractor  # noqa: F401  (registers "tiny")
from vdna import VDNAProcessor, procedural
from vdna.checkpoint import load_checkpoint
from vdna.sources import TarShards, expand_braces, iter_shard_batches, open_source

KW = dict(feat_extractor_name="tiny", device="cpu", backend="eager", verbose=False, num_workers=0)


def write_shards(folder, n_shards, per_shard, seed=0, bad=None):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    k = 0
    for s in range(n_shards):
        with tarfile.open(folder / f"shard-{s:06d}.tar", "w") as tar:
            for i in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray(procedural.make_image(k, seed, "base", (20, 24))).save(buf, format="PNG")
                data = b"broken" if bad == (s, i) else buf.getvalue()
                info = tarfile.TarInfo(f"{k:08d}.png")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                meta = tarfile.TarInfo(f"{k:08d}.json")  # WebDataset companions are ignored
                meta.size = 2
                tar.addfile(meta, io.BytesIO(b"{}"))
                k += 1
    return folder


def test_expand_braces():
    assert expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_braces("s{8..11}") == ["s8", "s9", "s10", "s11"]
    assert expand_braces("{a,b}/x{0..1}") == ["a/x0", "a/x1", "b/x0", "b/x1"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert len(expand_braces("shard-{000000..012345}.tar")) == 12346
    assert expand_braces("shard-{000000..012345}.tar")[-1] == "shard-012345.tar"
    with pytest.raises(ValueError, match="goes down"):
        expand_braces("x{5..1}")


def test_tar_shards_are_checked(tmp_path):
    write_shards(tmp_path, 2, 1)
    with pytest.raises(FileNotFoundError, match="1 of 3 tar shard"):
        TarShards(str(tmp_path / "shard-{000000..000002}.tar"))
    with pytest.raises(ValueError, match="not a .tar"):
        TarShards([str(tmp_path / "x.tgz")])
    assert len(TarShards(str(tmp_path / "shard-{000000..000001}.tar"))) == 2


def test_streamed_shards_give_the_listing_readers_dna(tmp_path):
    folder = write_shards(tmp_path / "s", 3, 4, bad=(1, 2))
    shards = [str(folder / f"shard-{s:06d}.tar") for s in range(3)]
    proc = VDNAProcessor()
    listed = open_source(shards)  # the listing reader: every member listed first
    with pytest.warns(UserWarning):
        ranges = proc.make_vdna(listed, distribution_name="activation-ranges", batch_size=1, **KW)
    # batch_size=1 on both: tiny's CPU convolutions may depend on how images are batched
    with pytest.warns(UserWarning):
        ref = proc.make_vdna(listed, distribution_name="histogram-12", activation_ranges=ranges, batch_size=1, **KW)
    with pytest.warns(UserWarning):
        v = proc.make_vdna(str(folder / "shard-{000000..000002}.tar"), distribution_name="histogram-12",
                           activation_ranges=ranges, batch_size=1, **KW)
    assert v.num_images == ref.num_images == 11
    for layer in ref.data:
        np.testing.assert_array_equal(v.data[layer], ref.data[layer])
    assert [s["name"] for s in v.meta["skipped_files"]] == [f"{shards[1]}:00000006.png"]
    # a list of shard paths is streamed too (never listed), unless num_images selects images
    import vdna.sources

    real_open = vdna.sources.open_source

    def no_listing(*args, **kwargs):
        raise AssertionError("a list of tar shards was listed instead of streamed")

    vdna.sources.open_source = no_listing
    try:
        with pytest.warns(UserWarning):
            w = proc.make_vdna(shards, distribution_name="histogram-12", activation_ranges=ranges, batch_size=1, **KW)
        with pytest.raises(AssertionError, match="listed instead of streamed"):
            proc.make_vdna(shards, num_images=3, distribution_name="gaussian", **KW)
    finally:
        vdna.sources.open_source = real_open
    assert w.num_images == 11
    for layer in ref.data:
        np.testing.assert_array_equal(w.data[layer], ref.data[layer])
    assert proc.make_vdna(shards, num_images=3, distribution_name="gaussian", **KW).num_images == 3  # listed: 3 members
    with pytest.raises(ValueError, match="num_images and shuffle_files are not supported"):
        proc.make_vdna(TarShards(shards), num_images=3, **KW)


def test_memory_does_not_grow_with_the_number_of_shards(tmp_path):
    folder = write_shards(tmp_path, 160, 3)
    peaks = {}
    for n in (20, 160):
        shards = TarShards(str(folder / f"shard-{{000000..{n - 1:06d}}}.tar"))
        tracemalloc.start()
        count = 0
        for batch in iter_shard_batches(shards, (8, 8), 2, num_workers=0):
            count += len(batch)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == 3 * n
    # 8x the images: the peak may differ only by the shard path list (~100 bytes per shard) and noise
    assert peaks[160] < peaks[20] + 160 * 200 + 64 * 1024, peaks


def test_shard_checkpoints_resume_to_the_same_dna(tmp_path, monkeypatch):
    folder = write_shards(tmp_path / "s", 4, 3)
    src = str(folder / "shard-{000000..000003}.tar")
    proc = VDNAProcessor()
    ref = proc.make_vdna(src, distribution_name="gaussian", batch_size=2, **KW)
    from vdna.processor import VDNAStream

    forward, calls = VDNAStream._forward, []

    def failing(self, batch):
        calls.append(1)
        if len(calls) == 5:  # in the third shard (2 batches per shard)
            raise KeyboardInterrupt
        forward(self, batch)

    ck = tmp_path / "ck"
    monkeypatch.setattr(VDNAStream, "_forward", failing)
    with pytest.raises(KeyboardInterrupt):
        proc.make_vdna(src, distribution_name="gaussian", batch_size=2, checkpoint=ck, checkpoint_every=1, **KW)
    monkeypatch.setattr(VDNAStream, "_forward", forward)
    assert load_checkpoint(ck)[1]["next_position"] == 2  # shards done
    v = proc.make_vdna(src, distribution_name="gaussian", batch_size=2, checkpoint=ck, checkpoint_every=1, **KW)
    for layer in ref.data:
        for key in ("mu", "var"):
            np.testing.assert_array_equal(v.data[layer][key], ref.data[layer][key])  # same batches: same bits
