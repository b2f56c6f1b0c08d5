"""The intrinsic task's labelled corruption benchmark: what its judge is calibrated and tested on.

Corruptions (what a decomposition gets wrong), each labelled with the criteria it breaks (judge.py):
shading left in the albedo (the product unchanged: only albedo_flat breaks), an albedo edge in
the shading, colour in the shading, an albedo from another scene, blur / noise / blank panels, and
confetti (colour blocks at the latent patch's scale: what an untrained adapter draws).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from models.domains.intrinsic.world import make_triplet
from models.judge.image_ops import gaussian, to_float, to_image
from storage.hashing import derive_seed

KINDS = ("shading_in_albedo", "albedo_edge_in_shading", "coloured_shading", "wrong_albedo", "blur", "noise", "blank",
         "confetti")


@dataclass(frozen=True)
class BenchItem:
    kind: str  # "clean" or one of KINDS
    panels: tuple[Image.Image, Image.Image, Image.Image]
    broken: frozenset[str]
    detail: dict = field(default_factory=dict)

    def label(self, criterion: str) -> bool:
        return criterion not in self.broken


def corrupt(t, kind: str, rng: np.random.Generator, donor) -> tuple[tuple, frozenset, dict]:
    """(panels, criteria broken, detail) of `kind` applied to the clean triplet `t`."""
    c, a, s = (to_float(im) for im in (t.composite, t.albedo, t.shading))
    if kind == "shading_in_albedo":  # part of the shading moved into the albedo; the product unchanged
        k = 0.5 + 0.5 * float(rng.random())
        return (t.composite, to_image(a * s ** k), to_image(s ** (1 - k))), frozenset({"albedo_flat"}), {"share": round(k, 3)}
    if kind == "albedo_edge_in_shading":  # the shading darkened inside one shape: a step where the albedo has one
        shapes = t.params["shapes"]
        sh = shapes[int(rng.random() * len(shapes))]
        n = a.shape[0]
        yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n
        inside = (np.abs(xx - sh["x"]) < sh["r"]) & (np.abs(yy - sh["y"]) < sh["r"])
        k = 0.4 + 0.3 * float(rng.random())
        return (t.composite, t.albedo, to_image(s * np.where(inside, k, 1.0)[..., None])), \
            frozenset({"shading_smooth", "recomposes"}), {"darken": round(k, 3)}
    if kind == "coloured_shading":
        tint = np.ones(3)
        tint[int(rng.random() * 3)] = 0.55 + 0.2 * float(rng.random())
        return (t.composite, t.albedo, to_image(s * tint)), frozenset({"shading_achromatic", "recomposes"}), {}
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
    panels[i] = to_image(y)
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
