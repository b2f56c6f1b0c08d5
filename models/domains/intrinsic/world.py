"""Procedural intrinsic-image world with exact ground truth: composite = albedo x shading.

The paper's second layer task (intrinsic decomposition, evaluated on MAW); here drawn so that the
ground truth is exact and the Retinex assumptions hold by construction:
  - albedo: flat-coloured shapes (discs, boxes, triangles) on a flat ground: piecewise constant,
    anti-aliased at the edges;
  - shading: achromatic (R = G = B), smooth: Lambertian light from one direction on a height field
    of polynomial bumps, plus ambient light, so it lies in [ambient, 1];
  - composite: albedo x shading, computed from the two stored 8-bit panels, so re-composing the
    ground truth gives the composite exactly (to 8-bit rounding).

A triplet is `composite | albedo | shading`. Determinism across machines as in
models/domains/logo_object/world.py: only IEEE-exact numpy operations (+ - * / sqrt, min/max)
touch pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.domains.base import check_size, pick, uniform
from models.domains.shapes import sd_box, sd_circle, sd_polygon

PANELS = ("composite", "albedo", "shading")

COLOURS = {
    "red": (200, 52, 48), "blue": (46, 92, 190), "green": (52, 150, 76), "yellow": (232, 200, 60),
    "orange": (230, 126, 40), "purple": (120, 70, 160), "teal": (40, 146, 150), "pink": (226, 136, 170),
    "white": (236, 234, 228), "grey": (140, 142, 146), "brown": (130, 88, 56),
}
GROUNDS = {"beige": (214, 196, 160), "light grey": (206, 208, 212), "cream": (236, 228, 204), "sage": (178, 196, 166)}
SHAPES = ("disc", "box", "triangle")
DIRECTIONS = {  # light direction in the image plane (x right, y down), named by where it comes from
    "upper left": (-1.0, -1.0), "upper right": (1.0, -1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0),
    "above": (0.0, -1.0), "lower left": (-1.0, 1.0),
}


@dataclass(frozen=True)
class IntrinsicTriplet:
    composite: Image.Image  # RGB: albedo x shading
    albedo: Image.Image  # RGB: flat colours
    shading: Image.Image  # RGB with R = G = B: the light falling on the scene
    prompt: str  # e.g. "a red disc and a blue box on a beige ground, lit from the upper left"
    params: dict  # the sampled parameters (JSON-serialisable)
    footprint = None  # the logo task's "where the layer changes the composite" has no analogue here

    @property
    def panels(self) -> tuple[Image.Image, Image.Image, Image.Image]:
        return self.composite, self.albedo, self.shading


def _sample(rng) -> dict:
    ground = pick(rng, GROUNDS)
    names = [n for n in COLOURS]
    shapes = []
    for _ in range(2 + int(rng.random() * 3)):  # 2-4 shapes, each its own colour
        colour = pick(rng, names)
        names.remove(colour)
        shapes.append({"kind": pick(rng, SHAPES), "colour": colour, "x": uniform(rng, 0.2, 0.8), "y": uniform(rng, 0.2, 0.8),
                       "r": uniform(rng, 0.1, 0.22), "turn": uniform(rng, 0.0, 1.0)})
    bumps = [{"x": uniform(rng, 0.0, 1.0), "y": uniform(rng, 0.0, 1.0), "r": uniform(rng, 0.3, 0.6), "h": uniform(rng, -0.25, 0.25)}
             for _ in range(3 + int(rng.random() * 3))]
    return {"ground": ground, "shapes": shapes, "bumps": bumps, "light": pick(rng, DIRECTIONS),
            "elevation": uniform(rng, 0.35, 0.75), "ambient": uniform(rng, 0.25, 0.45)}


def _albedo(p: dict, x: np.ndarray, y: np.ndarray, px: float) -> np.ndarray:
    """[H, W, 3] in [0, 1]: later shapes cover earlier ones; edges anti-aliased."""
    out = np.broadcast_to(np.asarray(GROUNDS[p["ground"]], np.float64) / 255, (*x.shape, 3)).copy()
    for s in p["shapes"]:
        if s["kind"] == "disc":
            sdf = sd_circle(x, y, s["x"], s["y"], s["r"])
        elif s["kind"] == "box":
            sdf = sd_box(x, y, s["x"], s["y"], s["r"], s["r"] * (0.6 + 0.4 * s["turn"]))
        else:  # an upright or inverted triangle
            k = 1.0 if s["turn"] < 0.5 else -1.0
            sdf = sd_polygon(x, y, [(s["x"], s["y"] - k * s["r"]), (s["x"] + s["r"], s["y"] + k * s["r"]),
                                    (s["x"] - s["r"], s["y"] + k * s["r"])])
        cover = np.clip(0.5 - sdf / px, 0.0, 1.0)[..., None]
        out = out * (1 - cover) + cover * (np.asarray(COLOURS[s["colour"]], np.float64) / 255)
    return out


def _shading(p: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[H, W] in [ambient, 1]: Lambert on h = sum of bumps h_i * max(0, 1 - d^2 / r_i^2)^2."""
    hx, hy = np.zeros_like(x), np.zeros_like(x)
    for b in p["bumps"]:
        dx, dy = x - b["x"], y - b["y"]
        q = np.maximum(0.0, 1.0 - (dx * dx + dy * dy) / (b["r"] * b["r"]))  # h q^2 has d/dx = -4 h q dx / r^2
        hx -= 4 * b["h"] * q * dx / (b["r"] * b["r"])
        hy -= 4 * b["h"] * q * dy / (b["r"] * b["r"])
    norm = np.sqrt(hx * hx + hy * hy + 1.0)
    lx, ly = DIRECTIONS[p["light"]]
    lz = p["elevation"] * math.sqrt(lx * lx + ly * ly) / math.sqrt(1.0 - p["elevation"] ** 2)  # exact: sqrt only
    ln = math.sqrt(lx * lx + ly * ly + lz * lz)
    # n = (-hx, -hy, 1) / norm; (lx, ly, lz) points from the surface towards the light
    lambert = np.maximum(0.0, (lz - hx * lx - hy * ly) / (norm * ln))
    return p["ambient"] + (1.0 - p["ambient"]) * lambert


