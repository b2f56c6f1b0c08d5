"""The logo/object task's measurement judge: explicit per-criterion image measurements.

The judge sees only the three panels (never the footprint or the params): where the logo
sits in the composite is *estimated* as the pixels where composite and object differ.

All measurements run on float RGB in [0, 1] at an analysis size of at most 128 px (larger panels
are box-downsampled), with pixel lengths given for 64-px panels and scaled.

    logo_clean      the logo panel is not blank or noisy, its background is one plain colour, and
                    it does not show a faded copy of the scene (the composite read through it)
    object_clean    the object panel is not blank and keeps no ghost of the logo: where the logo
                    sits, its pixels are the object's own colours, not a mix with the composite's
    composite_match the composite equals the object except in one compact, logo-sized region
    panels_agree    that region is painted in the logo panel's colours (up to shading and a
                    highlight), in the logo's proportions, and with the logo's silhouette
    quality         no panel is blank, noisy (flattest-region Laplacian), speckled (what a decode of
                    noisy latents shows: blotches on the background) or blurred (re-blur ratio)

Measured on corruption benchmarks (`layerboot judge calibrate`, 270 triplets at 64 px, run seeds
0, 1, 2, 7 and the untouched 123): AUROC logo_clean 1.00, object_clean 0.95-1.00, composite_match
0.99-1.00, panels_agree 0.97-0.99, quality 1.00. Known misses at 64 px: a wrong logo of the same
colours and a similar silhouette (a disc for a ring), and a ghost over a thin sliver of the logo.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.domains.logo_object.world import PANELS
from models.judge.image_ops import border, dilate, erode, gaussian, noise_level, reblur_ratio, speckle, to_float
from models.judge.measure import Checks, MeasureJudge

ANALYSIS_MAX = 128


@dataclass(frozen=True)
class LogoInk:
    background: np.ndarray  # (3,) the plain background colour
    ink: np.ndarray  # bool mask
    colours: np.ndarray  # (k, 3) dominant flat ink colours
    shares: np.ndarray  # (k,) their share of the solid ink


MERGE_TOL = 0.05  # bins whose mean colours differ by less (max channel) are one flat colour


def logo_ink(logo: np.ndarray, scale: float, levels: int = 32) -> LogoInk:
    """The logo panel's background (median of its frame), its ink, and the ink's flat colours."""
    frame, _ = border(logo, max(1, round(2 * scale)))
    bg = np.median(frame, axis=0)
    ink = np.abs(logo - bg).max(axis=-1) > 0.15
    solid = erode(ink, 1) if erode(ink, 1).sum() >= 8 else ink
    px = logo[solid]
    if len(px) == 0:
        return LogoInk(bg, ink, np.zeros((0, 3)), np.zeros(0))
    # flat colours: quantise finely (32 levels a channel), merge neighbouring bins of one colour
    # (a flat colour a hair off a bin edge - any lossy copy, e.g. a 43 dB codec round trip - falls
    # into two bins, which read as two colours in "wrong proportions"), and keep colours holding
    # >= 8% of the solid ink; a flat graphic piles up in a few colours, a shaded scene spreads over many
    q = np.minimum((px * levels).astype(int), levels - 1)
    codes = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    uniq, counts = np.unique(codes, return_counts=True)
    label = np.empty(len(px), dtype=int)
    centres: list[np.ndarray] = []
    for c in uniq[np.argsort(-counts, kind="stable")]:  # biggest bins first: they found the colours
        members = codes == c
        mean = px[members].mean(axis=0)
        near = [j for j, m in enumerate(centres) if np.abs(m - mean).max() < MERGE_TOL]
        if near:
            label[members] = near[0]
        else:
            label[members] = len(centres)
            centres.append(mean)
    keep = [j for j in range(len(centres)) if (label == j).sum() >= 0.08 * len(px)]
    colours = np.array([px[label == j].mean(axis=0) for j in keep]).reshape(-1, 3)
    shares = np.array([(label == j).mean() for j in keep])
    return LogoInk(bg, ink, colours, shares)


SHADE = (0.4, 1.3)  # shading factors a logo colour may take in the composite (measured: lower
EXPLAIN_TOL = 0.1   # bounds let dark colours explain each other); max-channel residual allowed


def explain(pixels: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel (N, 3), the best residual of `s * colour + h * white` over the logo colours
    (s in SHADE: shading; h in [0, 0.25]: a highlight) and the index of that colour.
    Why this model: the renderer prints the logo into the albedo, then shades and highlights it."""
    if len(colours) == 0 or len(pixels) == 0:
        return np.full(len(pixels), np.inf), np.zeros(len(pixels), dtype=int)
    best = np.full((len(pixels), len(colours)), np.inf)
    for h in np.linspace(0.0, 0.25, 6):
        p = pixels - h
        for j, q in enumerate(colours):
            s = np.clip(p @ q / max(q @ q, 1e-6), SHADE[0], SHADE[1])
            res = np.abs(p - s[:, None] * q).max(axis=-1)
            best[:, j] = np.minimum(best[:, j], res)
    idx = best.argmin(axis=1)
    return best[np.arange(len(pixels)), idx], idx


