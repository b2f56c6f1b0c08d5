"""Procedural logo/object domain with exact ground truth (the data of the `tiny` profile).

A triplet is `composite | logo | object` plus the footprint: the pixels where the logo changes
the composite. Recipe: sample a JSON `params` dict from a PCG64 stream, then render it at the
requested size. Everything is drawn analytically with signed distance fields (SDF, < 0 inside)
in numpy: coverage = clamp(0.5 - sdf / pixel, 0, 1) gives anti-aliased edges at any size without
supersampling, and the logo is evaluated straight through the inverse surface warp (cylinder,
sphere, perspective), so the warped logo is as sharp as the flat one.

Why the composite is not an alpha blend of the two layers: the logo is printed into the surface
albedo *before* shading, so it is warped by the geometry, multiplied by the object's shading,
covered by the same specular highlight, and sometimes partly hidden by a part of the object
(strap, leaf, tag, handle) that the object panel shows too.

Determinism across machines: only IEEE-exact numpy operations (+ - * / sqrt, min/max, floor)
touch pixels; the few transcendental results (arcsin, arctan2, cos/sin of angles) are snapped to a
2^-20 grid, so last-ulp differences between libm / SIMD builds cannot move a pixel. Glyphs are
drawn from strokes rather than with FreeType, whose rasteriser output changes between versions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from models.domains.base import check_size, pick, uniform
from models.domains.shapes import sd_box, sd_circle, sd_ellipse, sd_polygon, sd_segments

PANELS = ("composite", "logo", "object")  # this task's names of the grid's panels, left to right


@dataclass(frozen=True)
class Triplet:
    composite: Image.Image  # RGB, size x size: the object carrying the logo
    logo: Image.Image       # RGB, size x size: the flat logo centred on a plain white background
    object: Image.Image     # RGB, size x size: the same object, same pose/lighting, without the logo
    footprint: Image.Image  # mode "L", 255 where the logo changes the composite, 0 elsewhere
    prompt: str             # short English description, e.g. "a red mug with a blue star emblem"
    params: dict            # the sampled parameters (JSON-serialisable: str/int/float/bool/lists)

    @property
    def panels(self) -> tuple[Image.Image, Image.Image, Image.Image]:
        return self.composite, self.logo, self.object


# ----------------------------------------------------------------------------- vocabulary

OBJECT_KINDS = ("ball", "box", "bottle", "can", "mug", "tote bag", "t-shirt")
LOGO_KINDS = ("star", "ring", "triangle", "cross", "chevron", "concentric circles", "diamond",
              "shield", "hexagon", "heart", "text")
OCCLUDERS = {  # which part of the object may hide part of the logo, per object kind
    "ball": ("ribbon", "leaf"), "box": ("strap", "tag"), "bottle": ("tag", "leaf"),
    "can": ("band", "leaf"), "mug": ("tag", "leaf"), "tote bag": ("handle", "tag"),
    "t-shirt": ("strap", "tag"),
}
OCCLUSION_RATE = 0.3

# World levels (`data.world_level`): how much of the world's variation a triplet draws. Each level
# adds back what the one below leaves out; the top level is the world as it always was (its seeds
# give the same bytes). Why: the embedded base is small, and a loop that can learn nothing shows
# nothing; a level it can learn lets the bootstrapping be measured (docs/research-log.md).
#   0  flat faces seen square-on (box, tote bag, t-shirt), plain finish, matte (no highlight), no
#      occluder, a handful of plain emblems and object colours, the logo at one scale at the
#      label's centre, unrotated
#   1  + every emblem, glyph, logo colour and object colour, the logo's place, scale and rotation
#      varied; one-colour logos on plain matte faces (what the seeds cannot hold, but the codec can)
#   2  + two-colour logos (badges, outlines, underlines), textures and colour gradients
#   3  + curved objects (ball, can, bottle, mug), perspective and specular highlights
#   4  + occluders (a strap, leaf, tag or handle over part of the logo): the full world
WORLD_LEVELS = 5
TOP_LEVEL = WORLD_LEVELS - 1
FLAT_KINDS = ("box", "tote bag", "t-shirt")
SIMPLE_LOGO_KINDS = ("star", "ring", "triangle", "diamond")
SIMPLE_LOGO_COLOURS = ("red", "blue", "green", "black")
SIMPLE_OBJECT_COLOURS = ("white", "grey", "beige", "yellow", "mint")
SIMPLE_LOGO_SCALE = 0.32  # level 0: the logo's larger half-extent in panel units (the logo panel's is 0.8)


def check_level(level: int) -> None:
    if not 0 <= level <= TOP_LEVEL:
        raise ValueError(f"world level must be 0..{TOP_LEVEL}, got {level}")

OBJECT_COLOURS = {
    "red": (196, 40, 44), "blue": (38, 84, 186), "green": (46, 140, 72), "yellow": (236, 196, 46),
    "orange": (232, 118, 34), "purple": (112, 62, 158), "pink": (228, 128, 168),
    "teal": (28, 142, 146), "navy": (28, 38, 84), "black": (36, 36, 40), "white": (236, 236, 232),
    "grey": (138, 140, 146), "brown": (126, 82, 50), "beige": (214, 194, 158),
    "mint": (158, 216, 188),
}
LOGO_COLOURS = {  # no white: the logo panel is white, a white logo would vanish there
    "red": (214, 30, 36), "blue": (30, 90, 210), "green": (30, 150, 60), "yellow": (246, 206, 30),
    "orange": (240, 120, 20), "purple": (120, 50, 170), "pink": (236, 90, 150),
    "teal": (0, 150, 150), "navy": (20, 30, 90), "black": (20, 20, 24), "gold": (208, 160, 40),
    "sky blue": (80, 170, 230),
}
WHITE = (250, 250, 250)  # allowed as the glyph colour on a coloured badge only
LABEL_COLOURS = {"white": (240, 238, 232), "cream": (238, 226, 190), "kraft": (196, 158, 110),
                 "black": (34, 34, 36), "sky blue": (170, 210, 236)}
GLASS_COLOURS = {"green": (40, 112, 64), "brown": (112, 64, 30), "blue": (44, 84, 156),
                 "frosted": (186, 196, 198)}
STRAP_COLOURS = {"brown": (110, 70, 40), "black": (30, 30, 32), "tan": (196, 150, 96),
                 "red": (180, 36, 40), "white": (232, 232, 228)}
LEAF_COLOURS = {"green": (62, 140, 52), "dark green": (34, 96, 40), "olive": (112, 128, 44)}
TAG_COLOURS = {"cream": (240, 230, 200), "kraft": (200, 162, 112), "white": (246, 246, 242),
               "red": (200, 44, 48)}
BACKGROUNDS = {"white": (246, 246, 244), "light grey": (226, 227, 230), "warm": (238, 230, 216),
               "cool": (220, 230, 240), "blush": (242, 226, 226), "sage": (224, 234, 222)}
TEXTURE_WORDS = {"plain": "", "stripes": "striped", "checker": "checked", "noise": "mottled",
                 "speckle": "speckled"}

# Stroke font: polylines in a 0.7 x 1 box (x right, y down). Straight strokes only, so a glyph is
# a handful of capsules and renders identically everywhere.
LETTERS = {
    "A": [[(0, 1), (0.35, 0), (0.7, 1)], [(0.14, 0.62), (0.56, 0.62)]],
    "B": [[(0, 0), (0, 1), (0.5, 1), (0.7, 0.85), (0.7, 0.65), (0.5, 0.5), (0, 0.5)],
          [(0, 0), (0.45, 0), (0.62, 0.12), (0.62, 0.38), (0.45, 0.5)]],
    "C": [[(0.7, 0.12), (0.55, 0), (0.2, 0), (0, 0.2), (0, 0.8), (0.2, 1), (0.55, 1), (0.7, 0.88)]],
    "D": [[(0, 0), (0, 1), (0.42, 1), (0.7, 0.75), (0.7, 0.25), (0.42, 0), (0, 0)]],
    "E": [[(0.65, 0), (0, 0), (0, 1), (0.65, 1)], [(0, 0.5), (0.5, 0.5)]],
    "F": [[(0.65, 0), (0, 0), (0, 1)], [(0, 0.5), (0.5, 0.5)]],
    "G": [[(0.7, 0.15), (0.55, 0), (0.2, 0), (0, 0.2), (0, 0.8), (0.2, 1), (0.55, 1), (0.7, 0.8),
           (0.7, 0.55), (0.4, 0.55)]],
    "H": [[(0, 0), (0, 1)], [(0.7, 0), (0.7, 1)], [(0, 0.5), (0.7, 0.5)]],
    "J": [[(0.7, 0), (0.7, 0.8), (0.5, 1), (0.2, 1), (0, 0.8)]],
    "K": [[(0, 0), (0, 1)], [(0.66, 0), (0, 0.58)], [(0.22, 0.4), (0.7, 1)]],
    "L": [[(0, 0), (0, 1), (0.62, 1)]],
    "M": [[(0, 1), (0, 0), (0.35, 0.55), (0.7, 0), (0.7, 1)]],
    "N": [[(0, 1), (0, 0), (0.7, 1), (0.7, 0)]],
    "O": [[(0.2, 0), (0.5, 0), (0.7, 0.2), (0.7, 0.8), (0.5, 1), (0.2, 1), (0, 0.8), (0, 0.2),
           (0.2, 0)]],
    "P": [[(0, 1), (0, 0), (0.5, 0), (0.7, 0.15), (0.7, 0.35), (0.5, 0.5), (0, 0.5)]],
    "R": [[(0, 1), (0, 0), (0.5, 0), (0.7, 0.15), (0.7, 0.35), (0.5, 0.5), (0, 0.5)],
          [(0.35, 0.5), (0.7, 1)]],
    "S": [[(0.7, 0.12), (0.55, 0), (0.15, 0), (0, 0.15), (0, 0.35), (0.15, 0.5), (0.55, 0.5),
           (0.7, 0.65), (0.7, 0.85), (0.55, 1), (0.15, 1), (0, 0.88)]],
    "T": [[(0, 0), (0.7, 0)], [(0.35, 0), (0.35, 1)]],
    "U": [[(0, 0), (0, 0.8), (0.2, 1), (0.5, 1), (0.7, 0.8), (0.7, 0)]],
    "V": [[(0, 0), (0.35, 1), (0.7, 0)]],
    "W": [[(0, 0), (0.15, 1), (0.35, 0.4), (0.55, 1), (0.7, 0)]],
    "X": [[(0, 0), (0.7, 1)], [(0.7, 0), (0, 1)]],
    "Y": [[(0, 0), (0.35, 0.5), (0.7, 0)], [(0.35, 0.5), (0.35, 1)]],
    "Z": [[(0, 0), (0.7, 0), (0, 1), (0.7, 1)]],
}

REF_SIZE = 64         # acceptance checks run at this size, so a seed gives the same scene at any size
MIN_INK = 0.025       # visible logo coverage (area fraction) required at REF_SIZE; tests ask the
                      # footprint for >= 2% at every size (it shrinks a little as edges get finer)
HIDDEN_RANGE = (0.06, 0.6)  # an occluder must hide this fraction of the logo: partial, not nil
MAX_ATTEMPTS = 16

# ----------------------------------------------------------------------------- small helpers

_GRID = 1048576.0  # 2^20


def _snap(x):
    """Round a transcendental result to a 2^-20 grid: libm/SIMD last-ulp noise can't reach a pixel."""
    return np.round(np.asarray(x, dtype=np.float64) * _GRID) / _GRID


