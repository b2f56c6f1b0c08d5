"""The judge interface: per-criterion scores in [0, 1] with short reasons, and the accept rule.

A judge scores a batch of (composite, logo, object) triplets. Panels may be PIL images or encoded
bytes (PNG as stored in blobs). Whatever goes wrong with one item (it does not decode, has the
wrong size or mode, or the model returns NaN for it) rejects that item with a reason; the rest
of the batch, and the round, go on.

Accept rule: every criterion's score >= its threshold. A score that is missing, not a finite
number, or outside [0, 1] is a failure of that criterion (stored as 0.0, with the reason saying
why); a result that is not a `Scored` at all, or a wrong number of results, rejects the items
concerned, never the batch.
"""
from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Sequence, Union

from PIL import Image

from models.iclora.grid import PANEL_NAMES
from storage.images import ImageError, decode_image

Panel = Union[Image.Image, bytes]
MAX_REASON_CHARS = 200  # reasons go into every manifest row: keep them short


@dataclass(frozen=True)
class Criterion:
    name: str
    question: str  # yes/no question template; `{prompt}` is replaced by the triplet's prompt
    threshold: float


@dataclass(frozen=True)
class Judgement:
    scores: dict[str, float]  # criterion -> score in [0, 1]
    reasons: dict[str, str]  # criterion -> short reason
    accepted: bool
    reject_reason: str | None  # None when accepted


@dataclass(frozen=True)
class Scored:
    """What a judge backend returns for one valid item, before the accept rule."""

    scores: dict[str, float]
    reasons: dict[str, str]


def failing(scores: dict[str, float], criteria: Sequence[Criterion]) -> list[str]:
    """Criteria whose score does not clear the threshold (NaN and missing scores never do)."""
    out = []
    for c in criteria:
        s = scores.get(c.name, math.nan)
        if not (isinstance(s, (int, float)) and math.isfinite(s) and s >= c.threshold):
            out.append(c.name)
    return out


SCORE_TOLERANCE = 1e-6  # scores this far outside [0, 1] are rounding error; further out, garbage


def bad_score(v: object) -> str | None:
    """Why `v` is not a usable score in [0, 1], or None when it is."""
    if v is None:
        return "missing score"
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return f"non-numeric score ({v!r:.40})"
    if not math.isfinite(float(v)):
        return f"non-finite score ({float(v)})"
    if not -SCORE_TOLERANCE <= float(v) <= 1 + SCORE_TOLERANCE:
        return f"out-of-range score ({float(v):g}, expected 0..1)"
    return None


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def rejected(criteria: Sequence[Criterion], why: str) -> Judgement:
    """An item that could not be judged: every criterion 0.0 with the same reason."""
    why = _short(why)
    return Judgement({c.name: 0.0 for c in criteria}, {c.name: why for c in criteria}, False, why)


