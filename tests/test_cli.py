"""End-to-end tests of the ``vdna`` command.

Every command runs once in a subprocess (``python -m vdna``) on small generated images with the tiny
registered extractor (tests/tiny_extractor.py); options and error paths run in-process through
``vdna.cli.main`` (same code, without paying for a Python start each time). Numbers printed by the
command are checked against the library and, where possible, against NumPy/torch computed here.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_extractor  # noqa: F401  (registers "tiny" in this process too)
import vdna
from vdna.cli import main
from vdna.procedural import write_image_set

TESTS = Path(__file__).resolve().parent
SIZE = (32, 32)  # the tiny extractor's input size: images go in unresized
N = 6
TINY = ["--import", "tiny_extractor", "--extractor", "tiny", "--backend", "eager", "-q", "--workers", "1",
        "--batch-size", "4"]


def run(args, cwd, timeout=300):
    env = dict(os.environ)
    # the tiny extractor's folder, and the vdna this process imported (the checkout or the installed one)
    package_root = str(Path(vdna.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), package_root, env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "vdna", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def in_process(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Image sets, calibrated ranges and histogram DNAs, made with the command itself."""
    root = tmp_path_factory.mktemp("cli")
    for style in ("base", "close", "shifted"):
        write_image_set(root / style, N, seed=0, style=style, size=SIZE)
    broken = write_image_set(root / "broken", 3, seed=0, style="base", size=SIZE)
    (broken / "bad.png").write_bytes(b"this is not a PNG file")

    p = run(["calibrate", "base", "-o", "ranges.json", *TINY], root)
    assert p.returncode == 0, p.stderr
    assert "wrote ranges.json" in p.stdout
    for style in ("base", "close", "shifted"):
        p = run(["make", style, "-o", f"dnas/{style}", "--distribution", "histogram-20", "--ranges", "ranges.json",
                 *TINY], root)
        assert p.returncode == 0, p.stderr
        assert f"wrote dnas/{style}.json and dnas/{style}.npz" in p.stdout
    return root