def _describe(p: dict) -> str:
    parts = [f"{'an' if s['colour'][0] in 'aeiou' else 'a'} {s['colour']} {s['kind']}" for s in p["shapes"]]
    things = ", ".join(parts[:-1]) + f" and {parts[-1]}"
    return f"{things} on a {p['ground']} ground, lit from the {p['light']}"


def make_triplet(seed: int, size: int) -> IntrinsicTriplet:
    """The triplet of `seed` drawn at size x size; pixel-identical for the same (seed, size)."""
    check_size(size)
    p = _sample(np.random.Generator(np.random.PCG64(int(seed))))
    p["seed"] = int(seed)
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    x, y = np.meshgrid(c, c)
    albedo = np.round(_albedo(p, x, y, 1.0 / size) * 255).astype(np.uint8)
    shading = np.round(_shading(p, x, y) * 255).astype(np.uint8)
    return IntrinsicTriplet(
        composite=Image.fromarray(recompose(albedo, shading), "RGB"),
        albedo=Image.fromarray(albedo, "RGB"),
        shading=Image.fromarray(np.repeat(shading[..., None], 3, axis=2), "RGB"),
        prompt=_describe(p), params=p,
    )


def make_single(seed: int, size: int, panel: str) -> tuple[Image.Image, str]:
    """One image of the world on its own, with its description: panel "albedo" is a scene's flat
    colours ("flat colours: a red disc and a blue box on a beige ground"), "shading" a grey light
    field ("grey light on a bumpy ground, from the upper left"). For pretraining a base's
    text-to-image share: a single panel of its own seed, never a triplet (models/pretrain)."""
    t = make_triplet(seed, size)
    p = t.params
    if panel == "albedo":
        return t.albedo, "flat colours: " + _describe(p).rsplit(", lit from", 1)[0]
    if panel == "shading":
        return t.shading, f"grey light on a bumpy ground, from the {p['light']}"
    raise ValueError(f"panel must be 'albedo' or 'shading', got {panel!r}")


def recompose(albedo: np.ndarray, shading: np.ndarray) -> np.ndarray:
    """The analytic composition (the cycle check's reference): uint8 albedo [H, W, 3] times uint8
    shading ([H, W] or [H, W, 3]) -> uint8 composite, rounded to nearest."""
    s = shading if shading.ndim == 3 else shading[..., None]
    return np.round(albedo.astype(np.float64) * s.astype(np.float64) / 255).astype(np.uint8)


def describe(seed: int) -> str:
    """The prompt of `seed`'s triplet (a prompt bank of the world)."""
    return _describe(_sample(np.random.Generator(np.random.PCG64(int(seed)))))
