"""Dataset ranking for transfer (vdna.transfer): Eq. 8 on hand-worked tables, rankings against direct
distances."""
import itertools
import math

import numpy as np
import pytest

import vdna
from vdna.transfer import rank_datasets, random_ranking_discrepancy, ranking_discrepancy, read_scores_csv

from dna_factory import make_dna

SCORES = {"v1": {"A": 50.0, "B": 40.0, "C": 30.0}, "v2": {"A": 10.0, "B": 10.0, "C": 40.0}}


def test_perfect_ranking_gives_zero_and_ties_do_not_matter():
    assert ranking_discrepancy({"v1": ["A", "B", "C"], "v2": ["C", "A", "B"]}, SCORES) == 0.0
    assert ranking_discrepancy({"v1": ["A", "B", "C"], "v2": ["C", "B", "A"]}, SCORES) == 0.0  # A, B tied


def test_hand_worked_discrepancy():
    # v1 reversed: |50-30| + |40-40| + |30-50| = 40; v2 [A, C, B] against [C, A|B, ...]: gt scores 40, 10, 10,
    # predicted 10, 40, 10 -> 30 + 30 + 0 = 60; d = (40 + 60) / (2 targets x 3 candidates)
    d = ranking_discrepancy({"v1": ["C", "B", "A"], "v2": ["A", "C", "B"]}, SCORES)
    assert d == pytest.approx(100 / 6, rel=4 * np.finfo(float).eps)  # 6 additions of exact integers, one division
    # rank_datasets' output form is accepted too
    d2 = ranking_discrepancy({"v1": [("C", 0.1), ("B", 0.2), ("A", 0.3)], "v2": [("A", 1), ("C", 2), ("B", 3)]},
                             SCORES)
    assert d2 == d
    # lower is better (an error rate): the order flips, so the reversed v1 ranking becomes perfect
    assert ranking_discrepancy({"v1": ["C", "B", "A"]}, {"v1": SCORES["v1"]}, higher_is_better=False) == 0.0


def test_reversed_ranking_is_the_maximum():
    rng = np.random.default_rng(4)
    for _ in range(5):
        row = {c: float(s) for c, s in zip("ABCDE", rng.uniform(0, 100, 5))}
        best = sorted(row, key=row.get, reverse=True)
        worst = max(ranking_discrepancy({"t": list(p)}, {"t": row}) for p in itertools.permutations(row))
        # both sides sum the same 5 terms of magnitude <= 100 (in another order) and divide by 5
        assert abs(ranking_discrepancy({"t": best[::-1]}, {"t": row}) - worst) <= 5 * 100 * np.finfo(float).eps


def test_random_baseline_matches_the_exact_expectation():
    perms = list(itertools.permutations("ABC"))
    exact_v1 = np.mean([ranking_discrepancy({"v1": list(p)}, {"v1": SCORES["v1"]}) for p in perms])
    exact_v2 = np.mean([ranking_discrepancy({"v2": list(p)}, {"v2": SCORES["v2"]}) for p in perms])
    mean, std = random_ranking_discrepancy(SCORES, samples=2000, seed=1)
    # d of a sample is the mean of the two targets' (independent) discrepancies
    assert abs(mean - (exact_v1 + exact_v2) / 2) < 4 * std / math.sqrt(2000)
    assert std > 0
    assert random_ranking_discrepancy(SCORES, samples=10, seed=3) == random_ranking_discrepancy(SCORES, 10, 3)
    with pytest.raises(ValueError, match="samples"):
        random_ranking_discrepancy(SCORES, samples=0)


def test_bad_tables():
    with pytest.raises(ValueError, match="each scored candidate once"):
        ranking_discrepancy({"v1": ["A", "A", "C"], "v2": ["A", "B", "C"]}, SCORES)
    with pytest.raises(ValueError, match="targets"):
        ranking_discrepancy({"v1": ["A", "B", "C"]}, SCORES)
    with pytest.raises(ValueError, match="other targets"):
        ranking_discrepancy({"v1": ["A"], "v2": ["A"]}, {"v1": {"A": 1.0}, "v2": {"B": 1.0}})
    with pytest.raises(ValueError, match="finite"):
        ranking_discrepancy({"v1": ["A"]}, {"v1": {"A": float("nan")}})


def test_rank_datasets_against_direct_distances():
    rng = np.random.default_rng(0)
    for dist, fn in (("histogram-20", vdna.EMD), ("layer-gaussian", vdna.FD), ("gaussian", vdna.NFD)):
        targets = {f"t{i}": make_dna(dist, rng) for i in range(2)}
        cands = {c: make_dna(dist, rng) for c in "PQRS"}
        cands["dup"] = cands["Q"]  # a tie: keeps the order of `candidates`
        out = rank_datasets(targets, cands)
        for t, ranking in out.items():
            direct = {c: float(fn(targets[t], v)) for c, v in cands.items()}
            assert [d for _, d in ranking] == sorted(direct.values())
            for c, d in ranking:
                assert d == direct[c]  # distances_to makes the same core calls as EMD / FD / NFD
            names = [c for c, _ in ranking]
            assert names.index("Q") < names.index("dup")
    # neuron weights reach the distance (Eq. 5)
    t, cands = make_dna("histogram-20", rng), {c: make_dna("histogram-20", rng) for c in "AB"}
    w = np.zeros(8)
    w[0] = 1.0
    got = dict(rank_datasets({"t": t}, cands, weights=w)["t"])
    assert got["A"] == float(vdna.EMD(t, cands["A"], weights=w))
    with pytest.raises(ValueError, match="target 't'"):
        rank_datasets({"t": t}, {"g": make_dna("gaussian", rng)})
    with pytest.raises(ValueError, match="non-empty"):
        rank_datasets({}, cands)


def test_read_scores_csv(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("target,candidate,score\nv1,A,50\nv1,B,40\n\nv2,A,1.5\nv2,B,2\n")
    assert read_scores_csv(p) == {"v1": {"A": 50.0, "B": 40.0}, "v2": {"A": 1.5, "B": 2.0}}
    p.write_text("target,candidate,score\nv1,A,x\n")
    with pytest.raises(ValueError, match="line 2"):
        read_scores_csv(p)
    p.write_text("a,b\n")
    with pytest.raises(ValueError, match="header"):
        read_scores_csv(p)
