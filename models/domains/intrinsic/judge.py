"""The intrinsic task's measurement judge (`composite | albedo | shading`, world.py beside it).

Criteria, each a measurement that can be read and checked (the score map of models/judge/measure.py:
0.9 at `good`, 0.1 at `bad`, a criterion's score is its worst check):

    recomposes          albedo x shading gives the composite back (mean max-channel error)
    shading_achromatic  the shading panel is grey: no colour left in it (mean channel spread)
    albedo_flat         the albedo holds no shading: away from its edges it is flat (mean gentle
                        gradient; flat-coloured regions read ~0, a shading ramp does not)
    shading_smooth      the shading holds no albedo edge (share of pixels with a sharp step)
    quality             composite and albedo are not blank, noisy or blurred (the shading is smooth
                        by nature, so only its noise is checked)

Measured on the corruption benchmark (benchmark.py; 140 items at 64 px, run seed 0, and the same
through the tiny base's codec; `layerboot judge calibrate --config configs/intrinsic_tiny.yaml`):
AUROC recomposes 0.999, shading_achromatic 1.000, albedo_flat 0.998, shading_smooth 0.999,
quality 0.964; accepted at 0.5: clean 100%, clean through the codec 91%, corruptions 0% except
shading moved into the albedo (9%: faint shading makes it nearly invisible).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from models.domains.intrinsic.world import PANELS
from models.judge.image_ops import dilate, gaussian, gradient_magnitude, noise_level, reblur_ratio, to_float
from models.judge.measure import Checks, MeasureJudge

CRITERIA = ("recomposes", "shading_achromatic", "albedo_flat", "shading_smooth", "quality")
ANALYSIS = 64  # every panel is measured at 64 px (box-downsampled): thresholds hold at any size

CHECKS: Checks = {
    "recomposes": [("recompose_miss", 0.02, 0.05, "albedo x shading misses the composite on {v:.1%} of pixels")],
    "shading_achromatic": [("shading_chroma", 0.02, 0.06, "the shading is coloured (channel spread {v:.3f})")],
    "albedo_flat": [("albedo_ramp", 0.0045, 0.0065, "the albedo holds shading (gentle gradient {v:.4f})"),
                    ("albedo_edge_share", 0.6, 0.8, "the albedo is edges everywhere ({v:.0%} of pixels): not flat")],
    "shading_smooth": [("shading_steps", 0.01, 0.04, "the shading holds an albedo edge ({v:.1%} sharp steps)")],
    "quality": [
        ("composite_std", 0.04, 0.01, "composite panel is blank"), ("albedo_std", 0.04, 0.01, "albedo panel is blank"),
        # what an untrained adapter draws: colour blocks at the latent patch's scale, edges everywhere
        # (the noise measure reads flat blocks, which confetti has none of)
        ("composite_edge_share", 0.6, 0.8, "composite panel is confetti (edges on {v:.0%} of pixels)"),
        ("albedo_edge_share", 0.6, 0.8, "albedo panel is confetti (edges on {v:.0%} of pixels)"),
        ("composite_noise", 0.008, 0.018, "composite panel is noisy (sigma {v:.3f})"),
        ("albedo_noise", 0.008, 0.018, "albedo panel is noisy (sigma {v:.3f})"),
        ("shading_noise", 0.008, 0.018, "shading panel is noisy (sigma {v:.3f})"),
        # sharper than the logo world's (0.66, 0.74): shading softens every composite edge
        ("composite_reblur", 0.76, 0.8, "composite panel is blurred (re-blur ratio {v:.2f})"),
        ("albedo_reblur", 0.7, 0.73, "albedo panel is blurred (re-blur ratio {v:.2f})"),
    ],
}
EDGE = 0.08  # a per-pixel step (max channel, at 64 px) this large is an edge, not a ramp
MISS = 0.06  # |albedo x shading - composite| (max channel) beyond this is a miss, not codec error
STEP = 0.03  # |shading - its 1-px blur| this large marks a step (measured: clean shading < 0.01)


def _gradient(x: np.ndarray) -> np.ndarray:
    return gradient_magnitude(x)[1:-1, 1:-1]  # borders have no central difference


def measure(composite: Image.Image, albedo: Image.Image, shading: Image.Image) -> dict[str, float]:
    c, a, s = (to_float(im, ANALYSIS) for im in (composite, albedo, shading))
    edges = dilate(_gradient(a) > EDGE, 3)
    composite_edges = dilate(_gradient(c) > EDGE, 3)
    ramps = _gradient(gaussian(a, 1.5))  # smoothed first: a codec's pixel noise is not a ramp, shading is
    return {
        # the share of pixels it misses by much: a codec's small error everywhere does not count, a
        # wrong region does
        "recompose_miss": float((np.abs(a * s.mean(axis=-1, keepdims=True) - c).max(axis=-1) > MISS).mean()),
        "shading_chroma": float((s.max(axis=-1) - s.min(axis=-1)).mean()),
        "albedo_ramp": float(ramps[~edges].mean()) if (~edges).any() else 0.0,
        "albedo_edge_share": float(edges.mean()),
        "composite_edge_share": float(composite_edges.mean()),
        # a step (an albedo edge) survives a 1-px blur as a residual; smooth shading, even steep, does not
        "shading_steps": float((np.abs(s - gaussian(s, 1.0)).max(axis=-1) > STEP).mean()),
        **{f"{name}_std": float(x.std(axis=(0, 1)).max()) for name, x in (("composite", c), ("albedo", a))},
        **{f"{name}_noise": noise_level(x, 8) for name, x in (("composite", c), ("albedo", a), ("shading", s))},
        **{f"{name}_reblur": reblur_ratio(x, 1.0) for name, x in (("composite", c), ("albedo", a))},
    }


class IntrinsicJudge(MeasureJudge):
    """The intrinsic task's embedded judge: `measure` + the criteria above, no model."""

    kind = "measure-intrinsic"
    panels = PANELS
    checks = CHECKS
    measure = staticmethod(measure)
