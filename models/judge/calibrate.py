"""Judge calibration: AUROC, precision/recall, and the threshold that reaches a target precision.

The positive class is "the criterion holds" (a clean item): precision is the share of items a
threshold lets through that really are good, which is what bootstrapping needs (a bad triplet in
the pool is worse than a good one missed). numpy only: a few hundred scores need nothing more.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def auroc(scores, labels) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative),
    ties counted half (Mann-Whitney U with midranks). NaN when one class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # midranks: tied scores share the mean of the ranks they span
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = 0.5 * (a + b - 1) + 1.0
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def precision_recall(scores, labels, threshold: float) -> tuple[float, float]:
    """(precision, recall) of the positive class for `score >= threshold`; precision is 1.0 when
    nothing passes (no false accepts), recall NaN without positives."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    passed = s >= threshold
    tp = int((passed & y).sum())
    precision = tp / int(passed.sum()) if passed.any() else 1.0
    recall = tp / int(y.sum()) if y.any() else math.nan
    return precision, recall


def pick_threshold(scores, labels, target_precision: float) -> float:
    """The lowest threshold (most recall) whose precision is >= target_precision.

    Candidates are the observed scores; when no threshold reaches the target, the highest score
    plus a hair is returned (nothing passes: a judge that cannot be trusted accepts nothing)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    for t in np.unique(s):  # ascending: the first that reaches the target keeps the most positives
        p, _ = precision_recall(s, y, t)
        if p >= target_precision and (s >= t).any():
            return float(t)
    return float(np.nextafter(s.max(), np.inf)) if len(s) else 1.0


@dataclass(frozen=True)
class CriterionReport:
    criterion: str
    auroc: float
    threshold: float
    precision: float
    recall: float
    positives: int
    negatives: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def report_criterion(name: str, scores, labels, target_precision: float) -> CriterionReport:
    t = pick_threshold(scores, labels, target_precision)
    p, r = precision_recall(scores, labels, t)
    y = np.asarray(labels, dtype=bool)
    return CriterionReport(name, auroc(scores, labels), t, p, r, int(y.sum()), int((~y).sum()))


def selection_rates(scores: list[dict[str, float]], kinds: list[str], thresholds: dict[str, float]) -> dict[str, float]:
    """Share of items accepted (every criterion >= its threshold), per item kind and overall."""
    acc = [all(s.get(n, 0.0) >= t for n, t in thresholds.items()) for s in scores]
    out = {k: float(np.mean([a for a, kk in zip(acc, kinds) if kk == k])) for k in sorted(set(kinds))}
    out["all"] = float(np.mean(acc)) if acc else math.nan
    return out


def _parts(kinds: list[str]) -> dict[str, list[bool]]:
    codec = [k.endswith("+codec") for k in kinds]
    return {"raw": [not c for c in codec], "codec": codec} if any(codec) else {}


def calibrate(judge, items, target_precision: float) -> dict:
    """Score a labelled benchmark (a layer task's `Domain.benchmark`) with `judge`, and report per
    criterion: AUROC, the threshold reaching `target_precision` with its precision/recall, and the
    precision/recall at the judge's current threshold; plus selection rates per corruption kind."""
    import time

    t0 = time.perf_counter()
    judgements = judge.judge([it.panels for it in items])
    seconds = time.perf_counter() - t0
    scores = [j.scores for j in judgements]
    kinds = [it.kind for it in items]
    criteria, chosen = {}, {}
    for c in judge.criteria:
        s = [sc[c.name] for sc in scores]
        y = [it.label(c.name) for it in items]
        rep = report_criterion(c.name, s, y, target_precision).to_dict()
        p, r = precision_recall(s, y, c.threshold)
        rep.update(configured_threshold=c.threshold, configured_precision=p,
                   configured_recall=None if math.isnan(r) else r)
        for part, keep in _parts(kinds).items():  # raw items and codec round trips, apart
            a = auroc([x for x, k in zip(s, keep) if k], [x for x, k in zip(y, keep) if k])
            rep[f"auroc_{part}"] = None if math.isnan(a) else a
        criteria[c.name] = rep
        chosen[c.name] = rep["threshold"]
    configured = {c.name: c.threshold for c in judge.criteria}
    return {
        "judge": judge.describe(),
        "benchmark": {"items": len(items), "panel_size": items[0].panels[0].size[0] if items else None,
                      "kinds": {k: kinds.count(k) for k in sorted(set(kinds))}},
        "target_precision": target_precision,
        "criteria": criteria,
        "thresholds": chosen,
        "selection_rate": selection_rates(scores, kinds, chosen),
        "selection_rate_configured": selection_rates(scores, kinds, configured),
        "seconds": round(seconds, 3),
        "seconds_per_triplet": round(seconds / max(len(items), 1), 5),
    }