def _cos(a: float) -> float:
    return round(math.cos(a) * _GRID) / _GRID


def _sin(a: float) -> float:
    return round(math.sin(a) * _GRID) / _GRID


def _sign(rng) -> int:
    return 1 if rng.random() < 0.5 else -1


def _jitter(rng, rgb, amount=0.06) -> list:
    return [int(min(255, max(0, round(c * (1 + amount * (2 * rng.random() - 1)))))) for c in rgb]


def _dist(a, b) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def _pick_colour(rng, palette: dict, avoid=(), min_dist=110.0):
    """A (name, rgb) from palette at least min_dist (RGB distance) from every colour in avoid."""
    names = [n for n, c in palette.items() if all(_dist(c, a) >= min_dist for a in avoid)]
    name = pick(rng, names or list(palette))
    return name, _jitter(rng, palette[name], 0.04)


def _cov(sdf, px):
    """Anti-aliased coverage of {sdf < 0}; px = one pixel in sdf units (scalar or array)."""
    return np.clip(0.5 - sdf / px, 0.0, 1.0)


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rgb(c):
    return np.asarray(c, dtype=np.float64) / 255.0


def _regular(n, radius, start_deg, radii=None):
    """Vertices of a (star) polygon; radii alternates when given (star = (outer, inner))."""
    pts = []
    for i in range(n):
        a = math.radians(start_deg + 360.0 * i / n)
        r = radii[i % len(radii)] if radii else radius
        pts.append((r * _cos(a), r * _sin(a)))
    return pts


# ----------------------------------------------------------------------------- logos
# Logo units: the logo fits in [-ex, ex] x [-ey, ey]; emblems are drawn in the unit box.


def _emblem(logo) -> Callable:
    """Unit-box SDF f(u, v) of the emblem kind."""
    k = logo["kind"]
    if k == "star":
        pts = _regular(2 * logo["points"], 1.0, -90.0, radii=(1.0, logo["inner"]))
        return lambda u, v: sd_polygon(u, v + 0.06, pts)
    if k == "ring":
        return lambda u, v: np.abs(sd_circle(u, v, 0, 0, 0.76)) - 0.22
    if k == "triangle":
        pts = [(x, y + 0.22) for x, y in _regular(3, 1.12, -90.0)]
        return lambda u, v: sd_polygon(u, v, pts)
    if k == "cross":
        return lambda u, v: np.minimum(sd_box(u, v, 0, 0, 0.95, 0.3, 0.06),
                                       sd_box(u, v, 0, 0, 0.3, 0.95, 0.06))
    if k == "chevron":
        pts = [(-0.95, 0.2), (0.0, -0.72), (0.95, 0.2), (0.95, 0.78), (0.0, -0.14), (-0.95, 0.78)]
        return lambda u, v: sd_polygon(u, v, pts)
    if k == "concentric circles":
        return lambda u, v: np.minimum(np.minimum(
            sd_circle(u, v, 0, 0, 0.3), np.abs(sd_circle(u, v, 0, 0, 0.62)) - 0.13),
            np.abs(sd_circle(u, v, 0, 0, 0.9)) - 0.1)
    if k == "diamond":
        return lambda u, v: sd_polygon(u, v, [(0, -1), (0.74, 0), (0, 1), (-0.74, 0)])
    if k == "shield":
        return lambda u, v: sd_polygon(u, v, _SHIELD)
    if k == "hexagon":
        pts = _regular(6, 1.0, -90.0)
        return lambda u, v: sd_polygon(u, v, pts)
    if k == "heart":
        tri = [(-0.9, -0.18), (0.9, -0.18), (0.0, 0.96)]
        return lambda u, v: np.minimum(np.minimum(
            sd_circle(u, v, -0.44, -0.38, 0.5), sd_circle(u, v, 0.44, -0.38, 0.5)),
            sd_polygon(u, v, tri))
    raise ValueError(f"unknown emblem kind {k!r}")


_SHIELD = [(-0.82, -0.92), (0.82, -0.92), (0.82, 0.2), (0.6, 0.62), (0.0, 1.0), (-0.6, 0.62),
           (-0.82, 0.2)]


def _scaled(f, k, dv=0.0):  # f drawn at scale k (SDF scales linearly), shifted down by dv
    return lambda u, v: k * f(u / k, (v - dv) / k)


