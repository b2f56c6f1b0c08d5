"""What every layer task declares (`Domain`), and what their worlds share.

The IC-LoRA, the store and the flow know panels by position only (composite, layer 1, layer 2);
everything a task means lives in its folder, models/domains/<task>/, and its `Domain` (domain.py
there) is what the round reads. models/domains/registry.py lists the tasks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from models.judge.measure import MeasureJudge

Layers = tuple[Image.Image, Image.Image]


def pick(rng: np.random.Generator, seq):
    """One of `seq`, drawn with rng.random only: its stream is the most stable part of numpy's Generator."""
    seq = list(seq)
    return seq[min(int(rng.random() * len(seq)), len(seq) - 1)]


def uniform(rng: np.random.Generator, a: float, b: float) -> float:
    """Uniform in [a, b), rounded to 4 places so a triplet's params read cleanly."""
    return round(a + (b - a) * float(rng.random()), 4)


def check_size(size) -> None:
    """A procedural panel side: an int multiple of 16 (FLUX packs 2x2 latents of an 8x VAE) in [32, 1024]."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size must be an int, got {size!r}")
    if size % 16 or not 32 <= size <= 1024:
        raise ValueError(f"size must be a multiple of 16 between 32 and 1024, got {size}")


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
    # (seed, size, k) -> layer k (1 or 2) drawn on its own, with its description: the compose
    # source's procedural layers (`bootstrap.compose_candidates`); None: only imported ones
    make_layer: Callable[[int, int, int], tuple[Image.Image, str]] | None = None
    # world levels (`data.world_level`): a task whose world has several takes `level=` in `make`,
    # `describe` and `benchmark`; the top level (levels - 1) is the full world
    levels: int = 1

    def at_level(self, level: int) -> "Domain":
        """The task with its world at `level`: seeds, test split, composites without layers,
        procedural layers, prompts and the judge's calibration benchmark all follow it."""
        if not 0 <= level < self.levels:
            raise ValueError(f"{self.name}: world level must be 0..{self.levels - 1}, got {level}")
        if self.levels == 1:
            return self
        bind = functools.partial
        return replace(self, make=bind(self.make, level=level), describe=bind(self.describe, level=level),
                       benchmark=bind(self.benchmark, level=level),
                       make_layer=self.make_layer and bind(self.make_layer, level=level))
