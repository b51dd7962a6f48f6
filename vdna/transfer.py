"""Which training dataset transfers best to a target domain (paper Sec. 5.5, Eq. 8, Tab. 3).

``rank_datasets`` ranks candidate (training) datasets by the distance of their DNAs to each target
(deployment) dataset's DNA, closest first. ``ranking_discrepancy`` measures how good such a predicted
ranking is against ground-truth scores (e.g. the mIoU on the target of a model trained on each
candidate), Eq. 8:

    d = 1/(|V| |T|) Σ_v Σ_i |score_v(T_gt[i]) − score_v(T_pred[i])|

where V are the targets, T the candidates, T_gt the candidates sorted by score (best first) and T_pred
the predicted order. A perfect ranking gives 0; ties in the scores do not matter (tied candidates have
the same score at either position). ``random_ranking_discrepancy`` is the baseline of random rankings.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .distances import distances_to, metric_name
from .dna import VDNA


def rank_datasets(targets: Mapping[str, VDNA], candidates: Mapping[str, VDNA], metric=None,
                  weights=None) -> Dict[str, List[Tuple[str, float]]]:
    """For each target, ``[(candidate name, distance), ...]`` closest first (ties keep the order of
    ``candidates``). ``metric``: "EMD", "NFD" or "FD" (default: the one that fits the DNAs' type);
    ``weights``: neuron weights of the distance (paper Eq. 5; for FD one per layer)."""
    for what, d in (("targets", targets), ("candidates", candidates)):
        if not isinstance(d, Mapping) or not d:
            raise ValueError(f"{what} must be a non-empty {{name: VDNA}} mapping")
        for name, v in d.items():
            if not isinstance(v, VDNA):
                raise TypeError(f"{what}['{name}'] must be a VDNA, got {type(v).__name__}")
    names = list(candidates)
    out = {}
    for t_name, target in targets.items():
        m = metric if metric is not None else metric_name(target)
        try:
            dist = np.asarray(distances_to(target, [candidates[c] for c in names], weights=weights, metric=m),
                              dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"target '{t_name}': {exc}") from exc
        order = np.argsort(dist, kind="stable")
        out[t_name] = [(names[i], float(dist[i])) for i in order]
    return out


def _check_scores(scores) -> Dict[str, Dict[str, float]]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty {target: {candidate: score}} mapping")
    out, cands = {}, None
    for t, row in scores.items():
        if not isinstance(row, Mapping) or not row:
            raise ValueError(f"scores['{t}'] must be a non-empty {{candidate: score}} mapping")
        vals = {str(c): float(s) for c, s in row.items()}
        bad = [c for c, s in vals.items() if not np.isfinite(s)]
        if bad:
            raise ValueError(f"scores['{t}']['{bad[0]}'] is not a finite number")
        if cands is None:
            cands = set(vals)
        elif set(vals) != cands:
            raise ValueError(f"scores['{t}'] has candidates {sorted(vals)}, other targets have {sorted(cands)}")
        out[str(t)] = vals
    return out


def _names(ranking) -> List[str]:
    # a list of names, or rank_datasets' [(name, distance), ...]
    return [str(r[0]) if isinstance(r, (tuple, list)) else str(r) for r in ranking]


def _discrepancy(order_gt: np.ndarray, order_pred: np.ndarray, values: np.ndarray) -> float:
    return float(np.sum(np.abs(values[order_gt] - values[order_pred])))


def ranking_discrepancy(predicted: Mapping[str, Sequence], scores: Mapping[str, Mapping[str, float]],
                        higher_is_better: bool = True) -> float:
    """Eq. 8: mean over targets and rank positions of |score(true i-th) − score(predicted i-th)|.

    ``predicted``: {target: candidate names best first} (or ``rank_datasets``' output); ``scores``:
    {target: {candidate: score}}, the same candidates for every target; ``higher_is_better`` (mIoU,
    accuracy) or not (an error rate)."""
    sc = _check_scores(scores)
    if not isinstance(predicted, Mapping):
        raise TypeError(f"predicted must be a {{target: [candidates]}} mapping, got {type(predicted).__name__}")
    if set(map(str, predicted)) != set(sc):
        raise ValueError(f"predicted has targets {sorted(map(str, predicted))}, scores have {sorted(sc)}")
    total, count = 0.0, 0
    for t, ranking in predicted.items():
        row = sc[str(t)]
        names = _names(ranking)
        if sorted(names) != sorted(row):
            raise ValueError(f"the ranking of target '{t}' must list each scored candidate once: got {names}, "
                             f"scored {sorted(row)}")
        cands = list(row)
        values = np.array([row[c] for c in cands], dtype=np.float64)
        gt = np.argsort(-values if higher_is_better else values, kind="stable")
        pred = np.array([cands.index(n) for n in names])
        total += _discrepancy(gt, pred, values)
        count += len(cands)
    return total / count


def random_ranking_discrepancy(scores: Mapping[str, Mapping[str, float]], samples: int = 50, seed: int = 0,
                               higher_is_better: bool = True) -> Tuple[float, float]:
    """(mean, std) of Eq. 8 over ``samples`` random rankings (each target ranked by an independent
    random permutation; NumPy PCG64 seeded with ``seed``; std with ddof=0): the baseline row of Tab. 3."""
    sc = _check_scores(scores)
    if isinstance(samples, bool) or int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed))))
    out = np.empty(int(samples))
    for s in range(int(samples)):
        predicted = {t: list(np.array(list(row))[rng.permutation(len(row))]) for t, row in sc.items()}
        out[s] = ranking_discrepancy(predicted, sc, higher_is_better)
    return float(out.mean()), float(out.std())


def read_scores_csv(path) -> Dict[str, Dict[str, float]]:
    """Scores from a CSV file with a header ``target,candidate,score`` (one row per pair); ValueError
    naming the file and line for anything else."""
    import csv

    out: Dict[str, Dict[str, float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip().lower() for c in rows[0]] != ["target", "candidate", "score"]:
        raise ValueError(f"{path}: the first line must be the header 'target,candidate,score'")
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 3:
            raise ValueError(f"{path}, line {line}: expected 3 fields (target,candidate,score), got {len(row)}")
        t, c, s = (x.strip() for x in row)
        try:
            value = float(s)
        except ValueError:
            raise ValueError(f"{path}, line {line}: score {s!r} is not a number") from None
        if c in out.setdefault(t, {}):
            raise ValueError(f"{path}, line {line}: a second score for target '{t}', candidate '{c}'")
        out[t][c] = value
    if not out:
        raise ValueError(f"{path}: no scores")
    return out


