"""`vdna stability` and `vdna rank-datasets` (in-process, tiny extractor)."""
import csv
import json

import pytest

import tiny_extractor  # noqa: F401  (registers "tiny")
import vdna
from vdna.cli import main
from vdna.procedural import write_image_set
from vdna.stability import StabilityCurve

TINY = ["--extractor", "tiny", "--backend", "eager", "-q", "--workers", "1", "--batch-size", "1"]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stab_cli")
    for style, n in (("base", 12), ("close", 6), ("shifted", 6)):
        write_image_set(root / style, n, seed=0, style=style, size=(32, 32))
    assert main(["calibrate", str(root / "base"), "-o", str(root / "ranges.json"), *TINY]) == 0
    for style in ("base", "close", "shifted"):
        for dist in ("histogram-20", "layer-gaussian"):
            args = ["make", str(root / style), "-o", str(root / f"{style}_{dist}"), "--distribution", dist, *TINY]
            if dist.startswith("histogram"):
                args += ["--ranges", str(root / "ranges.json")]
            assert main(args) == 0
    return root


def test_stability_command(root, capsys):
    code, out, err = cli(capsys, "stability", root / "base", "--reference", root / "shifted_histogram-20",
                         root / "shifted_layer-gaussian", "--sizes", 3, 6, 12, "--repeats", 3, "--ranges",
                         root / "ranges.json", "-o", root / "c.csv", "--save", root / "c.npz", "--json", *TINY)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["sizes"] == [3, 6, 12] and summary["repeats"] == 3
    curve = StabilityCurve.load(root / "c.npz")
    by_metric = {r["metric"]: r for r in summary["metrics"]}
    assert by_metric["emd"]["stable_size"] == curve.stable_size("emd", 0.05)
    assert by_metric["fd"]["full"] == curve.full_value("fd")
    # all 12 images: the DNA made by `vdna make` gives the same EMD, bit for bit
    base = vdna.load_vdna_from_files(root / "base_histogram-20")
    ref = vdna.load_vdna_from_files(root / "shifted_histogram-20")
    assert curve.full_value("emd") == vdna.EMD(ref, base)
    rows = list(csv.DictReader(open(root / "c.csv")))
    assert {r["metric"] for r in rows} == set(curve.metrics)
    code, out, _ = cli(capsys, "stability", root / "base", "--reference", root / "shifted_histogram-20", "--sizes", 3,
                       12, "--repeats", 2, "--ranges", root / "ranges.json", *TINY)
    assert code == 0 and "emd/conv1" in out and "stable N" in out


def test_stability_errors(root, capsys):
    code, _, err = cli(capsys, "stability", root / "base", "--reference", root / "shifted_histogram-20", "--sizes",
                       50, "--ranges", root / "ranges.json", *TINY)
    assert code == 1 and "larger than the source" in err
    code, _, err = cli(capsys, "stability", root / "base", "--reference", root / "shifted_histogram-20",
                       "--distributions", "layer-gaussian", *TINY)
    assert code == 1 and "no reference DNA of type 'layer-gaussian'" in err


def test_rank_datasets_command(root, capsys, tmp_path):
    scores = tmp_path / "s.csv"
    scores.write_text("target,candidate,score\nbase,close,60\nbase,shifted,20\n")
    code, out, err = cli(capsys, "rank-datasets", "--targets", root / "base_histogram-20", "--candidates",
                         f"close={root / 'close_histogram-20'}", f"shifted={root / 'shifted_histogram-20'}",
                         "--json")
    assert code == 0, err
    assert list(json.loads(out)["rankings"]) == ["base_histogram-20"]  # unnamed: the file's base name
    code, out, err = cli(capsys, "rank-datasets", "--targets", f"base={root / 'base_histogram-20'}", "--candidates",
                         f"close={root / 'close_histogram-20'}", f"shifted={root / 'shifted_histogram-20'}",
                         "--scores", scores, "--json")
    assert code == 0, err
    res = json.loads(out)
    t = vdna.load_vdna_from_files(root / "base_histogram-20")
    dists = {c: float(vdna.EMD(t, vdna.load_vdna_from_files(root / f"{c}_histogram-20"))) for c in ("close", "shifted")}
    ranking = res["rankings"]["base"]
    assert [r["distance"] for r in ranking] == sorted(dists.values())
    best_first = [r["candidate"] for r in ranking]
    # Eq. 8 by hand: 0 when close ranks first, else (|60-20| + |20-60|) / 2 = 40
    assert res["discrepancy"] == (0.0 if best_first == ["close", "shifted"] else 40.0)
    assert res["random_discrepancy"]["samples"] == 50
    scores.write_text("target,candidate,score\nbase,close,60\n")
    code, _, err = cli(capsys, "rank-datasets", "--targets", f"base={root / 'base_histogram-20'}", "--candidates",
                       f"close={root / 'close_histogram-20'}", f"shifted={root / 'shifted_histogram-20'}",
                       "--scores", scores)
    assert code == 1 and "candidates are" in err
