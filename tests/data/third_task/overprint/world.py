"""Two inks on white paper: a disc (layer 1) and a box (layer 2); where they overlap, the inks multiply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.domains.base import check_size
from models.domains.shapes import sd_box, sd_circle

PANELS = ("composite", "disc", "box")
INKS = {"cyan": (40, 200, 230), "magenta": (220, 60, 160), "yellow": (245, 220, 40)}


@dataclass(frozen=True)
class Overprint:
    composite: Image.Image
    disc: Image.Image
    box: Image.Image
    prompt: str
    params: dict
    footprint = None

    @property
    def panels(self) -> tuple[Image.Image, Image.Image, Image.Image]:
        return self.composite, self.disc, self.box


def recompose(disc: np.ndarray, box: np.ndarray) -> np.ndarray:
    return np.round(disc.astype(np.float64) * box.astype(np.float64) / 255).astype(np.uint8)


def _ink(inside: np.ndarray, rgb) -> np.ndarray:
    return np.round(255 + inside[..., None] * (np.asarray(rgb, np.float64) - 255)).astype(np.uint8)


def make_triplet(seed: int, size: int) -> Overprint:
    check_size(size)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    names = list(INKS)
    a, b = names[int(rng.random() * 3)], names[int(rng.random() * 3)]
    cx, cy, r = 0.3 + 0.2 * rng.random(), 0.3 + 0.2 * rng.random(), 0.15 + 0.1 * rng.random()
    bx, by, h = 0.5 + 0.2 * rng.random(), 0.5 + 0.2 * rng.random(), 0.12 + 0.1 * rng.random()
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    x, y = np.meshgrid(c, c)
    px = 1.0 / size
    disc = _ink(np.clip(0.5 - sd_circle(x, y, cx, cy, r) / px, 0, 1), INKS[a])
    box = _ink(np.clip(0.5 - sd_box(x, y, bx, by, h, h) / px, 0, 1), INKS[b])
    prompt = f"a {a} disc overprinted with a {b} box"
    return Overprint(Image.fromarray(recompose(disc, box)), Image.fromarray(disc), Image.fromarray(box), prompt,
                     {"seed": int(seed), "disc": a, "box": b})


def describe(seed: int) -> str:
    return make_triplet(seed, 32).prompt