def _text_layout(letters: str, stroke: float):
    """Capsule segments of the word centred at 0 (letter height 1.3), stroke half-width, extent."""
    h, adv = 1.3, (0.7 + 0.32) * 1.3
    width = (len(letters) * 0.7 + (len(letters) - 1) * 0.32) * h
    x0, hw = -width / 2, stroke * h
    segs = []
    for i, ch in enumerate(letters):
        for line in LETTERS[ch]:
            for (ax, ay), (bx, by) in zip(line[:-1], line[1:]):
                segs.append((x0 + i * adv + ax * h, -0.65 + ay * h,
                             x0 + i * adv + bx * h, -0.65 + by * h))
    return segs, hw, (width / 2 + hw, 0.65 + hw)


def _logo_layers(logo):
    """[(sdf_fn(u, v), rgb01)], painted in order, and the extent (ex, ey) in logo units."""
    c1 = _rgb(logo["rgb"])
    c2 = _rgb(logo["rgb2"]) if logo["rgb2"] else None
    style = logo["style"]
    if logo["kind"] == "text":
        segs, hw, (ex, ey) = _text_layout(logo["letters"], logo["stroke"])
        glyphs = (lambda u, v: sd_segments(u, v, segs, hw), c1)
        if style == "badge" and len(logo["letters"]) == 1:
            r = math.hypot(ex, ey) + 0.12
            return [(lambda u, v: sd_circle(u, v, 0, 0, r), c2), glyphs], (r, r)
        if style == "badge":
            bx, by = ex + 0.3, ey + 0.28
            return [(lambda u, v: sd_box(u, v, 0, 0, bx, by, 0.3), c2), glyphs], (bx, by)
        if style == "underline":
            bar = (lambda u, v: sd_box(u, v, 0, ey + 0.22, ex, 0.1, 0.03), c2)
            return [glyphs, bar], (ex, ey + 0.32)
        return [glyphs], (ex, ey)
    f = _emblem(logo)
    if style == "plain":
        return [(f, c1)], (1.0, 1.0)
    if style == "outline":
        ring = lambda u, v: np.abs(sd_circle(u, v, 0, 0, 0.95)) - 0.06
        return [(ring, c2), (_scaled(f, 0.66), c1)], (1.01, 1.01)
    backer = {"disc": lambda u, v: sd_circle(u, v, 0, 0, 1.0),
              "square": lambda u, v: sd_box(u, v, 0, 0, 0.95, 0.95, 0.25),
              "shield": _emblem({"kind": "shield"})}[logo["badge"]]
    return [(backer, c2), (_scaled(f, 0.56, -0.1 if logo["badge"] == "shield" else 0.0), c1)], (1.0, 1.0)


def _paint_logo(layers, u, v, px):
    """Premultiplied colour (..., 3) and alpha (...) of the logo at logo coords (u, v)."""
    alpha = np.zeros(u.shape)
    pre = np.zeros(u.shape + (3,))
    for f, rgb in layers:
        c = _cov(f(u, v), px)
        alpha = alpha * (1.0 - c) + c
        pre = pre * (1.0 - c)[..., None] + c[..., None] * rgb
    return pre, alpha


def _sample_logo(rng, avoid, level: int = TOP_LEVEL):
    if level == 0:  # a plain emblem of a handful, in one of a handful of colours
        kind = pick(rng, SIMPLE_LOGO_KINDS)
        logo = {"kind": kind, "style": "plain", "badge": None, "letters": None, "points": 5 if kind == "star" else None,
                "inner": 0.46 if kind == "star" else None, "stroke": None, "colour2": None, "rgb2": None}
        logo["colour"], logo["rgb"] = _pick_colour(rng, {k: LOGO_COLOURS[k] for k in SIMPLE_LOGO_COLOURS}, avoid)
        logo["extent"] = [round(e, 4) for e in _logo_layers(logo)[1]]
        return logo
    kind = pick(rng, LOGO_KINDS[:-1]) if rng.random() < 0.7 else "text"
    logo = {"kind": kind, "style": "plain", "badge": None, "letters": None, "points": None,
            "inner": None, "stroke": None, "colour2": None, "rgb2": None}
    if kind == "star":
        logo.update(points=pick(rng, (5, 5, 6)), inner=uniform(rng, 0.42, 0.52))
    if kind == "text":
        n = pick(rng, (1, 2, 2, 3, 3))
        logo.update(letters="".join(pick(rng, sorted(LETTERS)) for _ in range(n)),
                    stroke=uniform(rng, 0.09, 0.12), style=pick(rng, ("plain", "plain", "badge", "underline")))
    else:
        logo["style"] = pick(rng, ("plain", "plain", "badge", "outline"))
        if logo["style"] == "badge":
            logo["badge"] = pick(rng, ("disc", "square", "shield"))
    if level == 1:  # one colour, no backer or outline: two-colour details are too thin for the 8x codec at 64 px
        logo["style"], logo["badge"] = "plain", None
    if logo["style"] == "badge":  # glyph on a coloured backer: the glyph may be white
        logo["colour2"], logo["rgb2"] = _pick_colour(rng, LOGO_COLOURS, avoid)
        palette = dict(LOGO_COLOURS, white=WHITE)
        logo["colour"], logo["rgb"] = _pick_colour(rng, palette, [logo["rgb2"]], 130.0)
    else:
        logo["colour"], logo["rgb"] = _pick_colour(rng, LOGO_COLOURS, avoid)
        if logo["style"] != "plain":
            logo["colour2"], logo["rgb2"] = _pick_colour(rng, LOGO_COLOURS, avoid + [logo["rgb"]], 100.0)
    logo["extent"] = [round(e, 4) for e in _logo_layers(logo)[1]]
    return logo


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _logo_phrase(logo) -> str:
    c1, c2 = logo["colour"], logo["colour2"]
    if logo["kind"] == "text":
        n = len(logo["letters"])
        word = f'letter{"s" if n > 1 else ""} "{logo["letters"]}"'
        if logo["style"] == "badge":
            return f"{c1} {word} on {_a(c2 + (' disc' if n == 1 else ' badge'))}"
        if logo["style"] == "underline":
            return f"the {word} in {c1}, underlined in {c2}"
        return f"the {word} in {c1}"
    name = "concentric-circle" if logo["kind"] == "concentric circles" else logo["kind"]
    if logo["style"] == "badge":
        return f"{_a(c1 + ' ' + name)} emblem on {_a(c2 + ' ' + logo['badge'])}"
    if logo["style"] == "outline":
        return f"{_a(c1 + ' ' + name)} emblem in {_a(c2 + ' ring')}"
    return f"{_a(c1 + ' ' + name)} emblem"


# ----------------------------------------------------------------------------- objects
# Panel coords: x, y in [-1, 1] (y down), ground line near y = 0.8. Each object has surface
# coords (su, sv) in which textures and the logo are laid out: arc length on a cylinder or
# sphere, face coordinates on flat faces. `label` = [su0, su1, sv0, sv1], where a logo may go.


def _sample_ball(rng):
    r = uniform(rng, 0.58, 0.72)
    return {"kind": "ball", "cx": uniform(rng, -0.08, 0.08), "cy": round(0.8 - r, 4), "r": r,
            "warp": "spherical", "label": [-r, r, -0.7 * r, 0.7 * r]}


def _sample_cylinder(rng, kind):
    e = uniform(rng, 0.1, 0.2)
    if kind == "can":
        r, top = uniform(rng, 0.38, 0.48), uniform(rng, -0.7, -0.56)
        o = {"r": r, "top": top, "cx": uniform(rng, -0.1, 0.1)}
        o["label"] = [-1.0 * r, 1.0 * r, top + 0.12, 0.72 - e * r - 0.1]
    elif kind == "bottle":
        r, top = uniform(rng, 0.36, 0.44), uniform(rng, -0.24, -0.14)
        o = {"r": r, "top": top, "cx": uniform(rng, -0.08, 0.08), "shoulder": uniform(rng, 0.16, 0.22),
             "neck": uniform(rng, 0.18, 0.26), "cap": pick(rng, ("gold", "black", "silver", "red"))}
        o["glass"], o["glass_rgb"] = _pick_colour(rng, GLASS_COLOURS)
        l0, l1 = top + uniform(rng, 0.03, 0.07), 0.76 - e * r - uniform(rng, 0.06, 0.12)
        o["band"] = [round(l0, 4), round(l1, 4)]
        o["label"] = [-1.1 * r, 1.1 * r, l0 + 0.04, l1 - 0.04]
    else:  # mug
        r, top, side = uniform(rng, 0.42, 0.5), uniform(rng, -0.5, -0.36), _sign(rng)
        o = {"r": r, "top": top, "cx": round(-0.1 * side, 4), "handle_side": side,
             "handle_r": uniform(rng, 0.2, 0.26), "handle_w": uniform(rng, 0.05, 0.07),
             "inside": pick(rng, ("white", "same"))}
        o["label"] = [-1.0 * r, 1.0 * r, top + 0.12, 0.72 - e * r - 0.08]
    o.update(kind=kind, e=e, bot=round((0.76 if kind == "bottle" else 0.72) - e * o["r"], 4),
             warp="cylindrical")
    return o


