"""`vdna sensitivity`, `vdna weights learn|inspect|evaluate` and `--weights W` on compare and rank."""
import csv
import json

import numpy as np
import pytest

import tiny_extractor  # noqa: F401  (registers "tiny")
import vdna
from vdna import NeuronWeights, procedural as P
from vdna.cli import main
from vdna.customise import attribute_dnas

TINY = ["--import", "tiny_extractor", "--extractor", "tiny", "--backend", "eager", "-q", "--workers", "1"]
ATTRS = ("stripes", "disc", "warm", "dim")


def in_process(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Histogram DNAs with/without four attributes (training and held-out images), and image folders."""
    root = tmp_path_factory.mktemp("custom_cli")
    images, table = P.make_attribute_images(48, size=(32, 32))
    ranges = vdna.calibrate(np.stack(images), "tiny", backend="eager", verbose=False, output=str(root / "ranges.json"))
    cols = {a: table[:, P.ATTRIBUTES.index(a)] for a in ATTRS}
    for split, seed in (("train", 0), ("held", 0)):
        imgs, _ = P.make_attribute_images(48, seed=seed, split="train" if split == "train" else "held-out",
                                          size=(32, 32))
        pairs = attribute_dnas(imgs, cols, "tiny", "histogram-20", backend="eager", activation_ranges=ranges)
        for a, (w, wo) in pairs["histogram-20"].items():
            w.save(root / split / f"{a}_with")
            wo.save(root / split / f"{a}_without")
    # image folders: the stripes pair, for sources given to `vdna sensitivity` and `vdna rank`
    from PIL import Image

    for name, mask in (("striped", cols["stripes"]), ("plain", ~cols["stripes"])):
        (root / name).mkdir()
        for i in np.flatnonzero(mask)[:8]:
            Image.fromarray(images[i]).save(root / name / f"{i:03d}.png")
    return root


def test_sensitivity_command_matches_library(data, tmp_path, capsys):
    W, WO = data / "train" / "stripes_with", data / "train" / "stripes_without"
    code, out, err = in_process(capsys, "sensitivity", "--with", W, "--without", WO, "-o", tmp_path / "s.csv",
                                "--select", "3", "--weights-out", tmp_path / "sel", "--plot", tmp_path / "s.png")
    assert code == 0, err
    a, b = vdna.load_vdna_from_files(W), vdna.load_vdna_from_files(WO)
    expected = vdna.sensitivity([(a, b)])
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    for row in rows:
        assert float(row["sensitivity"]) == float(expected[row["layer"]][int(row["neuron"])])
    sel = NeuronWeights.load(tmp_path / "sel")
    assert sel == NeuronWeights.top_k(expected, 3, like=a)
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "s_neurons.png").stat().st_size > 1000
    assert "most sensitive" in out

    # a baseline: the signal-to-noise ratio
    code, out, err = in_process(capsys, "sensitivity", "--with", W, "--without", WO, "--baseline",
                                data / "train" / "disc_with", data / "train" / "disc_without", "-o", tmp_path / "b.csv")
    assert code == 0, err
    snr = vdna.sensitivity([(a, b)], baseline=[(vdna.load_vdna_from_files(data / "train" / "disc_with"),
                                                vdna.load_vdna_from_files(data / "train" / "disc_without"))])
    with open(tmp_path / "b.csv") as f:
        first = next(csv.DictReader(f))
    assert float(first["sensitivity"]) == float(snr["conv1"][0])
    assert "signal-to-noise" in out


def test_sensitivity_from_image_sources(data, tmp_path, capsys):
    code, out, err = in_process(capsys, "sensitivity", "--with", data / "striped", "--without", data / "plain",
                                "-o", tmp_path / "s.csv", "--distribution", "gaussian", *TINY)
    assert code == 0, err
    proc = vdna.VDNAProcessor()
    kw = dict(feat_extractor_name="tiny", distribution_name="gaussian", backend="eager", verbose=False)
    a, b = proc.make_vdna(str(data / "striped"), **kw), proc.make_vdna(str(data / "plain"), **kw)
    expected = vdna.sensitivity([(a, b)])
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert float(row["sensitivity"]) == float(expected[row["layer"]][int(row["neuron"])])


def test_learn_inspect_evaluate_and_use(data, tmp_path, capsys):
    tr, ho = data / "train", data / "held"
    keep = [x for a in ATTRS[1:] for x in ("--keep", f"{tr / a}_with:{tr / a}_without")]
    code, out, err = in_process(capsys, "weights", "learn", "--ignore", f"{tr}/stripes_with:{tr}/stripes_without",
                                *keep, "-o", tmp_path / "w", "--csv", tmp_path / "w.csv")
    assert code == 0, err and "removal" in out
    w = NeuronWeights.load(tmp_path / "w")
    load = vdna.load_vdna_from_files
    pairs = {a: (load(tr / f"{a}_with"), load(tr / f"{a}_without")) for a in ATTRS}
    expected = vdna.learn_weights([pairs["stripes"]], [pairs[a] for a in ATTRS[1:]])
    assert w == expected  # the LP is deterministic
    assert len((tmp_path / "w.csv").read_text().splitlines()) == 11

    code, out, err = in_process(capsys, "weights", "inspect", tmp_path / "w", "--json")
    d = json.loads(out)
    assert d["nonzero"] == w.nonzero() and d["extractor"] == "tiny" and d["meta"]["learned"]["solver"] == "lp"
    code, out, _ = in_process(capsys, "weights", "inspect", tmp_path / "w")
    assert code == 0 and "learned: solver lp" in out

    held = {a: (load(ho / f"{a}_with"), load(ho / f"{a}_without")) for a in ATTRS}
    code, out, err = in_process(capsys, "weights", "evaluate", tmp_path / "w", "--ignore",
                                f"{ho}/stripes_with:{ho}/stripes_without",
                                *[x for a in ATTRS[1:] for x in ("--keep", f"{ho / a}_with:{ho / a}_without")], "--json")
    assert code == 0, err
    assert json.loads(out) == vdna.evaluate_weights(w, [held["stripes"]], [held[a] for a in ATTRS[1:]])

    # --weights W on compare and rank
    A, B = tr / "stripes_with", tr / "stripes_without"
    r = json.loads(in_process(capsys, "compare", A, B, "--weights", tmp_path / "w", "--json")[1])
    assert r["distance"] == float(vdna.EMD(*pairs["stripes"], weights=w)) and r["weighted"]
    code, out, err = in_process(capsys, "rank", data / "striped", "--reference", A, "--weights", tmp_path / "w.json",
                                "--ranges", data / "ranges.json", "--json", "--import", "tiny_extractor", "--backend", "eager", "-q", "--workers", "1")
    assert code == 0, err
    ranking = json.loads(out)["ranking"]
    expected_rank = vdna.rank_images(str(data / "striped"), pairs["stripes"][0], neuron_weights=w, backend="eager",
                                     activation_ranges=str(data / "ranges.json"), num_workers=1)
    assert [(x["image"], x["distance"]) for x in ranking] == expected_rank


def test_errors_are_one_line(data, tmp_path, capsys):
    tr = data / "train"
    code, _, err = in_process(capsys, "weights", "learn", "--ignore", f"{tr}/stripes_with", "--keep", "a:b", "-o",
                              tmp_path / "w")
    assert code == 1 and "WITH:WITHOUT" in err
    code, _, err = in_process(capsys, "sensitivity", "--with", tr / "stripes_with", "--with", tr / "disc_with",
                              "--without", tr / "stripes_without", "-o", tmp_path / "s.csv")
    assert code == 1 and "as many --with as --without" in err
    other = NeuronWeights.from_dict({"conv1": np.ones(4), "conv2": np.ones(5)}, like=_FakeLike())
    other.save(tmp_path / "other")
    code, _, err = in_process(capsys, "compare", tr / "stripes_with", tr / "stripes_without", "--weights",
                              tmp_path / "other")
    assert code == 1 and "neurons list" in err and len(err.strip().splitlines()) == 1
    code, _, err = in_process(capsys, "weights", "inspect", tmp_path / "missing")
    assert code == 1 and "not found" in err


class _FakeLike:
    feature_extractor_name = "tiny"
    neurons_list = {"conv1": 4, "conv2": 5}


def test_weight_evaluation_plot(tmp_path):
    from vdna.plots import plot_weight_evaluation

    fig = plot_weight_evaluation({"stripes": {"removal": 0.97, "deviation": 0.05}, "disc": {"removal": 0.9,
                                                                                           "deviation": 0.1}},
                                 save=tmp_path / "e.png")
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [5.0, 10.0, 90.0, 97.0]  # percent
    assert (tmp_path / "e.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="removal"):
        plot_weight_evaluation({})