def tiny_activations(folder):
    """Activations of the tiny net computed here, straight from the PNG files (independent of vdna's pipeline)."""
    from PIL import Image

    files = sorted(Path(folder).glob("*.png"))
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) for f in files]).transpose(0, 3, 1, 2)
    x = (torch.from_numpy(x) / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        return {k: v.numpy().astype(np.float64) for k, v in tiny_extractor.TinyNet()(x).items()}


# ------------------------------------------------------------------------------------- calibrate / make
def test_calibrate_matches_activation_extremes(data):
    ranges = json.loads((data / "ranges.json").read_text())
    acts = tiny_activations(data / "base")
    assert list(ranges) == ["mins_per_neuron", "maxs_per_neuron"]
    for layer, a in acts.items():
        mins = np.array([ranges["mins_per_neuron"][layer][str(i)] for i in range(a.shape[1])])
        maxs = np.array([ranges["maxs_per_neuron"][layer][str(i)] for i in range(a.shape[1])])
        # Both sides run the same float32 forward on the same machine; batch composition may change the conv
        # algorithm (summation order), ~sqrt(27)*eps32 ~ 3e-7 relative of the sum of |terms| for this 3x3x3 conv,
        # so 1e-5 relative (atol for values near 0); a wrong layer or a missed position is off by O(0.1).
        # float32 activations: the eager backend and this forward may differ in the last bits
        np.testing.assert_allclose(mins, a.min(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)  # derived above
        np.testing.assert_allclose(maxs, a.max(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)  # derived above


def test_make_histogram_counts_every_position(data):
    v = vdna.load_vdna_from_files(data / "dnas" / "base")
    assert (v.type, v.hist_nb_bins, v.feature_extractor_name, v.num_images) == ("histogram", 20, "tiny", N)
    # conv1: 15x15 positions per image, conv2: 7x7; every finite value lands in exactly one bin
    assert (v.data["conv1"].sum(axis=1) == N * 15 * 15).all()
    assert (v.data["conv2"].sum(axis=1) == N * 7 * 7).all()


def test_make_gaussian_matches_numpy(data, capsys):
    out = data / "dnas" / "base_gauss"
    code, stdout, _ = in_process(capsys, "make", data / "base", "-o", out, "--distribution", "gaussian", *TINY)
    assert code == 0
    assert "gaussian, tiny, 6 images, 10 neurons" in stdout
    v = vdna.load_vdna_from_files(out)
    for layer, a in tiny_activations(data / "base").items():
        per_image = a.mean(axis=(2, 3))
        # Same float32 forward difference as in the ranges test (~3e-7 relative per activation); the variance of
        # 6 per-image means amplifies it by mean^2/var (~10-100x here), hence 1e-4 there.
        np.testing.assert_allclose(v.data[layer]["mu"], per_image.mean(axis=0), rtol=1e-5, atol=1e-7)  # derived above
        np.testing.assert_allclose(v.data[layer]["var"], per_image.var(axis=0, ddof=1), rtol=1e-4, atol=1e-8)


def test_make_output_suffix_is_appended_not_substituted(data, capsys):
    code, stdout, _ = in_process(capsys, "make", data / "base", "-o", data / "dnas" / "set_0.5.json",
                                 "--distribution", "gaussian", "--num-images", "2", *TINY)
    assert code == 0
    assert (data / "dnas" / "set_0.5.json").is_file() and (data / "dnas" / "set_0.5.npz").is_file()


def test_make_skips_unreadable_image_with_warning(data, capsys):
    code, stdout, err = in_process(capsys, "make", data / "broken", "-o", data / "dnas" / "broken",
                                   "--distribution", "gaussian", *TINY)
    assert code == 0
    assert "vdna: warning:" in err and "skipped" in err
    code, stdout, _ = in_process(capsys, "inspect", data / "dnas" / "broken", "--json")
    info = json.loads(stdout)
    assert info["num_images"] == 3
    assert len(info["skipped_files"]) == 1 and "bad.png" in json.dumps(info["skipped_files"])


def test_make_strict_fails_on_unreadable_image(data, capsys):
    code, _, err = in_process(capsys, "make", data / "broken", "-o", data / "dnas" / "never", "--strict",
                              "--distribution", "gaussian", *TINY)
    assert code == 1
    line = error_line(err)
    assert line.startswith("vdna make: error:") and "bad.png" in line
    assert not (data / "dnas" / "never.json").exists()


def test_make_errors(data, capsys):
    code, _, err = in_process(capsys, "make", data / "nowhere", "-o", data / "x", *TINY)
    assert code == 1 and "not found" in error_line(err) and "nowhere" in err
    # a histogram needs activation ranges: the tiny extractor ships none
    code, _, err = in_process(capsys, "make", data / "base", "-o", data / "x", "--distribution", "histogram-10", *TINY)
    assert code == 1 and "activation ranges" in error_line(err)
    code, _, err = in_process(capsys, "make", data / "base", "-o", data / "x", "--distribution", "histo", *TINY)
    assert code == 1 and "unknown distribution" in error_line(err)
    code, _, err = in_process(capsys, "make", data / "base", "-o", data / "x", "--ranges", data / "missing.json", *TINY)
    assert code == 1 and "missing.json" in error_line(err)
    code, _, err = in_process(capsys, "make", data / "base", "-o", data / "x", "--extractor", "no_such_net",
                              "--backend", "eager", "-q")
    assert code == 1 and "no_such_net" in error_line(err)


def test_import_finds_a_module_in_the_current_folder(data, tmp_path, monkeypatch, capsys):
    """The `vdna` script does not put the current folder on sys.path; --import looks there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    (tmp_path / "cli_probe_module.py").write_text("LOADED = True\n")
    monkeypatch.delitem(sys.modules, "cli_probe_module", raising=False)
    code, out, _ = in_process(capsys, "inspect", data / "dnas" / "base", "--import", "cli_probe_module")
    assert code == 0 and "histogram-20" in out
    assert sys.modules.pop("cli_probe_module").LOADED
    code, _, err = in_process(capsys, "inspect", data / "dnas" / "base", "--import", "no_such_module_here")
    assert code == 1 and "--import no_such_module_here" in error_line(err)


def test_debug_shows_traceback(data, capsys):
    code, _, err = in_process(capsys, "make", data / "base", "-o", data / "x", "--distribution", "histo", "--debug",
                              *TINY)
    assert code == 1 and "Traceback" in err


def test_usage_errors_exit_2(data, capsys):
    for args in ([], ["frobnicate"], ["make", str(data / "base")], ["compare", "a"],
                 ["compare", "a", "b", "--neuron", "3"], ["make", "x", "-o", "y", "--batch-size", "0"]):
        with pytest.raises(SystemExit) as info:
            rc = main(args)
            raise SystemExit(rc)
        assert info.value.code == 2, args
        capsys.readouterr()


# ------------------------------------------------------------------------------------- compare
def test_compare_dnas_json_matches_library(data):
    p = run(["compare", "dnas/base", "dnas/close", "--json"], data)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    a = vdna.load_vdna_from_files(data / "dnas" / "base")
    b = vdna.load_vdna_from_files(data / "dnas" / "close")
    assert result["metric"] == "EMD"
    assert result["distance"] == float(vdna.EMD(a, b))
    assert list(result["layers"]) == ["conv1", "conv2"]
    for layer, value in result["layers"].items():
        assert value == float(vdna.EMD(a, b, use_neurons_from_layer=layer))


def test_compare_table_and_meaning(data, capsys):
    code, out, _ = in_process(capsys, "compare", data / "dnas" / "base", data / "dnas" / "close")
    assert code == 0
    assert "conv1" in out and "conv2" in out and "EMD over all 10 neurons" in out
    close = json.loads(in_process(capsys, "compare", data / "dnas" / "base", data / "dnas" / "close", "--json")[1])
    shifted = json.loads(in_process(capsys, "compare", data / "dnas" / "base", data / "dnas" / "shifted", "--json")[1])
    assert 0 < close["distance"] < shifted["distance"]
    same = json.loads(in_process(capsys, "compare", data / "dnas" / "base", data / "dnas" / "base.json", "--json")[1])
    assert same["distance"] == 0.0


def test_compare_selection_neuron_wise_and_weights(data, tmp_path, capsys):
    a = vdna.load_vdna_from_files(data / "dnas" / "base")
    b = vdna.load_vdna_from_files(data / "dnas" / "shifted")
    A, B = data / "dnas" / "base", data / "dnas" / "shifted"
    r = json.loads(in_process(capsys, "compare", A, B, "--layer", "conv2", "--neuron", "3", "--json")[1])
    assert r["distance"] == float(vdna.EMD(a, b, use_neurons_from_layer="conv2", use_neuron_index=3))

    code, out, _ = in_process(capsys, "compare", A, B, "--neuron-wise", tmp_path / "nw.csv", "--top", "3")
    assert code == 0 and "most different neurons" in out
    expected = vdna.EMD(a, b, return_neuron_wise=True)
    with open(tmp_path / "nw.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    for row in rows:
        assert float(row["EMD"]) == float(expected[row["layer"]][int(row["neuron"])])
    in_process(capsys, "compare", A, B, "--layer", "conv1", "--neuron-wise", tmp_path / "nw.json")
    nw = json.loads((tmp_path / "nw.json").read_text())
    assert list(nw["layers"]) == ["conv1"]
    np.testing.assert_array_equal(nw["layers"]["conv1"], expected["conv1"])

    w = np.linspace(0.0, 1.0, 10)
    np.save(tmp_path / "w.npy", w)
    r = json.loads(in_process(capsys, "compare", A, B, "--weights", tmp_path / "w.npy", "--json")[1])
    flat = np.concatenate([expected["conv1"], expected["conv2"]])
    # float64 weighted sum of per-neuron EMDs in two orders: <= n*eps64 ~ 1e-14 relative.
    np.testing.assert_allclose(r["distance"], np.dot(w, flat), rtol=1e-12)
    assert r["weighted"] is True
    (tmp_path / "w.json").write_text(json.dumps({"conv1": w[:4].tolist(), "conv2": w[4:].tolist()}))
    r2 = json.loads(in_process(capsys, "compare", A, B, "--weights", tmp_path / "w.json", "--json")[1])
    assert r2["distance"] == r["distance"]


def test_compare_dna_with_source_uses_the_dna_settings(data):
    p = run(["compare", "dnas/base", "close", "--ranges", "ranges.json", "--import", "tiny_extractor", "--backend",
             "eager", "-q", "--workers", "1", "--json"], data)
    assert p.returncode == 0, p.stderr
    built = json.loads(p.stdout)
    assert built["b"]["type"] == "histogram-20" and built["b"]["extractor"] == "tiny"
    a = vdna.load_vdna_from_files(data / "dnas" / "base")
    b = vdna.load_vdna_from_files(data / "dnas" / "close")
    assert built["distance"] == float(vdna.EMD(a, b))


def test_compare_errors(data, tmp_path, capsys):
    A = data / "dnas" / "base"
    code, _, err = in_process(capsys, "compare", A, data / "dnas" / "nothing.json")
    assert code == 1 and "DNA not found" in error_line(err)
    # incompatible: histogram vs gaussian
    in_process(capsys, "make", data / "close", "-o", tmp_path / "g", "--distribution", "gaussian", *TINY)
    code, _, err = in_process(capsys, "compare", A, tmp_path / "g")
    assert code == 1 and "gaussian" in error_line(err)
    # incompatible: different bin counts
    in_process(capsys, "make", data / "close", "-o", tmp_path / "h5", "--distribution", "histogram-5", "--ranges",
               data / "ranges.json", *TINY)
    code, _, err = in_process(capsys, "compare", A, tmp_path / "h5")
    assert code == 1 and "bin" in error_line(err)
    # wrong type: activation ranges cannot be compared
    in_process(capsys, "make", data / "close", "-o", tmp_path / "r", "--distribution", "activation-ranges", *TINY)
    code, _, err = in_process(capsys, "compare", tmp_path / "r", tmp_path / "r")
    assert code == 1 and "activation-ranges" in error_line(err)
    # half a DNA
    shutil.copy(str(A) + ".json", tmp_path / "half.json")
    code, _, err = in_process(capsys, "compare", A, tmp_path / "half")
    assert code == 1 and "half.npz" in error_line(err)
    code, _, err = in_process(capsys, "compare", A, A, "--layer", "conv9")
    assert code == 1 and "conv9" in error_line(err)
    code, _, err = in_process(capsys, "compare", A, A, "--layer", "conv1", "--neuron", "4")
    assert code == 1 and "out of range" in error_line(err)
    np.save(tmp_path / "w3.npy", np.ones(3))
    code, _, err = in_process(capsys, "compare", A, A, "--weights", tmp_path / "w3.npy")
    assert code == 1 and "weights" in error_line(err)


# ------------------------------------------------------------------------------------- inspect / merge
def test_inspect(data):
    p = run(["inspect", "dnas/base"], data)
    assert p.returncode == 0, p.stderr
    for text in ("histogram-20", "tiny", "images", "conv1", "conv2", "10 neurons", "format"):
        assert text in p.stdout
    p = run(["inspect", "dnas/missing"], data)
    assert p.returncode == 1
    assert error_line(p.stderr).startswith("vdna inspect: error: DNA not found")


def test_merge_of_shards_equals_whole(data, capsys):
    files = sorted((data / "base").glob("*.png"))
    for k, part in enumerate((files[:2], files[2:])):
        shard = data / f"shard{k}"
        shard.mkdir(exist_ok=True)
        for f in part:
            shutil.copy(f, shard / f.name)
        assert in_process(capsys, "make", shard, "-o", data / "dnas" / f"shard{k}", "--distribution", "histogram-20",
                          "--ranges", data / "ranges.json", *TINY)[0] == 0
    p = run(["merge", "dnas/shard0", "dnas/shard1", "-o", "dnas/merged"], data)
    assert p.returncode == 0, p.stderr
    assert "merged from 2 DNAs" in p.stdout
    whole = vdna.load_vdna_from_files(data / "dnas" / "base")
    merged = vdna.load_vdna_from_files(data / "dnas" / "merged")
    assert merged.num_images == whole.num_images
    for layer in whole.neurons_list:
        np.testing.assert_array_equal(merged.data[layer], whole.data[layer])

    code, _, err = in_process(capsys, "merge", data / "dnas" / "base", data / "dnas" / "base_gauss", "-o",
                              data / "dnas" / "bad")
    assert code == 1 and "cannot merge" in error_line(err)
    code, _, err = in_process(capsys, "merge", data / "dnas" / "base", "-o", data / "dnas" / "bad")
    assert code == 1 and "at least two" in error_line(err)


# ------------------------------------------------------------------------------------- rank
def test_rank_end_to_end(data, capsys):
    mix = data / "mix"
    mix.mkdir(exist_ok=True)
    for style in ("close", "shifted"):
        for f in sorted((data / style).glob("*.png"))[:3]:
            shutil.copy(f, mix / f"{style}_{f.name}")
    p = run(["rank", "mix", "--reference", "dnas/base", "-o", "scores.csv", "--top", "2", "--grid", "grid.png",
             "--ranges", "ranges.json", "--import", "tiny_extractor", "--backend", "eager", "-q", "--workers", "1",
             "--batch-size", "4"], data)
    assert p.returncode == 0, p.stderr
    assert "6 images ranked by EMD" in p.stdout and "closest 2" in p.stdout
    assert (data / "grid.png").stat().st_size > 1000
    with open(data / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == list(range(1, 7))
    scores = [float(r["EMD"]) for r in rows]
    assert scores == sorted(scores)
    # each score is the EMD of that image's own DNA (made separately) to the reference
    reference = vdna.load_vdna_from_files(data / "dnas" / "base")
    one = rows[-1]["image"]
    assert in_process(capsys, "make", data / one, "-o", data / "dnas" / "one", "--distribution", "histogram-20",
                      "--ranges", data / "ranges.json", *TINY)[0] == 0
    single = vdna.load_vdna_from_files(data / "dnas" / "one")
    # The CSV holds repr() of a float64 (round-trips exactly); the tolerance only covers summation order.
    assert float(rows[-1]["EMD"]) == pytest.approx(float(vdna.EMD(reference, single)), rel=1e-12)


def test_rank_errors(data, tmp_path, capsys):
    code, _, err = in_process(capsys, "rank", data / "base", "--reference", tmp_path / "none")
    assert code == 1 and "DNA not found" in error_line(err)
    in_process(capsys, "make", data / "close", "-o", tmp_path / "r", "--distribution", "activation-ranges", *TINY)
    code, _, err = in_process(capsys, "rank", data / "base", "--reference", tmp_path / "r", "--import",
                              "tiny_extractor", "--backend", "eager", "-q")
    assert code == 1 and "activation-ranges" in error_line(err)
    code, _, err = in_process(capsys, "rank", data / "nowhere", "--reference", data / "dnas" / "base")
    assert code == 1 and "nowhere" in error_line(err)


# ------------------------------------------------------------------------------------- plots, build-shim
def test_compare_plot(data, capsys):
    code, out, _ = in_process(capsys, "compare", data / "dnas" / "base", data / "dnas" / "shifted", "--plot",
                              data / "cmp.png")
    assert code == 0 and "figure written" in out
    assert_png(data / "cmp.png", (500, 400))


def assert_png(path, min_size=(400, 300)):
    """``path`` is a readable PNG of at least ``min_size`` pixels."""
    from PIL import Image

    with Image.open(path) as img:
        img.verify()  # a complete, uncorrupted file
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] >= min_size[0] and img.size[1] >= min_size[1], img.size


def test_make_and_inspect_plot_a_summary(data):
    p = run(["make", "base", "-o", "dnas/plotted", "--distribution", "gaussian", "--plot", "figs/make.png", *TINY], data)
    assert p.returncode == 0, p.stderr
    assert "figure written to figs/make.png" in p.stdout
    assert_png(data / "figs" / "make.png")
    p = run(["inspect", "dnas/base", "--plot", "figs/inspect.png"], data)
    assert p.returncode == 0, p.stderr
    assert "histogram-20" in p.stdout and "figure written to figs/inspect.png" in p.stdout
    assert_png(data / "figs" / "inspect.png")


def test_rank_plot_is_the_grid(data, capsys):
    args = ["rank", data / "close", "--reference", data / "dnas" / "base", "--top", "2", "--ranges",
            data / "ranges.json", "--backend", "eager", "-q", "--workers", "1"]
    code, out, _ = in_process(capsys, *args, "--plot", data / "rank_plot.png")
    assert code == 0 and "image grid written" in out
    code, _, _ = in_process(capsys, *args, "--grid", data / "rank_grid.png")
    assert code == 0
    assert_png(data / "rank_plot.png", (300, 200))
    from PIL import Image

    with Image.open(data / "rank_plot.png") as a, Image.open(data / "rank_grid.png") as b:
        assert a.size == b.size


def test_plot_without_matplotlib_is_one_error_line_before_any_work(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, _, err = in_process(capsys, "make", data / "base", "-o", tmp_path / "m", "--distribution", "gaussian",
                              "--plot", tmp_path / "m.png", *TINY)
    assert code == 1 and "needs matplotlib" in error_line(err) and "pip install" in err
    assert not (tmp_path / "m.json").exists()  # nothing was computed
    for args in (["inspect", data / "dnas" / "base"], ["compare", data / "dnas" / "base", data / "dnas" / "close"]):
        code, out, err = in_process(capsys, *args, "--plot", tmp_path / "x.png")
        assert code == 1 and "needs matplotlib" in error_line(err) and out == ""
    code, _, err = in_process(capsys, "rank", data / "close", "--reference", data / "dnas" / "base", "--grid",
                              tmp_path / "g.png")
    assert code == 1 and "needs matplotlib" in error_line(err)


def test_build_shim_reports_failure_in_one_line(monkeypatch, capsys):
    from vdna.backends import build

    def fail(*args, **kwargs):
        raise build.ShimBuildError("compiling the shim failed (exit 1):\ng++ ...\nerror: something")

    monkeypatch.setattr(build, "build_shim", fail)
    code, _, err = in_process(capsys, "build-shim")
    assert code == 1
    assert err.splitlines()[-1].startswith("vdna build-shim: error: cannot build the LibTorch shim")
    assert "error: something" in err  # the compiler output is shown above the one-line summary

    monkeypatch.setattr(build, "build_shim", lambda *a, **k: Path("/cache/libvdna_shim.so"))
    code, out, _ = in_process(capsys, "build-shim")
    assert code == 0 and "/cache/libvdna_shim.so" in out


# ------------------------------------------------------------------------------------- demo
def test_demo_small(tmp_path):
    """The demo end to end with rand_resnet50 and its shipped ranges (few images: ResNet-50 on CPU is slow)."""
    p = run(["demo", "--num-images", "3", "--bins", "50", "--out", "demo"], tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr
    for text in ("base vs close", "base vs shifted", "Ranking", "What the numbers mean", "layer4_2"):
        assert text in p.stdout
    for style in ("base", "close", "shifted"):
        v = vdna.load_vdna_from_files(tmp_path / "demo" / "dnas" / style)
        assert (v.feature_extractor_name, v.hist_nb_bins, v.num_images) == ("rand_resnet50", 50, 3)
    base = vdna.load_vdna_from_files(tmp_path / "demo" / "dnas" / "base")
    close = vdna.load_vdna_from_files(tmp_path / "demo" / "dnas" / "close")
    assert f"{float(vdna.EMD(base, close)):8.3f}" in p.stdout
    for name in ("layer_distances", "top_neurons", "neuron_histograms", "ranking_grid"):
        assert (tmp_path / "demo" / "plots" / f"{name}.png").stat().st_size > 5000


def test_make_offline_flag_names_the_file_to_place(data, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VDNA_OFFLINE", raising=False)  # --offline alone must keep the network off
    monkeypatch.setenv("VDNA_HOME", str(tmp_path / "home"))
    args = ("make", data / "base", "-o", tmp_path / "x", "--extractor", "dino_vit_base", "--backend", "eager", "-q")
    code, _, err = in_process(capsys, *args, "--offline")
    line = error_line(err)
    assert code == 1 and "--offline" in line and "dino_vitbase16_pretrain.pth" in line
    assert f"place it at {tmp_path / 'home' / 'weights' / 'dino_vit_base'}" in line
    code, _, err = in_process(capsys, *args, "--offline", "--allow-download")
    assert code == 1 and "contradict" in error_line(err)