def _sample_box(rng):
    ps, dx = uniform(rng, -0.22, 0.22), uniform(rng, 0.1, 0.2)
    hh = uniform(rng, 0.38, 0.52)
    dx = dx if ps > 0 else -dx  # the receding side is the one we see
    o = {"kind": "box", "hw": uniform(rng, 0.46, 0.58), "hh": hh, "ps": ps, "pt": uniform(rng, -0.1, 0.1),
         "dx": dx, "dy": uniform(rng, 0.12, 0.2), "cx": round(-dx / 2, 4), "cy": round(0.74 - hh, 4),
         "warp": "perspective"}
    o["label"] = [-0.8 * o["hw"], 0.8 * o["hw"], -0.8 * hh, 0.8 * hh]
    return o


def _sample_tote(rng):
    hw, hh, taper = uniform(rng, 0.5, 0.62), uniform(rng, 0.42, 0.5), uniform(rng, 0.0, 0.12)
    o = {"kind": "tote bag", "hw": hw, "hh": hh, "taper": taper, "ps": uniform(rng, -0.14, 0.14),
         "pt": uniform(rng, -0.06, 0.06), "cx": 0.0, "cy": round(0.8 - hh, 4),
         "handle_r": uniform(rng, 0.2, 0.26), "warp": "perspective"}
    o["strap"], o["strap_rgb"] = _pick_colour(rng, STRAP_COLOURS, min_dist=0)
    o["label"] = [-0.78 * hw * (1 - taper), 0.78 * hw * (1 - taper), -0.74 * hh, 0.8 * hh]
    return o


def _sample_tshirt(rng):
    k = uniform(rng, 0.84, 0.96)
    return {"kind": "t-shirt", "k": k, "hw": k, "hh": k, "cx": 0.0, "cy": uniform(rng, -0.02, 0.04),
            "ps": uniform(rng, -0.1, 0.1), "pt": uniform(rng, -0.06, 0.06), "warp": "perspective",
            "label": [-0.44 * k, 0.44 * k, -0.56 * k, 0.4 * k]}


_SAMPLERS = {"ball": _sample_ball, "box": _sample_box, "tote bag": _sample_tote,
             "t-shirt": _sample_tshirt, "can": lambda rng: _sample_cylinder(rng, "can"),
             "bottle": lambda rng: _sample_cylinder(rng, "bottle"),
             "mug": lambda rng: _sample_cylinder(rng, "mug")}


def _surface_to_panel(o, su: float, sv: float):
    """Forward map of one surface point to panel coords (used to place occluders)."""
    if o["warp"] == "spherical":
        lon, lat = su / o["r"], sv / o["r"]
        return o["cx"] + o["r"] * _cos(lat) * _sin(lon), o["cy"] + o["r"] * _sin(lat)
    if o["warp"] == "cylindrical":
        t = su / o["r"]
        return o["cx"] + o["r"] * _sin(t), sv + o["e"] * o["r"] * _cos(t)
    s, t = su / o["hw"], sv / o["hh"]
    w = 1.0 + o["ps"] * s + o["pt"] * t
    return o["cx"] + o["hw"] * s / w, o["cy"] + o["hh"] * t / w


def _panel_to_face(o, X, Y):
    """Inverse homography of a flat face: panel (X, Y) -> face coords (su, sv)."""
    a, b = (X - o["cx"]) / o["hw"], (Y - o["cy"]) / o["hh"]
    den = np.maximum(1.0 - o["ps"] * a - o["pt"] * b, 0.05)
    return a / den * o["hw"], b / den * o["hh"]


@dataclass
class Part:  # one painted layer of the object: colour = albedo * shade + spec, over coverage of sdf
    sdf: np.ndarray
    albedo: np.ndarray  # (3,) or (H, W, 3)
    shade: object       # float or (H, W)
    spec: object = 0.0  # float or (H, W)
    printable: bool = False  # the logo is printed into this part's albedo


def _lighting(light, nx, ny, nz, gloss):
    """Lambert diffuse and Blinn specular; the exponent is a power of two (repeated squaring)."""
    lx, ly, lz = light["dir"]
    hx, hy, hz = light["half"]
    diffuse = light["ambient"] + (1.0 - light["ambient"]) * np.maximum(nx * lx + ny * ly + nz * lz, 0.0)
    spec = np.maximum(nx * hx + ny * hy + nz * hz, 0.0)
    for _ in range(light["shininess_log2"]):
        spec = spec * spec
    return diffuse * 1.08, gloss * light["gloss"] * spec


def _flat_normal(X, Y, cx, cy, bulge, tilt=(0.0, 0.0)):
    """A nearly flat face, slightly bulged so that a highlight has somewhere to sit."""
    nx, ny = tilt[0] + bulge * (X - cx), tilt[1] + bulge * (Y - cy)
    n = np.sqrt(nx * nx + ny * ny + 1.0)
    return nx / n, ny / n, 1.0 / n


def _value_noise(su, sv, grid, seed):
    """Smooth value noise in [0, 1] on a grid x grid lattice over surface coords [-1.5, 1.5]^2."""
    lat = np.random.Generator(np.random.PCG64(seed)).random((grid + 1, grid + 1))
    su, sv = np.broadcast_arrays(su, sv)
    fx = np.clip((su + 1.5) / 3.0, 0.0, 1.0) * grid
    fy = np.clip((sv + 1.5) / 3.0, 0.0, 1.0) * grid
    ix = np.minimum(np.floor(fx).astype(np.int64), grid - 1)
    iy = np.minimum(np.floor(fy).astype(np.int64), grid - 1)
    tx, ty = fx - ix, fy - iy
    tx, ty = tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty)
    a, b, c, d = lat[iy, ix], lat[iy, ix + 1], lat[iy + 1, ix], lat[iy + 1, ix + 1]
    return a + (b - a) * tx + (c - a) * ty + (a - b - c + d) * tx * ty


def _square_wave(t, sharp, duty=0.5):
    """Anti-aliased square wave of period 1 in [0, 1]; sharp ~ pixels per period."""
    tri = np.abs(2.0 * (t - np.floor(t)) - 1.0)  # 0 at integers, 1 at half periods
    return np.clip((tri - duty) * sharp + 0.5, 0.0, 1.0)


def _albedo(fin, su, sv, X, Y, px):
    """Colour (H, W, 3) of the printable surface: base colour, texture (surface coords), gradient."""
    su, sv = np.broadcast_arrays(su, sv)
    base, alt = _rgb(fin["rgb"]), _rgb(fin["rgb2"])
    tex = fin["texture"]
    if tex == "stripes":
        ca, sa = fin["dir"]
        m = _square_wave((su * ca + sv * sa) / fin["period"], fin["period"] / px, fin["duty"])
    elif tex == "checker":
        mx = _square_wave(su / (2 * fin["period"]), fin["period"] / px)
        my = _square_wave(sv / (2 * fin["period"]), fin["period"] / px)
        m = mx + my - 2.0 * mx * my  # soft XOR
    elif tex == "noise":
        m = fin["amount"] * _value_noise(su, sv, fin["grid"], fin["seed"])
    elif tex == "speckle":
        m = np.clip((_value_noise(su, sv, fin["grid"], fin["seed"]) - 0.8) * 12.0, 0.0, 1.0)
    else:
        m = np.zeros(su.shape)
    alb = base * (1.0 - m)[..., None] + alt * m[..., None]
    if fin["gradient"] == "linear":
        gx, gy = fin["gdir"]
        alb = alb * (1.0 + fin["gstrength"] * (X * gx + Y * gy))[..., None]
    elif fin["gradient"] == "radial":
        gx, gy = fin["gdir"]
        dx, dy = X - 0.5 * gx, Y - 0.5 * gy
        alb = alb * (1.0 + fin["gstrength"] * (0.4 - dx * dx - dy * dy))[..., None]
    return np.clip(alb, 0.0, 1.0)