class Judge(ABC):
    """Subclasses implement `score` (and optionally `explain`); `judge` does validation, batching,
    fault isolation and the accept rule, identically for every backend."""

    kind: str = "judge"
    panels: tuple[str, ...] = PANEL_NAMES  # a layer task's judge names its own panels, for messages

    def __init__(self, criteria: Sequence[Criterion], panel_size: int | None = None, batch_size: int = 8):
        if not criteria:
            raise ValueError("a judge needs at least one criterion")
        names = [c.name for c in criteria]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate criterion names: {names}")
        self.criteria = tuple(criteria)
        self.panel_size = panel_size
        self.batch_size = max(1, int(batch_size))

    # ---- backend hooks -------------------------------------------------------------------
    @abstractmethod
    def score(self, batch: list[tuple[Image.Image, Image.Image, Image.Image]],
              prompts: list[str | None]) -> list[Scored]:
        """Scores (and reasons, possibly empty) for a batch of validated RGB triplets."""

    def explain(self, batch: list[tuple[Image.Image, Image.Image, Image.Image]], prompts: list[str | None],
                failed: list[list[str]]) -> list[dict[str, str]]:
        """Reasons for the failed criteria of rejected items (backends with costly reasons, like a
        VLM generating text, make them here, only for what was rejected). Default: none."""
        return [{} for _ in batch]

    def describe(self) -> dict:
        """What produced the scores (goes into calibration files)."""
        return {"kind": self.kind, "criteria": {c.name: c.threshold for c in self.criteria}}

    def with_thresholds(self, thresholds: dict[str, float]) -> "Judge":
        """This judge with some thresholds replaced, e.g. the calibrated ones (in place; returns self)."""
        unknown = set(thresholds) - {c.name for c in self.criteria}
        if unknown:
            raise ValueError(f"thresholds for unknown criteria: {sorted(unknown)}")
        self.criteria = tuple(Criterion(c.name, c.question, float(thresholds.get(c.name, c.threshold)))
                              for c in self.criteria)
        return self

    # ---- the one entry point --------------------------------------------------------------
    def judge(self, triplets: Sequence[tuple[Panel, Panel, Panel]],
              prompts: Sequence[str | None] | None = None) -> list[Judgement]:
        prompts = list(prompts) if prompts is not None else [None] * len(triplets)
        if len(prompts) != len(triplets):
            raise ValueError(f"{len(prompts)} prompts for {len(triplets)} triplets")
        out: list[Judgement | None] = [None] * len(triplets)
        valid: list[int] = []
        panels: list[tuple[Image.Image, Image.Image, Image.Image]] = []
        for i, t in enumerate(triplets):
            try:
                panels.append(self._validate(t))
                valid.append(i)
            except ImageError as e:
                out[i] = rejected(self.criteria, f"unusable input: {e}")
        for start in range(0, len(valid), self.batch_size):
            idx = valid[start : start + self.batch_size]
            batch = panels[start : start + self.batch_size]
            for i, j in zip(idx, self._judge_batch(batch, [prompts[i] for i in idx])):
                out[i] = j
        return out  # type: ignore[return-value]

    def _validate(self, t) -> tuple[Image.Image, Image.Image, Image.Image]:
        if not isinstance(t, (tuple, list)) or len(t) != 3:
            raise ImageError(f"expected three panels ({', '.join(self.panels)})")
        imgs = []
        for name, p in zip(self.panels, t):
            if isinstance(p, (bytes, bytearray)):
                p = decode_image(bytes(p), f"{name} panel", size=self.panel_size)
            elif not isinstance(p, Image.Image):
                raise ImageError(f"{name} panel: expected an image or PNG bytes, got {type(p).__name__}")
            elif p.mode != "RGB":
                raise ImageError(f"{name} panel: mode {p.mode!r}, expected 'RGB'")
            imgs.append(p)
        sizes = {im.size for im in imgs}
        want = (self.panel_size, self.panel_size) if self.panel_size else imgs[0].size
        for name, im in zip(self.panels, imgs):
            if im.size != want or want[0] != want[1]:
                raise ImageError(f"{name} panel: {im.size[0]}x{im.size[1]} px, expected {want[0]}x{want[0]}"
                                 + ("" if len(sizes) == 1 else " (panels differ in size)"))
        return imgs[0], imgs[1], imgs[2]

    def _judge_batch(self, batch, prompts) -> list[Judgement]:
        try:
            scored = self.score(batch, prompts)
            if len(scored) != len(batch):
                raise RuntimeError(f"judge returned {len(scored)} results for {len(batch)} items")
        except Exception as e:  # isolate the item that breaks the batch: retry one by one
            if len(batch) == 1:
                return [rejected(self.criteria, f"judge failed on this item: {type(e).__name__}: {e}")]
            return [j for k in range(len(batch)) for j in self._judge_batch(batch[k : k + 1], prompts[k : k + 1])]
        return self._finish(batch, prompts, scored)

    def _finish(self, batch, prompts, scored: list[Scored]) -> list[Judgement]:
        results = []  # (scores, reasons, failed criteria, criteria with garbage scores); None: garbage item
        for s in scored:
            if not isinstance(s, Scored) or not isinstance(s.scores, Mapping):
                results.append(None)
                continue
            given = s.reasons if isinstance(s.reasons, Mapping) else {}
            scores, reasons, broken = {}, {}, []
            for c in self.criteria:
                v = s.scores.get(c.name)
                problem = bad_score(v)
                if problem is None:
                    scores[c.name] = min(max(float(v), 0.0), 1.0)  # only rounding error is clipped
                    reasons[c.name] = _short(given.get(c.name, ""))
                else:  # NaN/inf logits, a missing, non-numeric or out-of-range score: a failure, never a pass
                    scores[c.name] = 0.0
                    reasons[c.name] = f"{problem} from the judge"
                    broken.append(c.name)
            failed = list(dict.fromkeys(broken + failing(scores, self.criteria)))
            results.append((scores, reasons, failed, broken))
        todo = [k for k, r in enumerate(results) if r is not None and set(r[2]) - set(r[3])]
        if todo:
            try:
                extra = self.explain([batch[k] for k in todo], [prompts[k] for k in todo],
                                     [[n for n in results[k][2] if n not in results[k][3]] for k in todo])
            except Exception as e:  # a reason is a nicety: never lose the scores over it
                extra = [{n: f"score {results[k][0][n]:.2f} (no reason: {type(e).__name__})"
                          for n in results[k][2] if n not in results[k][3]} for k in todo]
            for k, more in zip(todo, extra if isinstance(extra, list) else []):
                for n, text in (more.items() if isinstance(more, Mapping) else ()):
                    if n in results[k][2] and n not in results[k][3]:  # reasons only for what failed
                        results[k][1][n] = _short(text)
        out = []
        for s, result in zip(scored, results):
            if result is None:
                what = type(s).__name__ if not isinstance(s, Scored) else f"scores of type {type(s.scores).__name__}"
                out.append(rejected(self.criteria, f"judge returned garbage for this item ({what})"))
                continue
            scores, reasons, failed, _ = result
            why = "; ".join(f"{n}: {reasons[n] or f'score {scores[n]:.2f}'}" for n in failed)
            out.append(Judgement(scores, reasons, not failed, _short(why) if failed else None))
        return out


def criteria_of(section) -> list[Criterion]:
    """The config's criteria (a `configs.JudgeSection`) as judge criteria."""
    return [Criterion(c.name, c.question, c.threshold) for c in section.criteria]
