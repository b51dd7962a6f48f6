"""Saving and loading DNAs: reference layout, never unpickling, atomic and consistent saves, errors."""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import vdna
from vdna import files as vfiles
from vdna.dna import META_NAN_COUNTS
from vdna.settings import DataSettings, ExtractionSettings

from dna_factory import assert_same_data, make_dna

KINDS = ["histogram-7", "gaussian", "layer-gaussian", "activation-ranges"]

# The reference package's (vdna 0.1.1) JSON keys and settings fields, in its order (docs/design.md,
# "Files"), written out here
# independently of vdna.settings so that a change there cannot silently pass.
REF_KEYS = [
    "time_of_compute", "vdna_version", "distribution", "type", "name", "data_settings",
    "extraction_settings", "num_images", "feature_extractor_name", "neurons_list",
]
REF_DATA_SETTINGS = [
    "source", "crop_to_square_pre_resize", "resize_mode", "custom_fn_resize", "custom_np_image_tranform",
    "custom_pil_image_tranform", "shuffle_files", "num_images",
]
REF_EXTRACTION_SETTINGS = [
    "average_feats_spatially", "accumulate_spatial_feats_in_hist", "accumulate_sample_feats_in_hist",
    "keep_only_min_max", "normalise_feats", "range_scale_for_norm_params", "hist_range", "hist_nb_bins",
    "hist_channel_batch_size", "num_workers", "batch_size", "device", "description", "verbose",
    "n_sample_images", "sample_images_folder", "seed", "hub_repo",
]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def no_pickle(monkeypatch):
    """Any attempt to unpickle fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_all_kinds(tmp_path, rng, kind, no_pickle):
    v = make_dna(kind, rng, num_images=17)
    v.meta = {META_NAN_COUNTS: {"conv.a": 2, "block_1": 0}, "resize_mode": "pil_bicubic", "skipped_files": ["x.png"]}
    v.data_settings_used = DataSettings(source="/data/set", shuffle_files=False, num_images=17)
    path = tmp_path / "sub" / "set_0.5"  # dotted name, missing folder
    v.save(str(path))
    assert sorted(os.listdir(tmp_path / "sub")) == ["set_0.5.json", "set_0.5.npz"]

    w = vdna.load_vdna_from_files(str(path), device="cuda:1")
    assert type(w) is type(v)
    assert (w.type, w.name, w.num_images, w.feature_extractor_name) == (v.type, v.name, 17, "toy_net")
    assert w.neurons_list == v.neurons_list and list(w.neurons_list) == list(v.neurons_list)
    assert_same_data(v, w)
    assert w.meta == v.meta
    assert w.data_settings_used == v.data_settings_used
    assert w.device == "cuda:1" and w.loaded_from_path == str(path)
    if kind.startswith("histogram"):
        assert w.hist_nb_bins == 7 and w.data["conv.a"].dtype == np.int64


@pytest.mark.parametrize("suffix", ["", ".json", ".npz"])
def test_load_accepts_path_with_or_without_suffix(tmp_path, rng, suffix):
    v = make_dna("gaussian", rng)
    v.save(tmp_path / "a.b.c")  # PathLike works too
    w = vdna.load_vdna_from_files(str(tmp_path / "a.b.c") + suffix)
    assert_same_data(v, w)


def test_json_has_reference_keys_in_order_plus_ours(tmp_path, rng):
    v = make_dna("histogram-7", rng)
    v.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h.json").read_text())
    assert list(meta) == REF_KEYS + ["vdna"]
    assert list(meta["data_settings"]) == REF_DATA_SETTINGS
    assert list(meta["extraction_settings"]) == REF_EXTRACTION_SETTINGS
    assert meta["distribution"] == {"hist_nb_bins": 7}
    assert meta["type"] == "histogram" and meta["name"] == "histogram-7"
    assert meta["vdna"]["format_version"] == 1
    # what the reference loader does with these dicts must work
    DataSettings(**meta["data_settings"])
    ExtractionSettings(**meta["extraction_settings"])


def test_settings_with_callables_and_numpy_sources_are_written_as_text(tmp_path, rng):
    v = make_dna("gaussian", rng)
    v.data_settings_used = DataSettings(source=[np.zeros((2, 2, 3), np.uint8)], custom_fn_resize=np.sqrt)
    v.save(tmp_path / "g")
    ds = json.loads((tmp_path / "g.json").read_text())["data_settings"]
    assert ds["source"] == "Provided NumPy Arrays - not saved in metadata"
    assert ds["custom_fn_resize"] == "callable: sqrt"


def test_npz_layout_matches_reference(tmp_path, rng):
    for kind, expected in [
        ("histogram-7", {"conv.a": (3, 7), "block_1": (5, 7)}),
        ("gaussian", {"mu-conv.a": (3,), "var-conv.a": (3,), "mu-block_1": (5,), "var-block_1": (5,)}),
        ("layer-gaussian", {"mu-conv.a": (3,), "sigma-conv.a": (3, 3), "mu-block_1": (5,), "sigma-block_1": (5, 5)}),
        ("activation-ranges", {"min-conv.a": (3,), "max-conv.a": (3,), "min-block_1": (5,), "max-block_1": (5,)}),
    ]:
        make_dna(kind, rng).save(tmp_path / kind)
        with np.load(tmp_path / f"{kind}.npz", allow_pickle=False) as z:
            assert list(z.keys()) == list(expected)
            for key, shape in expected.items():
                assert z[key].shape == shape
                assert z[key].dtype == (np.int32 if kind.startswith("histogram") else np.float64)


def test_counts_beyond_int32_are_written_as_int64(tmp_path, rng):
    v = make_dna("histogram-7", rng)
    big = np.iinfo(np.int32).max + 5
    v.data["block_1"][2, 3] = big
    v.save(tmp_path / "big")
    with np.load(tmp_path / "big.npz", allow_pickle=False) as z:
        assert z["block_1"].dtype == np.int64 and z["conv.a"].dtype == np.int64
    assert json.loads((tmp_path / "big.json").read_text())["vdna"]["counts_dtype"] == "int64"
    w = vdna.load_vdna_from_files(tmp_path / "big")
    assert w.data["block_1"][2, 3] == big
    assert_same_data(v, w)


def test_counts_at_int32_max_stay_int32(tmp_path, rng):
    v = make_dna("histogram-7", rng)
    v.data["block_1"][0, 0] = np.iinfo(np.int32).max
    v.save(tmp_path / "edge")
    with np.load(tmp_path / "edge.npz", allow_pickle=False) as z:
        assert z["block_1"].dtype == np.int32
    assert vdna.load_vdna_from_files(tmp_path / "edge").data["block_1"][0, 0] == np.iinfo(np.int32).max


# ------------------------------------------------------------------------------------ reference layout
def _write_reference_pair(path, kind, neurons, arrays, num_images=4, extractor="mugs_vit_base"):
    """A DNA exactly as the reference package writes it (keys, float32 stats, pickled placeholders)."""
    dist_type = "histogram" if kind.startswith("histogram") else kind
    meta = {
        "time_of_compute": "10:00AM on January 01, 2024",
        "vdna_version": "0.1.1",
        "distribution": {"hist_nb_bins": int(kind.split("-")[1])} if dist_type == "histogram" else {},
        "type": dist_type,
        "name": kind,
        "data_settings": {k: None for k in REF_DATA_SETTINGS},
        "extraction_settings": dict(ExtractionSettings().__dict__),
        "num_images": num_images,
        "feature_extractor_name": extractor,
        "neurons_list": neurons,
    }
    with open(str(path) + ".json", "w") as f:
        json.dump(meta, f, indent=4)
    np.savez_compressed(str(path) + ".npz", **arrays)


def test_loads_reference_files_with_pickled_placeholders_without_unpickling(tmp_path, rng, no_pickle):
    neurons = {"block_0": 3, "last_norm": 2}
    mu = {l: rng.normal(size=c).astype(np.float32) for l, c in neurons.items()}
    var = {l: rng.uniform(0.1, 1, size=c).astype(np.float32) for l, c in neurons.items()}
    arrays = {}
    for l in neurons:  # the reference's loop: a pickled {} under the layer name, then the stats
        arrays[l] = {}
        arrays["mu-" + l] = mu[l]
        arrays["var-" + l] = var[l]
    _write_reference_pair(tmp_path / "ref", "gaussian", neurons, arrays)
    with zipfile.ZipFile(tmp_path / "ref.npz") as zf:  # the file really holds object arrays
        assert "block_0.npy" in zf.namelist()

    v = vdna.load_vdna_from_files(tmp_path / "ref")
    assert v.type == "gaussian" and v.num_images == 4 and v.feature_extractor_name == "mugs_vit_base"
    assert v.meta == {}
    for l in neurons:
        assert v.data[l]["mu"].dtype == np.float64
        np.testing.assert_array_equal(v.data[l]["mu"], mu[l].astype(np.float64))
        np.testing.assert_array_equal(v.data[l]["var"], var[l].astype(np.float64))
        assert list(v.data[l]) == ["mu", "var"]


def test_loads_reference_histogram_and_layer_gaussian(tmp_path, rng, no_pickle):
    neurons = {"relu_1_1": 2, "relu_1_2": 3}
    counts = {l: rng.integers(0, 1000, size=(c, 5)).astype(np.int32) for l, c in neurons.items()}
    _write_reference_pair(tmp_path / "h", "histogram-5", neurons, counts)
    h = vdna.load_vdna_from_files(tmp_path / "h.json")
    assert h.hist_nb_bins == 5
    for l in neurons:
        np.testing.assert_array_equal(h.data[l], counts[l])

    arrays = {}
    for l, c in neurons.items():
        arrays[l] = {}
        arrays["mu-" + l] = rng.normal(size=c)
        arrays["sigma-" + l] = np.eye(c) * 2.0
    _write_reference_pair(tmp_path / "lg", "layer-gaussian", neurons, arrays)
    lg = vdna.load_vdna_from_files(tmp_path / "lg")
    np.testing.assert_array_equal(lg.data["relu_1_2"]["sigma"], np.eye(3) * 2.0)


# ------------------------------------------------------------------------------------------- atomicity
def _listing(path):
    return sorted(os.listdir(path))


def test_failed_npz_write_keeps_previous_pair_and_leaves_no_temp_files(tmp_path, rng, monkeypatch):
    old = make_dna("histogram-7", rng)
    old.save(tmp_path / "d")
    new = make_dna("histogram-7", rng)

    def broken_savez(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        new.save(tmp_path / "d")
    assert _listing(tmp_path) == ["d.json", "d.npz"]
    assert_same_data(old, vdna.load_vdna_from_files(tmp_path / "d"))


@pytest.mark.parametrize("failing_call", [1, 2])
def test_failed_rename_keeps_previous_pair(tmp_path, rng, monkeypatch, failing_call):
    old = make_dna("gaussian", rng)
    old.save(tmp_path / "d")
    new = make_dna("gaussian", rng)
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == failing_call:
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="I/O error"):
        new.save(tmp_path / "d")
    monkeypatch.setattr(os, "replace", real_replace)
    assert _listing(tmp_path) == ["d.json", "d.npz"]
    assert_same_data(old, vdna.load_vdna_from_files(tmp_path / "d"))


def test_failed_second_rename_without_previous_pair_leaves_nothing(tmp_path, rng, monkeypatch):
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if str(dst).endswith(".npz"):
            raise OSError(5, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError):
        make_dna("gaussian", rng).save(tmp_path / "fresh")
    assert _listing(tmp_path) == []


def test_save_overwrites_existing_pair(tmp_path, rng):
    make_dna("gaussian", rng).save(tmp_path / "d")
    new = make_dna("gaussian", rng, num_images=99)
    new.save(tmp_path / "d")
    w = vdna.load_vdna_from_files(tmp_path / "d")
    assert w.num_images == 99
    assert_same_data(new, w)
    assert _listing(tmp_path) == ["d.json", "d.npz"]


def test_mismatched_pair_is_detected(tmp_path, rng):
    # What a crash between the two renames leaves: the new JSON next to the old .npz.
    make_dna("gaussian", rng).save(tmp_path / "a")
    make_dna("gaussian", rng).save(tmp_path / "b")
    os.replace(tmp_path / "b.json", tmp_path / "a.json")
    with pytest.raises(ValueError, match=r"a\.npz") as info:
        vdna.load_vdna_from_files(tmp_path / "a")
    assert "does not match" in str(info.value)


# ---------------------------------------------------------------------------------------- bad files
def _ref_gaussian(tmp_path, rng, name="r"):
    neurons = {"block_0": 3}
    arrays = {"block_0": {}, "mu-block_0": rng.normal(size=3).astype(np.float32),
              "var-block_0": np.ones(3, np.float32)}
    _write_reference_pair(tmp_path / name, "gaussian", neurons, arrays)
    return tmp_path / name


@pytest.mark.parametrize("ours", [True, False])
def test_truncated_npz_error_names_the_file(tmp_path, rng, ours):
    base = tmp_path / "t"
    if ours:
        make_dna("histogram-7", rng).save(base)
    else:
        base = _ref_gaussian(tmp_path, rng, "t")
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.npz"):
        vdna.load_vdna_from_files(base)


def test_corrupted_npz_bytes_error_names_the_file(tmp_path, rng):
    base = _ref_gaussian(tmp_path, rng, "c")
    data = bytearray((tmp_path / "c.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "c.npz") as zf:  # flip bytes inside the first stored member's data
        info = zf.getinfo("mu-block_0.npy")
    local = info.header_offset  # the local header's own name/extra lengths (they differ from the central one's)
    start = local + 30 + int.from_bytes(data[local + 26:local + 28], "little") + int.from_bytes(
        data[local + 28:local + 30], "little")
    for i in range(start + 5, start + 15):
        data[i] ^= 0xFF
    (tmp_path / "c.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"c\.npz"):
        vdna.load_vdna_from_files(base)


def test_npz_that_is_not_a_zip(tmp_path, rng):
    base = _ref_gaussian(tmp_path, rng, "z")
    (tmp_path / "z.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"z\.npz.*corrupt"):
        vdna.load_vdna_from_files(base)


def test_corrupt_json_error_names_the_file(tmp_path, rng):
    make_dna("gaussian", rng).save(tmp_path / "j")
    text = (tmp_path / "j.json").read_text()
    (tmp_path / "j.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"j\.json.*JSON"):
        vdna.load_vdna_from_files(tmp_path / "j")


@pytest.mark.parametrize("key", ["name", "num_images", "feature_extractor_name", "neurons_list"])
def test_missing_json_key(tmp_path, rng, key):
    base = _ref_gaussian(tmp_path, rng)
    meta = json.loads((tmp_path / "r.json").read_text())
    del meta[key]
    (tmp_path / "r.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"r\.json.*'{key}'"):
        vdna.load_vdna_from_files(base)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "kernel-density"}, "unknown distribution"),
        ({"name": "histogram-0", "type": "histogram"}, ">= 1"),
        ({"type": "histogram"}, "does not match"),
        ({"neurons_list": {"block_0": 0}}, "positive integer"),
        ({"num_images": -3}, "num_images"),
        ({"vdna": {"format_version": 99}}, "upgrade"),
    ],
)
def test_bad_json_values(tmp_path, rng, change, message):
    base = _ref_gaussian(tmp_path, rng)
    meta = json.loads((tmp_path / "r.json").read_text())
    meta.update(change)
    (tmp_path / "r.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        vdna.load_vdna_from_files(base)


def test_arrays_disagreeing_with_neurons_list(tmp_path, rng):
    base = _ref_gaussian(tmp_path, rng)
    meta = json.loads((tmp_path / "r.json").read_text())
    meta["neurons_list"] = {"block_0": 4}
    (tmp_path / "r.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"r\.npz.*'mu-block_0'.*'block_0'.*expected shape \(4,\), got \(3,\)"):
        vdna.load_vdna_from_files(base)


def test_missing_and_extra_arrays(tmp_path, rng):
    base = _ref_gaussian(tmp_path, rng)
    meta = json.loads((tmp_path / "r.json").read_text())
    meta["neurons_list"] = {"block_0": 3, "block_1": 3}
    (tmp_path / "r.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"missing array 'mu-block_1' for layer 'block_1'"):
        vdna.load_vdna_from_files(base)

    arrays = {"mu-block_0": np.zeros(3), "var-block_0": np.ones(3), "mu-ghost": np.zeros(2)}
    _write_reference_pair(tmp_path / "x", "gaussian", {"block_0": 3}, arrays)
    with pytest.raises(ValueError, match=r"x\.npz.*mu-ghost"):
        vdna.load_vdna_from_files(tmp_path / "x")


def test_histogram_with_wrong_bins_dtype_or_negative_counts(tmp_path):
    neurons = {"l": 2}
    _write_reference_pair(tmp_path / "h", "histogram-4", neurons, {"l": np.ones((2, 5), np.int32)})
    with pytest.raises(ValueError, match=r"'l'.*expected shape \(2, 4\), got \(2, 5\)"):
        vdna.load_vdna_from_files(tmp_path / "h")
    _write_reference_pair(tmp_path / "f", "histogram-4", neurons, {"l": np.ones((2, 4), np.float32)})
    with pytest.raises(ValueError, match=r"dtype float32, expected integer"):
        vdna.load_vdna_from_files(tmp_path / "f")
    _write_reference_pair(tmp_path / "n", "histogram-4", neurons, {"l": -np.ones((2, 4), np.int32)})
    with pytest.raises(ValueError, match=r"negative counts"):
        vdna.load_vdna_from_files(tmp_path / "n")


def test_missing_files(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=r"nothing\.json"):
        vdna.load_vdna_from_files(tmp_path / "nothing")
    make_dna("gaussian", rng).save(tmp_path / "half")
    os.unlink(tmp_path / "half.npz")
    with pytest.raises(FileNotFoundError, match=r"half\.npz"):
        vdna.load_vdna_from_files(tmp_path / "half")


def test_read_npz_never_allocates_what_a_corrupt_header_claims(tmp_path):
    np.savez_compressed(tmp_path / "a.npz", x=np.zeros(4))
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        payload = zf.read("x.npy")
    header_end = payload.index(b"\n") + 1
    header = payload[:header_end].replace(b"'shape': (4,)", b"'shape': (99999999999,)")
    # keep the header length a multiple of 64 bytes as the format requires
    pad = (64 - len(header) % 64) % 64
    header = header[:-1] + b" " * pad + b"\n"
    header = header[:8] + (len(header) - 10).to_bytes(2, "little") + header[10:]
    forged = header + payload[header_end:]
    with zipfile.ZipFile(tmp_path / "b.npz", "w") as zf:
        zf.writestr("x.npy", forged)
    with pytest.raises(ValueError, match=r"b\.npz.*header announces"):
        vfiles.read_npz(str(tmp_path / "b.npz"))


def test_saving_an_inconsistent_dna_fails_before_writing(tmp_path, rng):
    v = make_dna("gaussian", rng)
    v.data["block_1"]["var"] = np.ones(4)  # neurons_list says 5
    with pytest.raises(ValueError, match=r"'var-block_1'.*expected shape \(5,\), got \(4,\)"):
        v.save(tmp_path / "bad")
    del v.data["block_1"]
    with pytest.raises(ValueError, match=r"no data for layer 'block_1'"):
        v.save(tmp_path / "bad")
    assert _listing(tmp_path) == []


def test_reference_style_dotted_name_pair_loads_with_warning(tmp_path):
    # The reference package saved "set_0.5" as "set_0.json"/"set_0.npz" (Path.with_suffix).
    import shutil

    v = make_dna("histogram-8", np.random.default_rng(3))
    v.save(tmp_path / "saved")
    shutil.copy(tmp_path / "saved.json", tmp_path / "set_0.json")
    shutil.copy(tmp_path / "saved.npz", tmp_path / "set_0.npz")
    with pytest.warns(UserWarning, match="reference package"):
        w = vdna.load_vdna_from_files(tmp_path / "set_0.5")
    assert_same_data(w, v)
    with pytest.raises(FileNotFoundError, match="other_0.5.json"):
        vdna.load_vdna_from_files(tmp_path / "other_0.5")
