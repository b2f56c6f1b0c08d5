"""The measurement judge: explicit per-criterion image measurements, mapped to scores in [0, 1].

Why not a learned judge in the tiny profile: measured, a tiny Qwen2.5-VL trained from scratch for
10 CPU minutes stays at AUROC 0.5-0.7, and a CNN fails the cross-panel criteria (docs/stack-notes.md).
Every cross-panel question is instead answered by a measurement that can be read and checked.

A layer task's judge (models/domains/<task>/judge.py) is a `MeasureJudge` with its own `measure`
(three panels -> named raw measurements) and `checks`: per criterion, a list of
(measurement, value scoring 0.9, value scoring 0.1, what a bad value means). A criterion's score
is its worst check; its reason names that check. NaN measurements are skipped ("not measurable").
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from PIL import Image

from models.judge.base import Criterion, Judge, Scored

LN9 = math.log(9.0)
Checks = dict[str, list[tuple[str, float, float, str]]]


def to_score(x: float, good: float, bad: float) -> float:
    """Logistic map with score 0.9 at `good` and 0.1 at `bad` (either direction)."""
    if not math.isfinite(x):
        return 0.0
    mid, half = 0.5 * (good + bad), 0.5 * (good - bad)
    z = LN9 * (x - mid) / half
    return float(1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0))))


def criterion_scores(m: dict[str, float], names: Sequence[str], checks: Checks) -> tuple[dict[str, float], dict[str, str]]:
    """Each criterion's score (its worst check) and a reason naming that check and its value."""
    scores, reasons = {}, {}
    for name in names:
        worst, why = 1.0, "ok: every check passes"
        for key, good, bad, text in checks[name]:
            v = m[key]
            if math.isnan(v):
                continue
            s = to_score(v, good, bad)
            if s < worst:
                worst = s
                why = text.format(v=v) if s < 0.5 else f"ok; weakest check {key} = {v:.3g}"
        scores[name], reasons[name] = worst, why
    return scores, reasons


class MeasureJudge(Judge):
    """A judge without a model or a GPU: the task's `measure` + `criterion_scores` over its `checks`.
    Subclasses (one per layer task) set `checks`, `measure` and `panels`."""

    kind = "measure"
    checks: Checks = {}
    measure: Callable[[Image.Image, Image.Image, Image.Image], dict[str, float]]

    def __init__(self, criteria: Sequence[Criterion], panel_size: int | None = None, batch_size: int = 64):
        unknown = sorted({c.name for c in criteria} - set(self.checks))
        if unknown:
            raise ValueError(f"the measurement judge has no measurement for {unknown}; it knows {list(self.checks)}")
        super().__init__(criteria, panel_size, batch_size)

    def score(self, batch, prompts) -> list[Scored]:
        names = [c.name for c in self.criteria]
        return [Scored(*criterion_scores(self.measure(*t), names, self.checks)) for t in batch]
