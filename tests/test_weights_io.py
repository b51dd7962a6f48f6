"""vdna.weights_io.read_neuron_weights and vdna.describe.describe_dna (library logic used by the CLI)."""
import json

import numpy as np
import pytest

import vdna
from vdna.describe import describe_dna
from vdna.weights_io import read_neuron_weights

from dna_factory import make_dna


@pytest.fixture
def dna():
    return make_dna("histogram-7", np.random.default_rng(5), neurons={"conv.a": 3, "block_1": 2})


def test_weights_from_npy_npz_and_json(tmp_path, dna):
    flat = np.arange(5, dtype=np.float32)
    np.save(tmp_path / "w.npy", flat)
    got = read_neuron_weights(str(tmp_path / "w.npy"), dna)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, flat)

    np.savez(tmp_path / "w.npz", **{"block_1": np.array([7.0, 8.0]), "conv.a": np.array([1.0, 2.0, 3.0])})
    np.testing.assert_array_equal(read_neuron_weights(str(tmp_path / "w.npz"), dna), [1, 2, 3, 7, 8])  # network order
    np.testing.assert_array_equal(read_neuron_weights(str(tmp_path / "w.npz"), dna, layer="block_1"), [7, 8])

    (tmp_path / "w.json").write_text(json.dumps({"conv.a": [1, 2, 3], "block_1": [4, 5]}))
    np.testing.assert_array_equal(read_neuron_weights(str(tmp_path / "w.json"), dna), [1, 2, 3, 4, 5])
    (tmp_path / "l.json").write_text("[0.5, 1.5]")
    np.testing.assert_array_equal(read_neuron_weights(str(tmp_path / "l.json"), dna), [0.5, 1.5])


@pytest.mark.parametrize("name, content, message", [
    ("w.json", "[" * 100_000, r"w\.json.*nested too deeply"),
    ("w.json", "{\"conv.a\": [1, \"x\"], \"block_1\": [1, 2]}", r"w\.json \(layer 'conv\.a'\).*numbers"),
    ("w.json", "{\"conv.a\": [1, 2, 3]}", r"w\.json has no weights for layer\(s\) \['block_1'\]"),
    ("w.json", "{not json", r"w\.json: not valid JSON"),
    ("w.npy", "garbage", r"w\.npy: not a readable \.npy"),
    ("w.npz", "garbage", r"w\.npz.*corrupt"),
    ("w.txt", "1 2 3", r"w\.txt: use a neuron weights pair.*\.npy"),
])
def test_bad_weights_files_are_value_errors_naming_the_file(tmp_path, dna, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_neuron_weights(str(tmp_path / name), dna)
    if "has no weights" not in message:  # NeuronWeights.from_file reads plain files with the same reader
        from vdna import NeuronWeights

        with pytest.raises(ValueError, match=message):
            NeuronWeights.from_file(str(tmp_path / name), like=dna)


def test_pickled_npy_weights_are_refused(tmp_path, dna):
    np.save(tmp_path / "p.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"p\.npy"):
        read_neuron_weights(str(tmp_path / "p.npy"), dna)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        read_neuron_weights(str(tmp_path / "missing.npy"), dna)


def test_describe_dna(tmp_path, dna):
    dna.meta["nan_counts"] = {"conv.a": 2, "block_1": 3}
    dna.meta["skipped_files"] = [{"name": "x.png", "reason": "broken"}]
    dna.save(tmp_path / "d")
    info = describe_dna(tmp_path / "d.json")
    assert info["path"] == str(tmp_path / "d")
    assert (info["type"], info["name"], info["num_images"]) == ("histogram-7", "histogram-7", dna.num_images)
    assert info["layers"] == {"conv.a": 3, "block_1": 2} and info["neurons"] == 5
    assert info["nan_values"] == 5 and info["skipped_files"] == [{"name": "x.png", "reason": "broken"}]
    assert info["files"] == {"json": (tmp_path / "d.json").stat().st_size, "npz": (tmp_path / "d.npz").stat().st_size}
    assert info["written_by"] == f"vdna {vdna.__version__}" and info["format"].startswith("vdna format 1")
    with pytest.raises(FileNotFoundError):
        describe_dna(tmp_path / "none")