def aligned_shape_corr(painted: np.ndarray, template: np.ndarray, scale: float) -> float:
    """Best correlation between the painted mask and the logo template placed over it: the
    template (cropped to its box) is stretched onto the painted pixels' box, then scaled by
    0.85-1.15 on each axis and shifted by up to 2 px (at 64 px), absorbing the warp of the
    surface, a hidden part and the box's uncertainty."""
    ys, xs = np.nonzero(painted)
    ty, tx = np.nonzero(template)
    if len(ys) < 4 or len(ty) < 4:
        return 0.0
    crop = template[ty.min():ty.max() + 1, tx.min():tx.max() + 1].astype(np.float64)
    timg = Image.fromarray((crop * 255).astype(np.uint8), "L")
    y0, y1 = np.percentile(ys, [2, 98])
    x0, x1 = np.percentile(xs, [2, 98])
    cy, cx, h, w = (y0 + y1) / 2, (x0 + x1) / 2, y1 - y0 + 1, x1 - x0 + 1
    H, W = painted.shape
    target = painted.astype(np.float64)
    shift = max(1, round(2 * scale))
    best = -1.0
    for fy in (0.85, 1.0, 1.15):
        for fx in (0.85, 1.0, 1.15):
            hh, ww = max(2, round(h * fy)), max(2, round(w * fx))
            t = np.asarray(timg.resize((ww, hh), Image.BOX), dtype=np.float64) / 255.0
            for dy in range(-shift, shift + 1):
                for dx in range(-shift, shift + 1):
                    top, left = round(cy - hh / 2) + dy, round(cx - ww / 2) + dx
                    canvas = np.zeros((H, W))
                    ys0, xs0 = max(top, 0), max(left, 0)
                    ys1, xs1 = min(top + hh, H), min(left + ww, W)
                    if ys1 <= ys0 or xs1 <= xs0:
                        continue
                    canvas[ys0:ys1, xs0:xs1] = t[ys0 - top:ys1 - top, xs0 - left:xs1 - left]
                    r0, r1 = max(min(ys0, int(y0)) - 2, 0), min(max(ys1, int(y1) + 1) + 2, H)
                    c0, c1 = max(min(xs0, int(x0)) - 2, 0), min(max(xs1, int(x1) + 1) + 2, W)
                    best = max(best, _corr(canvas[r0:r1, c0:c1], target[r0:r1, c0:c1]))
    return best


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 1e-9 else 0.0


GHOST_HELP = 0.008  # a mix must beat "no mix" by this much (max-channel residual) to count


def ghost_strength(c: np.ndarray, o: np.ndarray, core: np.ndarray, around: np.ndarray, scale: float) -> float:
    """How much of the composite is mixed into the object panel where the logo is.

    For each footprint pixel, the mix a in {0, .1, ..., .8} for which (object - a * composite) / (1 - a)
    is best explained by the object's own colours just around the footprint (up to shading and a
    highlight). A clean object needs no mix (a = 0); a ghost of strength a is explained best at a.
    A pixel counts only when mixing clearly helps; the result is the largest mean over 8 angular
    sectors, so a ghost over part of the logo counts too.
    """
    core = erode(core, 1)
    ring = dilate(around, max(2, round(3 * scale))) & ~dilate(around, 1)  # just outside every difference
    if core.sum() < 8 or ring.sum() < 8:
        return 0.0
    pal = o[ring]
    keys = np.unique(np.round(pal * 32).astype(int) @ np.array([1 << 16, 1 << 8, 1]), return_index=True)[1]
    pal = pal[keys]
    qq = np.maximum((pal * pal).sum(axis=-1), 1e-6)

    def dist(x):  # to the nearest surround colour, shaded by [0.7, 1.4], plus a highlight
        best = np.full(len(x), np.inf)
        for h in (0.0, 0.1, 0.2):
            y = x - h
            s = np.clip((y @ pal.T) / qq, 0.7, 1.4)
            best = np.minimum(best, np.abs(y[:, None, :] - s[..., None] * pal[None]).max(axis=-1).min(axis=1))
        return best

    oc, cc = o[core], c[core]
    alphas = np.linspace(0.0, 0.8, 9)
    res = np.stack([dist((oc - a * cc) / (1 - a)) * (1 - a) for a in alphas])  # in the object's units
    best_a = alphas[res.argmin(axis=0)]
    helps = res[0] - res.min(axis=0) > GHOST_HELP
    ys, xs = np.nonzero(core)
    sector = ((np.arctan2(ys - ys.mean(), xs - xs.mean()) + np.pi) / (2 * np.pi) * 8).astype(int) % 8
    return max((float((best_a[sector == k] * helps[sector == k]).mean()) for k in range(8) if (sector == k).sum() >= 4),
               default=0.0)


