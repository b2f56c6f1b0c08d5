"""The measurement judge of the intrinsic task (`composite | albedo | shading`, models/domains/
intrinsic.py), and its labelled corruption benchmark.

Criteria, each a measurement that can be read and checked (same score map as measure.py: 0.9 at
`good`, 0.1 at `bad`, a criterion's score is its worst check):

    recomposes          albedo x shading gives the composite back (mean max-channel error)
    shading_achromatic  the shading panel is grey: no colour left in it (mean channel spread)
    albedo_flat         the albedo holds no shading: away from its edges it is flat (mean gentle
                        gradient; flat-coloured regions read ~0, a shading ramp does not)
    shading_smooth      the shading holds no albedo edge (share of pixels with a sharp step)
    quality             composite and albedo are not blank, noisy or blurred (the shading is smooth
                        by nature, so only its noise is checked)

Corruptions (what a decomposition gets wrong), each labelled with the criteria it breaks:
shading left in the albedo (the product unchanged: only albedo_flat breaks), an albedo edge in
the shading, colour in the shading, an albedo from another scene, blur / noise / blank panels, and
confetti (colour blocks at the latent patch's scale: what an untrained adapter draws).

Measured (140 items at 64 px, run seed 0, and the same through the tiny base's codec; `layerboot
judge calibrate --config configs/intrinsic_tiny.yaml`): AUROC recomposes 0.999, shading_achromatic
1.000, albedo_flat 0.998, shading_smooth 0.999, quality 0.964; accepted at 0.5: clean 100%, clean
through the codec 91%, corruptions 0% except shading moved into the albedo (9%: faint shading
makes it nearly invisible).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from models.domains.intrinsic import PANELS, make_triplet
from models.judge.measure import MeasureJudge, _grad, dilate, gaussian, noise_level, reblur_ratio, to_float
from storage.hashing import derive_seed

CRITERIA = ("recomposes", "shading_achromatic", "albedo_flat", "shading_smooth", "quality")
KINDS = ("shading_in_albedo", "albedo_edge_in_shading", "coloured_shading", "wrong_albedo", "blur", "noise", "blank",
         "confetti")
ANALYSIS = 64  # every panel is measured at 64 px (box-downsampled): thresholds hold at any size

CHECKS: dict[str, list[tuple[str, float, float, str]]] = {
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
    gy, gx = _grad(x)
    return np.sqrt(gy ** 2 + gx ** 2).max(axis=-1)[1:-1, 1:-1]  # borders have no central difference


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


# ----------------------------------------------------------------------------- benchmark


@dataclass(frozen=True)
class BenchItem:
    kind: str  # "clean" or one of KINDS
    panels: tuple[Image.Image, Image.Image, Image.Image]
    broken: frozenset[str]
    detail: dict = field(default_factory=dict)

    def label(self, criterion: str) -> bool:
        return criterion not in self.broken


def _img(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8), "RGB")


def corrupt(t, kind: str, rng: np.random.Generator, donor) -> tuple[tuple, frozenset, dict]:
    """(panels, criteria broken, detail) of `kind` applied to the clean triplet `t`."""
    c, a, s = (np.asarray(im, np.float64) / 255 for im in (t.composite, t.albedo, t.shading))
    if kind == "shading_in_albedo":  # part of the shading moved into the albedo; the product unchanged
        k = 0.5 + 0.5 * float(rng.random())
        return (t.composite, _img(a * s ** k), _img(s ** (1 - k))), frozenset({"albedo_flat"}), {"share": round(k, 3)}
    if kind == "albedo_edge_in_shading":  # the shading darkened inside one shape: a step where the albedo has one
        shapes = t.params["shapes"]
        sh = shapes[int(rng.random() * len(shapes))]
        n = a.shape[0]
        yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
        inside = (np.abs(xx - sh["x"]) < sh["r"]) & (np.abs(yy - sh["y"]) < sh["r"])
        k = 0.4 + 0.3 * float(rng.random())
        return (t.composite, t.albedo, _img(s * np.where(inside, k, 1.0)[..., None])), \
            frozenset({"shading_smooth", "recomposes"}), {"darken": round(k, 3)}
    if kind == "coloured_shading":
        tint = np.ones(3)
        tint[int(rng.random() * 3)] = 0.55 + 0.2 * float(rng.random())
        return (t.composite, t.albedo, _img(s * tint)), frozenset({"shading_achromatic", "recomposes"}), {}
    if kind == "wrong_albedo":
        return (t.composite, donor().albedo, t.shading), frozenset({"recomposes"}), {}
    panel = ("composite", "albedo")[int(rng.random() * 2)]
    i = 0 if panel == "composite" else 1
    x = (c, a)[i]
    if kind == "blur":
        y = gaussian(x, 1.5 + float(rng.random()))
    elif kind == "noise":
        y = x + rng.normal(0.0, 0.1, x.shape)
    elif kind == "blank":
        y = np.full_like(x, x.mean(axis=(0, 1)))
    elif kind == "confetti":  # random colour blocks of a latent patch's size (4 px at 64), mixed in
        n, b = x.shape[0], max(1, x.shape[0] // 16)
        blocks = np.kron(rng.random((n // b, n // b, 3)), np.ones((b, b, 1)))
        m = 0.6 + 0.4 * float(rng.random())
        y = (1 - m) * x + m * blocks
    else:
        raise ValueError(f"unknown corruption {kind!r}; known: {KINDS}")
    panels = [t.composite, t.albedo, t.shading]
    panels[i] = _img(y)
    broken = {"quality", "recomposes"} | ({"albedo_flat"} if panel == "albedo" and kind in ("noise", "confetti") else set())
    return tuple(panels), frozenset(broken), {"panel": panel}  # a noisy albedo is not flat either


def build_benchmark(run_seed: int, n: int, size: int, clean_fraction: float = 0.4, codec=None) -> list[BenchItem]:
    """n items, about clean_fraction clean, the rest cycling through KINDS; with `codec` (panels ->
    panels through the VAE and back), followed by the same n items through it."""
    items = []
    n_clean = round(n * clean_fraction)
    k = 0
    for i in range(n):
        t = make_triplet(derive_seed(run_seed, "intrinsic-calibration", i), size)
        if int((i + 1) * n_clean / n) > int(i * n_clean / n):
            items.append(BenchItem("clean", (t.composite, t.albedo, t.shading), frozenset()))
            continue
        kind = KINDS[k % len(KINDS)]
        k += 1
        rng = np.random.Generator(np.random.PCG64(derive_seed(run_seed, "intrinsic-calibration", i, "corruption")))
        donor = lambda i=i: make_triplet(derive_seed(run_seed, "intrinsic-calibration", i, "donor"), size)  # noqa: E731
        panels, broken, detail = corrupt(t, kind, rng, donor)
        items.append(BenchItem(kind, panels, broken, detail))
    if codec is not None:
        made = codec([it.panels for it in items])
        items += [BenchItem(it.kind + "+codec", tuple(p), it.broken, it.detail) for it, p in zip(items, made)]
    return items
