"""torch.distributed: `torchrun --nproc_per_node=2` with gloo on the CPU gives the DNA of a one-process
run (histogram counts and activation ranges bit-identical, Gaussians within a derived rounding bound),
on every rank (or on rank dst only); a rank with no images, ranks disagreeing on settings, a failing
rank, streams, per-rank checkpoints, and reduce_accumulator on NaN / Inf / empty ranks.

One torchrun launch runs every case (tests/distributed_worker.py); the tests read what it wrote.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import vdna
from vdna import load_vdna_from_files, procedural

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ["histogram-16", "gaussian", "layer-gaussian", "activation-ranges"]
EPS = np.finfo(np.float64).eps


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    import tiny_extractor  # noqa: F401

    d = tmp_path_factory.mktemp("dist")
    images = procedural.make_images(9, seed=3, style="base", size=(40, 48))
    ranges = vdna.VDNAProcessor().make_vdna(images, feat_extractor_name="tiny", distribution_name="activation-ranges",
                                            device="cpu", backend="eager", verbose=False)
    (d / "ranges.json").write_text(json.dumps(vdna.ActivationRanges.from_any(ranges).to_reference_json()))
    res = d / "results"
    res.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(HERE, "distributed_worker.py"), str(res), str(d / "ranges.json")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return res


def load(out, name):
    return load_vdna_from_files(str(out / name))


def report(out, rank):
    return json.loads((out / f"report.r{rank}.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_give_the_one_process_dna_on_every_rank(out, kind):
    local = load(out, f"{kind}.local.r0")
    assert local.num_images == 9
    for rank in (0, 1):
        v = load(out, f"{kind}.r{rank}")
        assert v.num_images == 9 and v.meta["nan_counts"] == local.meta["nan_counts"]
        for layer, ref in local.data.items():
            got = v.data[layer]
            if kind in ("histogram-16", "activation-ranges"):
                for key in (ref if isinstance(ref, dict) else [None]):
                    np.testing.assert_array_equal(got if key is None else got[key], ref if key is None else ref[key])
                continue
            # One process merges 9 one-image states in sequence (batch_size=1); two ranks merge 4 and
            # 5, then the two states. Each Chan merge rounds the mean by <= 2 eps |mu| and M2 by
            # <= 4 eps (|mu| / sigma + 1) relative (tests/test_accumulator_state.py): 10 merges.
            key = "var" if kind == "gaussian" else "sigma"
            spread = np.sqrt(np.max(np.diagonal(ref[key]) if ref[key].ndim == 2 else ref[key]))
            mag = np.max(np.abs(ref["mu"])) + spread
            np.testing.assert_allclose(got["mu"], ref["mu"], rtol=0, atol=2 * 10 * EPS * mag)
            np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=4 * 10 * EPS * mag * spread)
            assert np.max(np.abs(got[key] - ref[key])) <= 1e-12 * np.max(np.abs(ref[key]))  # the target
        # every rank gets the same bits
        other = load(out, f"{kind}.r{1 - rank}")
        for layer in v.data:
            a, b = v.data[layer], other.data[layer]
            for key in (a if isinstance(a, dict) else [None]):
                np.testing.assert_array_equal(a if key is None else a[key], b if key is None else b[key])


def test_dst_returns_the_dna_on_one_rank_only(out):
    assert report(out, 0)["dst_result_is_none"] is False
    assert report(out, 1)["dst_result_is_none"] is True


def test_a_rank_with_no_images(out):
    for rank in (0, 1):
        v = load(out, f"one.r{rank}")
        assert v.num_images == 1
        # tiny's conv1 output is 15x15 for a 32x32 input: one image gives 225 values per neuron
        assert (v.data["conv1"].sum(axis=1) == 225).all()
    np.testing.assert_array_equal(load(out, "one.r0").data["conv2"], load(out, "one.r1").data["conv2"])


def test_streams_reduce_over_ranks(out):
    ref = load(out, "histogram-16.local.r0")
    for rank in (0, 1):
        v = load(out, f"stream.r{rank}")
        for layer in ref.data:
            np.testing.assert_array_equal(v.data[layer], ref.data[layer])


def test_ranks_disagreeing_on_settings_all_raise_the_same_clear_error(out):
    msgs = [report(out, r)["mismatch"] for r in (0, 1)]
    assert msgs[0] == msgs[1] and "seed: rank 0 has 0, rank 1 has 1" in msgs[0]


def test_a_failing_rank_stops_every_rank_with_an_error(out):
    assert report(out, 1)["failure"] == "OSError: disk on fire"
    assert report(out, 0)["failure"] == "RuntimeError: distributed run stopped: rank 1 failed (OSError: disk on fire)"


def test_a_rank_failing_before_it_starts_stops_every_rank(out):
    own = report(out, 1)["setup_failure"]
    assert own.startswith("FileNotFoundError") and "no_such_folder" in own
    assert report(out, 0)["setup_failure"] == ("RuntimeError: distributed make_vdna stopped before starting: "
                                               f"rank 1 failed ({own})")


def test_one_checkpoint_per_rank(out):
    for r in (0, 1):
        assert report(out, r)["checkpoint_files"] == ["run.ckpt.rank0-of-2", "run.ckpt.rank1-of-2"]
        assert report(out, r)["checkpoint_resume_equal"]


def test_direct_state_reduction_with_nan_inf_and_an_empty_rank(out):
    for r in (0, 1):
        assert report(out, r)["direct"] == {k: "ok" for k in
                                            ["histogram-8", "gaussian", "layer-gaussian", "activation-ranges"]}


def test_vdna_make_under_torchrun_writes_files_from_rank_0_only(out):
    assert [report(out, r)["cli_rc"] for r in (0, 1)] == [0, 0]
    assert (out / "cli_made_by_r0.json").exists() and not (out / "cli_made_by_r1.json").exists()
    assert sorted(p.name for p in out.glob("cli.ckpt*")) == ["cli.ckpt.rank0-of-2", "cli.ckpt.rank1-of-2"]
    v, ref = load(out, "cli_made_by_r0"), load(out, "cli_local.r0")
    assert v.num_images == 9
    for layer in ref.data:
        np.testing.assert_array_equal(v.data[layer], ref.data[layer])


def test_tar_shards_are_split_across_ranks_by_shard(out):
    ref = load(out, "cli_local.r0")  # the same 9 images, one process
    for rank in (0, 1):
        v = load(out, f"shards.r{rank}")
        assert v.num_images == 9
        for layer in ref.data:
            np.testing.assert_array_equal(v.data[layer], ref.data[layer])


def test_rank_images_and_calibrate_over_ranks(out):
    for rank in (0, 1):
        r = report(out, rank)
        assert len(r["rank_images"]) == 9 and r["rank_images"] == r["rank_images_local"]  # names and exact scores
        v, ref = load(out, f"calibrate.r{rank}"), load(out, "activation-ranges.local.r0")
        for layer in ref.data:
            for key in ("min", "max"):
                np.testing.assert_array_equal(v.data[layer][key], ref.data[layer][key])


# ------------------------------------------------------------------------------- stability curves
def _curve_equal(a, b):
    """Curves as JSON (floats round-trip exactly): equal metric for metric, bit for bit. Exact is the
    right bound: counts and per-image means are exact sums over ranks and the curve is computed once."""
    assert a is not None and b is not None
    assert a["metrics"] == b["metrics"] and a["full"] == b["full"]
    for m in a["metrics"]:
        assert a["values"][m] == b["values"][m], m


def test_stability_curves_over_ranks_equal_the_one_process_curve(out):
    for rank in (0, 1):
        s = report(out, rank)["stability"]
        _curve_equal(s["ranks"], s["local"])
        assert {"emd", "fd", "nfd"} <= set(s["local"]["metrics"])
        _curve_equal(s["ref_source_ranks"], s["ref_source_local"])  # the reference source split too
        for name in ("direct_hist", "direct_gauss"):  # SubsetAccumulator fed per rank (interleaved images)
            one, ranks = s[name]
            _curve_equal(ranks, one)
        assert s["empty_rank"] is not None
        _curve_equal(s["direct_mixed"][1], s["direct_mixed"][0])  # 16- and 32-bit tables, unequal maps
        assert min(s["direct_mixed_widths"]) > 0  # both widths were used
        _curve_equal(s["empty_rank"], s["direct_hist"][0])
    # dst=1: the curve on rank 1 only
    s0, s1 = report(out, 0)["stability"], report(out, 1)["stability"]
    assert s0["dst1"] is None
    _curve_equal(s1["dst1"], s0["local"])


def test_stability_over_ranks_rejects_bad_splits_on_every_rank(out):
    for rank in (0, 1):
        s = report(out, rank)["stability"]
        assert "added on more than one rank" in s["twice"] and "image 3" in s["twice"]
        assert "were not added on any rank" in s["missing"] and "image 7" in s["missing"]
        assert "disagree on their settings" in s["mismatch"] and "seed" in s["mismatch"]
        for name in ("direct_hist", "direct_gauss"):
            assert "already reduced over ranks" in s[f"{name}_again"]
    # a rank failing during its share: its own error there, a RuntimeError naming it on the other
    assert "zz_broken.png" in report(out, 1)["stability"]["failure"]
    assert report(out, 0)["stability"]["failure"].startswith("RuntimeError: distributed run stopped: rank 1 failed")
    # after a distributed compute, rank 0 (it summed the states) can compute again; rank 1 is told where
    assert report(out, 0)["stability"]["direct_hist_local_after"] == "ok"
    assert "summed on rank 0" in report(out, 1)["stability"]["direct_hist_local_after"]


def test_vdna_stability_under_torchrun_writes_from_rank_0_only(out):
    r0, r1 = report(out, 0)["stability"], report(out, 1)["stability"]
    assert r0["cli_rc"] == 0 and r1["cli_rc"] == 0
    assert not (out / "stab_r1.csv").exists()
    assert (out / "stab_r0.csv").read_text() == (out / "stab_local.csv").read_text()