def measure(composite: Image.Image, logo: Image.Image, object: Image.Image) -> dict[str, float]:
    """All raw measurements of one triplet. NaN means "not measurable here" (the check is skipped)."""
    size = min(composite.size[0], ANALYSIS_MAX)
    scale = size / 64.0
    c, l, o = (to_float(p, size) for p in (composite, logo, object))
    m: dict[str, float] = {}

    # quality, per panel
    block = max(4, round(8 * scale))
    for name, x in (("composite", c), ("logo", l), ("object", o)):
        m[f"{name}_std"] = float(x.reshape(-1, 3).std(axis=0).max())
        m[f"{name}_noise"] = noise_level(x, block)
        m[f"{name}_reblur"] = reblur_ratio(x, 1.0 * scale)
        m[f"{name}_speckle"] = speckle(x, 2.0 * scale, round(6 * scale))
    # a degraded panel is compared at the resolution both panels still support
    degraded = any(m[f"{p}_noise"] > 0.01 or m[f"{p}_reblur"] > 0.7 for p in ("composite", "object"))
    sigma = (2.0 if degraded else 1.0) * scale
    noisy_logo = m["logo_noise"] > 0.01
    if noisy_logo:
        l = gaussian(l, 1.0 * scale)

    # the logo panel alone (a noisy panel's flat colours are found in coarser bins)
    ink = logo_ink(l, scale, levels=8 if noisy_logo else 32)
    m["logo_ink_fraction"] = float(ink.ink.mean())
    plain = ~dilate(ink.ink, 1)
    dev = np.abs(l[plain] - ink.background).max(axis=-1) if plain.any() else np.ones(1)
    m["logo_background_dirty"] = float((dev > 0.02).mean())
    # a logo left on a faded copy of the scene: there, logo = (1 - a) * white + a * composite, so
    # solving for the fade a per channel gives the same a in every channel; a logo or background
    # pixel does not (but by chance). The share of such pixels reads the scene through the logo panel.
    dark = 1.0 - c
    usable = dark > 0.15  # channels where the composite is dark enough to show a fade
    fade = (1.0 - l) / np.maximum(dark, 0.15)
    lo, hi = np.where(usable, fade, np.inf).min(axis=-1), np.where(usable, fade, -np.inf).max(axis=-1)
    valid = usable.sum(axis=-1) >= 2
    scene = valid & (hi - lo < 0.06) & (lo > 0.15) & (hi < 0.95)
    m["logo_scene_share"] = float(scene.sum() / max(valid.sum(), 1))

    flat = np.zeros(l.shape[:2], dtype=bool)  # the logo's flat ink: its silhouette template
    for q in ink.colours:
        flat |= np.abs(l - q).max(axis=-1) < 0.03

    # the estimated footprint: where the (smoothed) composite differs from the (smoothed) object
    gc, go = gaussian(c, sigma), gaussian(o, sigma)
    d = np.abs(gc - go).max(axis=-1)
    fp = d > 0.1
    m["footprint_fraction"] = float(fp.mean())
    m["footprint_box_fraction"] = 0.0
    ys, xs = np.nonzero(fp)
    if len(ys) >= 4:
        y0, y1 = np.percentile(ys, [2, 98])
        x0, x1 = np.percentile(xs, [2, 98])
        m["footprint_box_fraction"] = float((y1 - y0 + 1) * (x1 - x0 + 1) / size ** 2)
    near = dilate(fp, max(1, round(3 * scale)))
    m["outside_diff"] = float((d[~near] > 0.04).mean()) if (~near).any() else 1.0
    plausible = 0.005 <= m["footprint_fraction"] <= 0.2 and m["footprint_box_fraction"] <= 0.25

    # residue: only meaningful where the footprint looks like a logo (else composite_match says why).
    # On sharp panels a faint ghost is followed down to small differences; on degraded ones only
    # the clear footprint is used, so blur or noise is not read as a ghost.
    m["ghost"] = math.nan
    if plausible:
        sg = (1.5 if degraded else 0.5) * scale
        core, around = (fp, d > 0.03) if degraded else (d > 0.05, d > 0.02)
        m["ghost"] = ghost_strength(gaussian(c, sg), gaussian(o, sg), core, around, scale)

    # the logo in the composite: footprint pixels painted in the logo panel's colours. Where the
    # footprint is not logo-like (another object, a recoloured panel) only the colours are read:
    # its silhouette and coverage say nothing about the logo (composite_match reports that case).
    m["logo_colour_cover"], m["logo_colour_share_error"], m["logo_shape_corr"] = 0.0, 1.0, 0.0
    m["logo_painted_fraction"], m["logo_colour_missing"] = 0.0, 1.0
    if fp.sum() >= 4 and len(ink.colours):
        cc = gaussian(c, 0.7 * scale) if degraded else c
        res, idx = explain(cc[fp], ink.colours)
        ok = res < EXPLAIN_TOL
        painted = np.zeros(fp.shape, dtype=bool)
        painted[fp] = ok
        m["logo_painted_fraction"] = float(painted.mean())
        found = np.array([(idx[ok] == j).mean() if ok.any() else 0.0 for j in range(len(ink.colours))])
        want = ink.shares / ink.shares.sum()
        m["logo_colour_share_error"] = float(np.abs(found - want).sum() / 2)
        # a logo colour (of >= 10% of the ink) that the composite lacks: a recoloured logo
        m["logo_colour_missing"] = float(max(((want - found) / want)[want >= 0.1].max(initial=0.0), 0.0))
        m["logo_colour_cover"] = float(ok.mean()) if plausible else math.nan
        m["logo_shape_corr"] = aligned_shape_corr(painted, flat, scale)
    return m