def _build_ball(o, fin, light, X, Y, px):
    r, dx, dy = o["r"], X - o["cx"], Y - o["cy"]
    z = np.sqrt(np.maximum(r * r - dx * dx - dy * dy, 0.0))
    su = r * _snap(np.arctan2(dx, z))                       # (H, W) arc length, longitude
    sv = r * _snap(np.arcsin(np.clip(dy / r, -1.0, 1.0)))   # (H, 1) arc length, latitude
    shade, spec = _lighting(light, dx / r, dy / r, z / r, 1.0)
    body = Part(sd_circle(X, Y, o["cx"], o["cy"], r), _albedo(fin, su, sv, X, Y, px), shade, spec, True)
    return [body], (su, sv), (o["cx"], o["cy"] + 0.96 * r, 0.85 * r, 0.1)


def _build_cylinder(o, fin, light, X, Y, px):
    r, cx, top, bot, e = o["r"], o["cx"], o["top"], o["bot"], o["e"]
    s = np.clip((X - cx) / r, -1.0, 1.0)
    c = np.sqrt(1.0 - s * s)
    su = r * _snap(np.arcsin(s))     # (1, W) arc length around the axis
    sv = Y - e * r * c               # (H, W) height; surface circles are ellipses seen from above
    shade, spec = _lighting(light, s, 0.0, c, 1.0)
    wall = np.minimum(sd_box(X, Y, cx, (top + bot) / 2, r, (bot - top) / 2),
                      sd_ellipse(X, Y, cx, bot, r, e * r))
    top_sdf = sd_ellipse(X, Y, cx, top, r, e * r)
    flat_shade, _ = _lighting(light, 0.0, -0.9, 0.44, 0.0)  # the upward-facing top
    parts, kind = [], o["kind"]
    if kind == "can":
        silver = _rgb((196, 198, 204))
        body = Part(np.minimum(wall, top_sdf), _albedo(fin, su, sv, X, Y, px), shade, spec, True)
        rim = lambda a, b: Part(np.maximum(body.sdf, np.maximum(a - sv, sv - b)), silver, shade, 1.5 * spec)
        parts = [body, rim(top - 1.0, top + 0.045), rim(bot - 0.04, bot + 1.0),
                 Part(top_sdf, silver, flat_shade * 1.05),
                 Part(sd_ellipse(X, Y, cx, top + 0.004, 0.8 * r, 0.8 * e * r), silver * 0.82, flat_shade),
                 Part(sd_box(X, Y, cx, top - 0.15 * e * r, 0.14 * r, 0.3 * e * r, 0.3 * e * r),
                      silver * 0.92, flat_shade)]
    elif kind == "bottle":
        glass = _rgb(o["glass_rgb"])
        sh, rn = o["shoulder"], 0.36 * r
        neck_top = top - sh - o["neck"]
        neck = sd_box(X, Y, cx, (neck_top + top - sh) / 2 + 0.01, rn, (top - sh - neck_top) / 2 + 0.02)
        bottle = np.minimum(np.minimum(wall, sd_ellipse(X, Y, cx, top, r, sh)), neck)
        b0, b1 = o["band"]
        label = np.maximum(wall, np.maximum(b0 - sv, sv - b1))
        cap_rgb = _rgb({"gold": (200, 160, 60), "black": (30, 30, 32), "silver": (190, 192, 198),
                        "red": (190, 36, 40)}[o["cap"]])
        parts = [Part(bottle, glass, 0.55 + 0.5 * shade, 1.6 * spec),
                 Part(label, _albedo(fin, su, sv, X, Y, px), shade, 0.5 * spec, True),
                 Part(sd_box(X, Y, cx, neck_top - 0.02, 1.18 * rn, 0.06, 0.015), cap_rgb, shade, spec)]
    else:  # mug
        side, hr = o["handle_side"], o["handle_r"]
        handle = np.abs(sd_circle(X, Y, cx + side * (r + 0.5 * hr), (top + bot) / 2, hr)) - o["handle_w"]
        alb = _albedo(fin, su, sv, X, Y, px)
        inside = _rgb((236, 234, 228)) if o["inside"] == "white" else _rgb(fin["rgb"])
        depth = np.clip((Y - (top - e * r)) / (2 * e * r), 0.0, 1.0)  # darker towards the back wall
        parts = [Part(handle, _rgb(fin["rgb"]), 0.55 + 0.4 * shade, 0.5 * spec),
                 Part(np.minimum(wall, top_sdf), alb, shade, spec, True),
                 Part(top_sdf, _rgb(fin["rgb"]), flat_shade * 1.05),
                 Part(sd_ellipse(X, Y, cx, top, 0.9 * r, 0.9 * e * r), inside, 0.45 + 0.35 * depth)]
    return parts, (su, sv), (cx, bot + 0.6 * e * r, 1.1 * r, 0.08)


def _build_box(o, fin, light, X, Y, px):
    corners = {k: _surface_to_panel(o, s * o["hw"], t * o["hh"])
               for k, (s, t) in {"tl": (-1, -1), "tr": (1, -1), "br": (1, 1), "bl": (-1, 1)}.items()}
    d = (o["dx"], -o["dy"])
    add = lambda p: (p[0] + d[0], p[1] + d[1])
    tl, tr, br, bl = corners["tl"], corners["tr"], corners["br"], corners["bl"]
    top = [tl, tr, add(tr), add(tl)]
    side = [tr, br, add(br), add(tr)] if o["dx"] > 0 else [tl, bl, add(bl), add(tl)]
    su, sv = _panel_to_face(o, X, Y)
    nx, ny, nz = _flat_normal(X, Y, o["cx"], o["cy"], 0.35)
    shade, spec = _lighting(light, nx, ny, nz, 0.8)
    top_shade, top_spec = _lighting(light, 0.0, -0.9, 0.44, 0.5)
    side_shade, _ = _lighting(light, 0.9 if o["dx"] > 0 else -0.9, 0.0, 0.44, 0.0)
    base = _rgb(fin["rgb"])
    grad = 1.0 - 0.25 * np.clip((Y - tr[1]) * 0.8, 0.0, 1.0)  # side face darkens downwards
    parts = [Part(sd_polygon(X, Y, side), base, side_shade * grad),
             Part(sd_polygon(X, Y, top), base, top_shade, top_spec),
             Part(sd_polygon(X, Y, [tl, tr, br, bl]), _albedo(fin, su, sv, X, Y, px), shade, spec, True)]
    ys = [p[1] for p in (bl, br, add(bl), add(br))]
    ground = ((bl[0] + br[0]) / 2 + d[0] / 2, max(ys) - 0.02, 0.6 * (br[0] - bl[0]) + 0.1, 0.08)
    return parts, (su, sv), ground


def _fabric_shade(o, fin, light, X, Y, su, sv, bulge):
    """Matte cloth: a broad bulge plus low-frequency folds from value noise."""
    nx, ny, nz = _flat_normal(X, Y, o["cx"], o["cy"], bulge)
    shade, spec = _lighting(light, nx, ny, nz, 0.15)
    folds = _value_noise(su * 0.8, sv * 0.5, 5, fin["seed"] + 1)
    return shade * (0.86 + 0.24 * folds), spec


