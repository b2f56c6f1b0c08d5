"""A layer task, declared in one place: what the round needs to know about it.

The IC-LoRA, the store and the flow know panels by position only (composite, layer 1, layer 2);
everything a task means lives here, selected by the config's `domain:` key:

    logo_object   composite = an object carrying a flat logo; layers: logo, object
    intrinsic     composite = albedo x shading; layers: albedo, shading

To add a task, write its procedural world (models/domains/), its measurement judge with a
corruption benchmark (models/judge/), its metrics and trivial baseline, and one `Domain(...)`
entry below (README, "Add a layer task"). A task whose composite is an exact formula of its layers
also gives `recompose`, so that the cycle check can use the formula (`bootstrap.cycle_check`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from models.domains import intrinsic, logo_object
from models.iclora.sample import blank
from models.judge import corruptions
from models.judge import intrinsic as intrinsic_judge
from models.judge.measure import MeasureJudge

Layers = tuple[Image.Image, Image.Image]


@dataclass(frozen=True)
class Domain:
    name: str
    panels: tuple[str, str, str]  # the task's panel names, composite first (grid order)
    # (seed, size) -> a triplet with exact ground truth: `.panels`, `.prompt`, `.footprint` (None
    # when the task has none); used for seeds, the test split and stage (c)'s unlabeled composites
    make: Callable[[int, int], Any]
    describe: Callable[[int], str]  # seed -> a prompt of the world, for candidate generation
    judge: type[MeasureJudge]  # the embedded measurement judge; its `checks` are the criteria it knows
    benchmark: Callable[..., list]  # (run_seed, n, size, codec=) -> labelled corruption benchmark
    metrics: Callable[[Sequence[Layers], Sequence[dict]], dict[str, float]]  # (predicted, test items) -> named values
    baseline: Callable[[Sequence[Image.Image]], list[Layers]]  # composites -> the trivial decomposition
    lower_is_better: bool = False  # of its metrics (PSNR: higher; si-MSE, LMSE: lower)
    # (layer 1, layer 2) -> the composite by the task's exact formula, when it has one: the cycle
    # check can use it instead of the adapter's re-composition (`bootstrap.cycle_check: analytic`)
    recompose: Callable[[Image.Image, Image.Image], Image.Image] | None = None
    # world levels (`data.world_level`): a task whose world has several takes `level=` in `make`,
    # `describe` and `benchmark`; the top level (levels - 1) is the full world
    levels: int = 1

    def at_level(self, level: int) -> "Domain":
        """The task with its world at `level`: seeds, test split, composites without layers,
        prompts and the judge's calibration benchmark all follow it."""
        if not 0 <= level < self.levels:
            raise ValueError(f"{self.name}: world level must be 0..{self.levels - 1}, got {level}")
        if self.levels == 1:
            return self
        bind = functools.partial
        return replace(self, make=bind(self.make, level=level), describe=bind(self.describe, level=level),
                       benchmark=bind(self.benchmark, level=level))


def _logo_object_metrics(predicted: Sequence[Layers], test: Sequence[dict]) -> dict[str, float]:
    from models.loop.evaluate import layer_metrics

    return layer_metrics([p[0] for p in predicted], [p[1] for p in predicted], [t["panels"][1] for t in test],
                         [t["panels"][2] for t in test], [t["footprint"] for t in test])


def _logo_object_baseline(composites: Sequence[Image.Image]) -> list[Layers]:
    """logo = a blank white panel, object = the composite itself."""
    return [(blank(c.size[0]), c) for c in composites]


def _intrinsic_metrics(predicted: Sequence[Layers], test: Sequence[dict]) -> dict[str, float]:
    return intrinsic.intrinsic_metrics([p[0] for p in predicted], [p[1] for p in predicted],
                                       [t["panels"][1] for t in test], [t["panels"][2] for t in test])


def _intrinsic_recompose(albedo: Image.Image, shading: Image.Image) -> Image.Image:
    return Image.fromarray(intrinsic.recompose(np.asarray(albedo.convert("RGB")), np.asarray(shading.convert("RGB"))))


def _intrinsic_baseline(composites: Sequence[Image.Image]) -> list[Layers]:
    return list(zip(*intrinsic.baseline(composites)))


DOMAINS: dict[str, Domain] = {
    "logo_object": Domain("logo_object", logo_object.PANELS, logo_object.make_triplet, logo_object.describe,
                          MeasureJudge, corruptions.build_benchmark, _logo_object_metrics, _logo_object_baseline,
                          levels=logo_object.WORLD_LEVELS),
    "intrinsic": Domain("intrinsic", intrinsic.PANELS, intrinsic.make_triplet, intrinsic.describe,
                        intrinsic_judge.IntrinsicJudge, intrinsic_judge.build_benchmark, _intrinsic_metrics,
                        _intrinsic_baseline, lower_is_better=True, recompose=_intrinsic_recompose),
}


def domain_of(config) -> Domain:
    """The config's layer task (`domain:`), its world at the config's level (`data.world_level`,
    unset: the full world)."""
    domain, level = DOMAINS[config.domain], config.data.world_level
    return domain if level is None else domain.at_level(level)