# ----------------------------------------------------------------------------- measurements -> scores
# (measurement, value scoring 0.9, value scoring 0.1, what a bad value means): see models/judge/measure.py

PANEL_CHECKS = [
    ("{p}_std", 0.05, 0.01, "{p} panel is blank (colour spread {v:.3f})"),
    ("{p}_noise", 0.008, 0.018, "{p} panel is noisy (noise sigma {v:.3f})"),
    ("{p}_reblur", 0.66, 0.74, "{p} panel is blurred (re-blur ratio {v:.2f}, sharp ~0.5)"),
    ("{p}_speckle", 0.009, 0.013, "{p} panel is speckled (background residual {v:.4f})"),
]
CHECKS: Checks = {
    "logo_clean": [
        ("logo_std", 0.05, 0.01, "logo panel is blank"),
        ("logo_ink_fraction", 0.02, 0.005, "logo panel has almost no logo ({v:.1%} ink)"),
        ("logo_noise", 0.008, 0.018, "logo panel is noisy, not a plain background (sigma {v:.3f})"),
        ("logo_background_dirty", 0.1, 0.3, "logo background is not plain ({v:.0%} off-colour)"),
        ("logo_scene_share", 0.06, 0.12, "logo panel shows a faded copy of the scene ({v:.0%} of pixels)"),
    ],
    "object_clean": [
        ("object_std", 0.05, 0.01, "object panel is blank"),
        ("ghost", 0.15, 0.25, "object panel keeps a ghost of the logo (strength {v:.2f})"),
    ],
    "composite_match": [
        ("footprint_fraction", 0.02, 0.005, "composite shows no logo: it differs from the object on {v:.1%} of pixels"),
        ("footprint_fraction", 0.16, 0.24, "composite differs from the object on {v:.0%} of pixels: not one logo"),
        ("footprint_box_fraction", 0.2, 0.3, "differences spread over {v:.0%} of the panel: not one logo"),
        ("outside_diff", 0.01, 0.1, "composite and object disagree away from the logo ({v:.1%} of pixels)"),
    ],
    "panels_agree": [
        ("logo_painted_fraction", 0.01, 0.003, "the logo panel's colours are (almost) absent from the composite"),
        ("logo_colour_cover", 0.5, 0.2, "only {v:.0%} of the logo in the composite has the logo panel's colours"),
        ("logo_painted_fraction", 0.2, 0.3, "the logo's colours cover {v:.0%} of the composite: not one logo"),
        ("logo_colour_share_error", 0.2, 0.5, "logo colours in the wrong proportions (error {v:.2f})"),
        ("logo_colour_missing", 0.5, 0.8, "a colour of the logo panel is missing from the composite's logo ({v:.0%} short)"),
        ("logo_shape_corr", 0.55, 0.3, "the logo in the composite has another silhouette (corr {v:.2f})"),
    ],
    "quality": [(k.replace("{p}", p), g, b, w.replace("{p}", p))
                for p in PANELS for k, g, b, w in PANEL_CHECKS],
}


class LogoObjectJudge(MeasureJudge):
    """The embedded judge of the tiny profile for logo/object triplets: `measure` + `CHECKS`."""

    kind = "measure"
    panels = PANELS
    checks = CHECKS
    measure = staticmethod(measure)