def _build_tote(o, fin, light, X, Y, px):
    t = o["taper"]
    quad = [_surface_to_panel(o, s * o["hw"], v * o["hh"])
            for s, v in ((-1 + t, -1), (1 - t, -1), (1, 1), (-1, 1))]
    su, sv = _panel_to_face(o, X, Y)
    shade, spec = _fabric_shade(o, fin, light, X, Y, su, sv, 0.3)
    top_y = (quad[0][1] + quad[1][1]) / 2
    handles = None
    for sgn in (-1, 1):
        hx = _surface_to_panel(o, sgn * 0.5 * o["hw"] * (1 - t), -o["hh"])[0]
        ring = np.abs(sd_circle(X, Y, hx, top_y, o["handle_r"])) - 0.03
        handles = ring if handles is None else np.minimum(handles, ring)
    handles = np.maximum(handles, Y - top_y - 0.03)  # only the arcs above the bag
    strap = _rgb(o["strap_rgb"])
    parts = [Part(handles, strap, 0.75 + 0.2 * shade),
             Part(sd_polygon(X, Y, quad), _albedo(fin, su, sv, X, Y, px), shade, spec, True)]
    return parts, (su, sv), (o["cx"], quad[2][1] - 0.01, 0.65 * (quad[2][0] - quad[3][0]), 0.07)


_TSHIRT = [(-0.25, -0.8), (-0.58, -0.7), (-0.96, -0.34), (-0.76, -0.1), (-0.56, -0.28), (-0.56, 0.86),
           (0.56, 0.86), (0.56, -0.28), (0.76, -0.1), (0.96, -0.34), (0.58, -0.7), (0.25, -0.8),
           (0.15, -0.69), (0.0, -0.65), (-0.15, -0.69)]


def _build_tshirt(o, fin, light, X, Y, px):
    k, cx, cy = o["k"], o["cx"], o["cy"]
    poly = [(cx + k * x, cy + k * y) for x, y in _TSHIRT]
    su, sv = _panel_to_face(o, X, Y)
    shade, spec = _fabric_shade(o, fin, light, X, Y, su, sv, 0.2)
    base = _rgb(fin["rgb"])
    neck = [(cx + k * x, cy + k * y) for x, y in _TSHIRT[11:] + _TSHIRT[:1]]
    collar_segs = [(a[0], a[1], b[0], b[1]) for a, b in zip(neck[:-1], neck[1:])]
    parts = [Part(sd_ellipse(X, Y, cx, cy - 0.78 * k, 0.24 * k, 0.06 * k), base, 0.5),  # back of the neck
             Part(sd_polygon(X, Y, poly), _albedo(fin, su, sv, X, Y, px), shade, spec, True),
             Part(sd_segments(X, Y, collar_segs, 0.022 * k), base * 0.9, shade)]
    return parts, (su, sv), (cx, cy + 0.86 * k, 0.6 * k, 0.06)


_BUILDERS = {"ball": _build_ball, "box": _build_box, "tote bag": _build_tote, "t-shirt": _build_tshirt,
             "can": _build_cylinder, "bottle": _build_cylinder, "mug": _build_cylinder}


# ----------------------------------------------------------------------------- occluders


def _sample_occluder(rng, o, place, body_rgb):
    """A part of the object laid across the logo's edge (both panels show it)."""
    kind = pick(rng, OCCLUDERS[o["kind"]])
    qx, qy = _surface_to_panel(o, place["center"][0], place["center"][1])
    ex, ey = place["extent_panel"]
    size = min(ex, ey)
    a = math.pi * rng.random()
    dx, dy, sgn = _cos(a), _sin(a), _sign(rng)
    occ = {"kind": kind}
    if kind in ("strap", "ribbon", "band", "handle"):
        off = sgn * uniform(rng, 0.2, 0.6) * size
        px_, py_ = qx - dy * off, qy + dx * off  # a point beside the logo centre
        w = uniform(rng, 0.25, 0.42) * size
        if kind == "handle":  # a tote handle that has fallen forward over the bag
            sx, sy = _surface_to_panel(o, sgn * 0.5 * o["hw"] * (1 - o["taper"]), -o["hh"])
            occ.update(segment=[sx, sy - 0.02, px_ + (px_ - sx) * 0.5, py_ + (py_ - sy) * 0.5],
                       half_width=0.04, clip=False, colour=o["strap"], rgb=o["strap_rgb"])
        else:
            occ.update(segment=[px_ - 3 * dx, py_ - 3 * dy, px_ + 3 * dx, py_ + 3 * dy],
                       half_width=w, clip=True)
            occ["colour"], occ["rgb"] = _pick_colour(rng, STRAP_COLOURS, [body_rgb], 80.0)
    elif kind == "leaf":
        half = uniform(rng, 0.9, 1.4) * size
        off = sgn * uniform(rng, 0.4, 0.8) * size
        occ.update(center=[qx - dy * off, qy + dx * off], dir=[dx, dy], half_length=half,
                   half_width=round(half * uniform(rng, 0.3, 0.42), 4))
        occ["colour"], occ["rgb"] = _pick_colour(rng, LEAF_COLOURS, min_dist=0)
    else:  # tag: a small card on a string
        b = uniform(rng, -0.3, 0.3)
        occ.update(center=[qx + sgn * uniform(rng, 0.5, 0.9) * ex, qy + uniform(rng, -0.3, 0.4) * ey],
                   half_size=[uniform(rng, 0.4, 0.55) * size, uniform(rng, 0.55, 0.75) * size],
                   angle=[_cos(b), _sin(b)], string_to=[qx + uniform(rng, -0.3, 0.3), -0.9])
        occ["colour"], occ["rgb"] = _pick_colour(rng, TAG_COLOURS, [body_rgb], 80.0)
    return occ


def _occluder_parts(occ, X, Y, body_sdf, light):
    """Parts of the occluder in paint order; the first-union of their sdfs casts the shadow."""
    rgb = _rgb(occ["rgb"])
    shade, spec = _lighting(light, 0.0, -0.25, 0.97, 0.3)
    if "segment" in occ:
        band = sd_segments(X, Y, [tuple(occ["segment"])], occ["half_width"])
        if occ["clip"]:  # a strap wraps around the object: it ends at the silhouette
            band = np.maximum(band, body_sdf)
        stitch = np.abs(band + 0.3 * occ["half_width"]) - 0.004  # a seam line inside the edge
        return [Part(band, rgb, shade, spec), Part(np.maximum(stitch, band), rgb * 0.75, shade)]
    cx, cy = occ["center"]
    if occ["kind"] == "leaf":
        dx, dy = occ["dir"]
        lu, lv = (X - cx) * dx + (Y - cy) * dy, -(X - cx) * dy + (Y - cy) * dx  # leaf frame
        L, W = occ["half_length"], occ["half_width"]
        R = (L * L + W * W) / (2 * W)  # two circles through the tips make a vesica
        leaf = np.maximum(sd_circle(lu, lv, 0, W - R, R), sd_circle(lu, lv, 0, R - W, R))
        rib = np.maximum(sd_segments(lu, lv, [(-L, 0.0, L, 0.0)], 0.08 * W), leaf + 0.05 * W)
        stem = sd_segments(lu, lv, [(-1.35 * L, 0.12 * W, -0.9 * L, 0.0)], 0.07 * W)
        return [Part(np.minimum(leaf, stem), rgb, shade * (0.9 + 0.15 * lv / W), spec),
                Part(rib, np.minimum(rgb * 1.45, 1.0), shade)]
    ca, sa = occ["angle"]
    lu, lv = (X - cx) * ca + (Y - cy) * sa, -(X - cx) * sa + (Y - cy) * ca
    hx, hy = occ["half_size"]
    hole = (cx - sa * (-0.7 * hy), cy + ca * (-0.7 * hy))
    card = np.maximum(sd_box(lu, lv, 0, 0, hx, hy, 0.25 * hx), -sd_circle(X, Y, hole[0], hole[1], 0.12 * hx))
    string = sd_segments(X, Y, [(hole[0], hole[1], occ["string_to"][0], occ["string_to"][1])], 0.008)
    string = np.maximum(string, body_sdf)  # the string lies on the object
    return [Part(string, _rgb((60, 56, 52)), shade), Part(card, rgb, shade, spec)]


# ----------------------------------------------------------------------------- sampling


def _sample_params(rng, level: int = TOP_LEVEL) -> dict:
    """A scene's parameters. Each `level` test sits where its draw was, so the top level draws
    exactly what it always drew (the same rng calls in the same order)."""
    kind = pick(rng, OBJECT_KINDS if level >= 3 else FLAT_KINDS)
    o = _SAMPLERS[kind](rng)
    if level < 3:  # seen square-on: no perspective
        o["ps"], o["pt"] = 0.0, 0.0
    # finish: colour, texture, colour gradient of the printable surface
    palette = LABEL_COLOURS if kind == "bottle" else OBJECT_COLOURS
    if level == 0:
        palette = {k: OBJECT_COLOURS[k] for k in SIMPLE_OBJECT_COLOURS}
    name, rgb = _pick_colour(rng, palette, [o["glass_rgb"]] if kind == "bottle" else [], 70.0)
    tex = pick(rng, ("plain", "plain", "stripes", "checker", "noise", "speckle")) if level >= 2 else "plain"
    fin = {"colour": name, "rgb": rgb, "texture": tex, "rgb2": rgb, "colour2": None,
           "seed": int(rng.random() * 2**31),
           "gradient": pick(rng, ("none", "linear", "radial")) if level >= 2 else "none",
           "gstrength": uniform(rng, 0.08, 0.22)}
    g = 2 * math.pi * rng.random()
    fin["gdir"] = [_cos(g), _sin(g)]
    if tex in ("stripes", "checker"):
        fin["colour2"], fin["rgb2"] = _pick_colour(rng, dict(OBJECT_COLOURS, **LABEL_COLOURS), [rgb], 90.0)
        fin["period"] = uniform(rng, 0.12, 0.26)
        a = pick(rng, (0.0, 0.5 * math.pi, 0.25 * math.pi, 0.75 * math.pi))
        fin["dir"], fin["duty"] = [_cos(a), _sin(a)], uniform(rng, 0.35, 0.65)
    elif tex == "noise":
        f = uniform(rng, 0.6, 0.8) if sum(rgb) > 300 else uniform(rng, 1.3, 1.6)
        fin["rgb2"] = [min(255, int(c * f)) for c in rgb]
        fin["grid"], fin["amount"] = int(6 + 6 * rng.random()), uniform(rng, 0.6, 1.0)
    elif tex == "speckle":
        fin["rgb2"] = [34, 34, 36] if sum(rgb) > 360 else [236, 236, 232]
        fin["grid"] = int(60 + 30 * rng.random())
    avoid = [rgb] + ([fin["rgb2"]] if tex in ("stripes", "checker") else [])
    logo = _sample_logo(rng, avoid, level)
    # placement: the biggest fit of the (possibly rotated) logo in the label region, jittered
    # (level 0: one scale, unrotated, at the label's centre, shrunk only where the label is smaller)
    u0, u1, v0, v1 = o["label"]
    if level >= 1:
        rot = uniform(rng, -0.18, 0.18) if o["warp"] == "perspective" else uniform(rng, -0.08, 0.08)
    else:
        rot = 0.0
    ca, sa = abs(_cos(rot)), abs(_sin(rot))
    ex, ey = logo["extent"]
    rex, rey = ex * ca + ey * sa, ex * sa + ey * ca
    fit = min((u1 - u0) / 2 / rex, (v1 - v0) / 2 / rey)
    scale = fit * uniform(rng, 0.78, 0.97) if level >= 1 else min(SIMPLE_LOGO_SCALE / max(rex, rey), 0.9 * fit)
    room_u, room_v = (u1 - u0) / 2 - rex * scale, (v1 - v0) / 2 - rey * scale
    jitter = (lambda: (2 * rng.random() - 1) * 0.7) if level >= 1 else (lambda: 0.0)
    center = [round((u0 + u1) / 2 + room_u * jitter(), 4), round((v0 + v1) / 2 + room_v * jitter(), 4)]
    place = {"center": center, "scale": round(scale, 4), "rotation": rot,
             "extent_panel": [round(rex * scale, 4), round(rey * scale, 4)]}
    occ = _sample_occluder(rng, o, place, rgb) if level >= 4 and rng.random() < OCCLUSION_RATE else None
    la = (uniform(rng, -0.7, 0.7), uniform(rng, -0.8, -0.3), uniform(rng, 0.6, 1.0))
    n = math.sqrt(sum(c * c for c in la))
    ld = [c / n for c in la]
    h = [ld[0], ld[1], ld[2] + 1.0]
    hn = math.sqrt(sum(c * c for c in h))
    light = {"dir": ld, "half": [c / hn for c in h], "ambient": uniform(rng, 0.35, 0.5),
             "gloss": uniform(rng, 0.2, 0.55) if level >= 3 else 0.0, "shininess_log2": int(4 + 4 * rng.random())}
    bg_name = pick(rng, BACKGROUNDS)
    bg = {"colour": bg_name, "rgb": _jitter(rng, BACKGROUNDS[bg_name], 0.02),
          "gradient": uniform(rng, 0.0, 0.1) if rng.random() < 0.6 else 0.0}
    return {"object_kind": kind, "logo_kind": logo["kind"], "occluded": occ is not None,
            "warp": o["warp"], "object": o, "finish": fin, "logo": logo, "placement": place,
            "occluder": occ, "light": light, "background": bg}


def _prompt(p) -> str:
    o, fin = p["object"], p["finish"]
    word = TEXTURE_WORDS[fin["texture"]]
    if o["kind"] == "bottle":
        label = f"{word} {fin['colour']}".strip()
        desc = f"{o['glass']} glass bottle with a {label} label and"
    else:
        desc = f"{word} {fin['colour']} {o['kind']} with".strip()
    text = f"{_a(desc)} {_logo_phrase(p['logo'])}"
    if p["occluder"]:
        text += f", partly covered by {_a(p['occluder']['colour'] + ' ' + p['occluder']['kind'])}"
    return text


# ----------------------------------------------------------------------------- rendering


def _logo_coords(place, su, sv):
    """Surface coords -> logo units (translate, rotate, scale)."""
    cu, cv = place["center"]
    ca, sa = _cos(place["rotation"]), _sin(place["rotation"])
    du, dv = su - cu, sv - cv
    return (ca * du + sa * dv) / place["scale"], (-sa * du + ca * dv) / place["scale"]


def _bbox(mask, pad=1):
    """Row and column slices around the True pixels (grown by pad, at least 2 x 2)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    h, w = mask.shape
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)
    if r1 - r0 < 2:
        r0, r1 = max(min(r0, h - 2), 0), max(min(r0, h - 2), 0) + 2
    if c1 - c0 < 2:
        c0, c1 = max(min(c0, w - 2), 0), max(min(c0, w - 2), 0) + 2
    return slice(r0, r1), slice(c0, c1)


def _render(p: dict, size: int) -> dict:
    """Render params at size. Returns uint8 arrays composite/logo/object (H, W, 3), bool footprint
    and silhouette (H, W), and the logo's surface alpha before occlusion (for acceptance checks)."""
    px = 2.0 / size
    X = ((np.arange(size) + 0.5) * px - 1.0)[None, :]  # (1, W)
    Y = X.T                                            # (H, 1)
    o, light, place = p["object"], p["light"], p["placement"]
    layers, (ex, ey) = _logo_layers(p["logo"])

    # background with a soft contact shadow under the object
    bg = p["background"]
    grad = 1.0 + bg["gradient"] * (0.3 - Y)
    img = np.broadcast_to(_rgb(bg["rgb"]) * grad[..., None], (size, size, 3)).copy()
    parts, (su, sv), (gx, gy, grx, gry) = _BUILDERS[o["kind"]](o, p["finish"], light, X, Y, px)
    dx, dy = (X - gx) / grx, (Y - gy) / gry
    img *= (1.0 - 0.28 * (1.0 - _smoothstep(0.2, 1.0, np.sqrt(dx * dx + dy * dy))))[..., None]

    # paint the object's parts; at the printable part the two panels fork
    silhouette = np.zeros((size, size))
    comp, logo_alpha = None, np.zeros((size, size))
    for part in parts:
        cov = _cov(part.sdf, px)
        silhouette = np.maximum(silhouette, cov)
        shade = np.asarray(part.shade, dtype=np.float64)[..., None]
        spec = np.asarray(part.spec, dtype=np.float64)[..., None]
        col = part.albedo * shade + spec
        new = img * (1.0 - cov[..., None]) + col * cov[..., None]
        if part.printable:
            # the logo goes into the albedo, so it gets warped, shaded and highlighted like the surface
            u, v = _logo_coords(place, *np.broadcast_arrays(su, sv))
            m = 0.2 + 2.0 * px / place["scale"]  # room for the anti-aliased fringe
            box = _bbox((np.abs(u) <= ex + m) & (np.abs(v) <= ey + m) & (cov > 0))
            comp = new.copy()
            if box is not None:
                uc, vc = u[box], v[box]
                (duy, dux), (dvy, dvx) = np.gradient(uc), np.gradient(vc)
                # one pixel in logo units (the warp stretches it): sets the anti-aliasing width
                lpx = 0.5 * (np.sqrt(dux * dux + dvx * dvx) + np.sqrt(duy * duy + dvy * dvy))
                pre, a = _paint_logo(layers, uc, vc, np.maximum(lpx, 1e-6))
                a = a * cov[box]
                alb = np.broadcast_to(part.albedo, (size, size, 3))[box]
                alb = alb * (1.0 - a)[..., None] + pre * cov[box][..., None]
                shade_b = np.broadcast_to(shade, (size, size, 1))[box]
                spec_b = np.broadcast_to(spec, (size, size, 1))[box]
                cb = cov[box][..., None]
                comp[box] = img[box] * (1.0 - cb) + (alb * shade_b + spec_b) * cb
                logo_alpha[box] = a
            img = new
        elif comp is None:
            img = new
        else:
            comp = comp * (1.0 - cov[..., None]) + col * cov[..., None]
            img = new
    hidden = np.zeros((size, size))
    if p["occluder"]:
        body = parts[[q.printable for q in parts].index(True)].sdf
        occ_parts = _occluder_parts(p["occluder"], X, Y, body, light)
        # its soft shadow falls on the object (both panels alike)
        sx, sy = -0.03 * light["dir"][0], -0.03 * light["dir"][1]
        sh = _occluder_parts(p["occluder"], X - sx, Y - sy, body, light)
        dark = 1.0 - 0.3 * np.clip(0.5 - np.minimum.reduce([q.sdf for q in sh]) / 0.03, 0.0, 1.0) * silhouette
        img, comp = img * dark[..., None], comp * dark[..., None]
        for part in occ_parts:
            cov = _cov(part.sdf, px)
            silhouette = np.maximum(silhouette, cov)
            hidden = np.maximum(hidden, cov)
            col = part.albedo * np.asarray(part.shade)[..., None] + np.asarray(part.spec)[..., None]
            img = img * (1.0 - cov[..., None]) + col * cov[..., None]
            comp = comp * (1.0 - cov[..., None]) + col * cov[..., None]

    # the flat logo, centred on white
    k = 0.8 / max(ex, ey)
    logo = np.ones((size, size, 3))
    lu, lv = np.broadcast_arrays(X / k, Y / k)
    m = 0.1 + 2.0 * px / k
    box = _bbox((np.abs(lu) <= ex + m) & (np.abs(lv) <= ey + m))
    pre, a = _paint_logo(layers, lu[box], lv[box], px / k)
    logo[box] = logo[box] * (1.0 - a)[..., None] + pre

    q = lambda x: np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    comp_u8, obj_u8 = q(comp), q(img)
    return {"composite": comp_u8, "object": obj_u8, "logo": q(logo),
            "footprint": (comp_u8 != obj_u8).any(axis=-1), "silhouette": silhouette > 0,
            "logo_alpha": logo_alpha, "hidden": hidden}


# ----------------------------------------------------------------------------- API


def _acceptable(r: dict, p: dict) -> bool:
    """The visible logo is big enough, and an occluder really hides part (not all) of it."""
    if (r["logo_alpha"] * (1.0 - r["hidden"])).mean() < MIN_INK:  # area, nearly size-independent
        return False
    if p["occluder"]:
        ink = r["logo_alpha"] > 0.5
        hidden = (ink & (r["hidden"] > 0.5)).sum() / max(ink.sum(), 1)
        return HIDDEN_RANGE[0] <= hidden <= HIDDEN_RANGE[1]
    return True


def make_triplet(seed: int, size: int, level: int = TOP_LEVEL) -> Triplet:
    """The triplet of `seed` drawn at size x size from the world at `level` (WORLD_LEVELS);
    pixel-identical for the same (seed, size, level)."""
    check_size(size)
    check_level(level)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    for attempt in range(MAX_ATTEMPTS):
        p = _sample_params(rng, level)
        ref = _render(p, REF_SIZE)  # acceptance is judged at one size so seeds agree across sizes
        if _acceptable(ref, p):
            break
    # (after MAX_ATTEMPTS the last sample is kept; it has never happened over the tested seeds)
    p["seed"], p["attempt"] = int(seed), attempt
    if level != TOP_LEVEL:  # (the top level's params stay as they always were)
        p["world_level"] = level
    r = ref if size == REF_SIZE else _render(p, size)
    return Triplet(composite=Image.fromarray(r["composite"], "RGB"), logo=Image.fromarray(r["logo"], "RGB"),
                   object=Image.fromarray(r["object"], "RGB"),
                   footprint=Image.fromarray(r["footprint"].astype(np.uint8) * 255, "L"),
                   prompt=_prompt(p), params=p)


def object_prompt(p: dict) -> str:
    """What the object panel alone shows: the triplet's prompt without its logo."""
    o, fin = p["object"], p["finish"]
    word = TEXTURE_WORDS[fin["texture"]]
    if o["kind"] == "bottle":
        text = _a(f"{o['glass']} glass bottle with a {word} {fin['colour']} label".replace("  ", " "))
    else:
        text = _a(f"{word} {fin['colour']} {o['kind']}".strip())
    if p["occluder"]:
        text += f" with {_a(p['occluder']['colour'] + ' ' + p['occluder']['kind'])}"
    return text


def make_single(seed: int, size: int, panel: str, level: int = TOP_LEVEL) -> tuple[Image.Image, str]:
    """One image of the procedural world on its own, with its description: panel "object" is a
    plain object ("a red mug"), "logo" a flat emblem or glyph on white ("a blue star emblem").

    For pretraining the tiny base (codec and text-to-image): a single panel of its own seed, never
    a (composite, logo, object) triplet, so the base learns what objects and emblems look like but
    not the decomposition. Callers give seeds from their own namespace (never "synthetic")."""
    t = make_triplet(seed, size, level)
    if panel == "object":
        return t.object, object_prompt(t.params)
    if panel == "logo":
        return t.logo, _logo_phrase(t.params["logo"])
    raise ValueError(f"panel must be 'object' or 'logo', got {panel!r}")


def make_layer(seed: int, size: int, k: int, level: int = TOP_LEVEL) -> tuple[Image.Image, str]:
    """Layer k of the grid on its own (1: the logo, 2: the plain object), with its description:
    the compose source's procedural layers, each from its own seed (never paired by the world)."""
    return make_single(seed, size, PANELS[k], level)


def make_triplets(seeds: Iterable[int], size: int, level: int = TOP_LEVEL) -> Iterator[Triplet]:
    """Lazily, one triplet per seed, in order; a bad size fails at the call, not at first next()."""
    check_size(size)
    check_level(level)
    return (make_triplet(seed, size, level) for seed in seeds)


def describe(seed: int, level: int = TOP_LEVEL) -> str:
    """The prompt of `seed`'s triplet: a prompt bank of the procedural domain."""
    return make_triplet(seed, REF_SIZE, level).prompt
