"""Exact corruptions of synthetic triplets: the negatives the judge is calibrated and tested on.

A clean triplet from `models.domains.logo_object` passes every criterion by construction. Each corruption
breaks it in one known way, and the label of every criterion follows from what was done, so the
benchmark has exact per-criterion ground truth with no human in the loop:

    kind          what is done (panel chosen at random where it says "a panel")      criteria broken
    residue       a ghost of the logo left on the object panel, over all or half     object_clean
                  of the footprint (object + a * (composite - object), a in .35-.75)
    missing       the logo faded out of the composite (a in .9-1)                    composite_match, panels_agree
    mismatch      the object or the composite panel taken from another triplet       composite_match (+ panels_agree
                                                                                     when the composite is swapped)
    wrong_logo    the logo panel taken from a triplet with another logo              panels_agree
    unclean_logo  the logo panel's white background replaced by a faded scene        logo_clean
    blur          a Gaussian blur on a panel (or all three)                          quality
    noise         Gaussian noise on a panel (or all three); through the codec, in    quality (+ logo_clean on the logo)
                  its latents as well (`latent_noise`)
    colour_shift  a hue rotation (or a tint, for achromatic panels) of one panel     logo: panels_agree; object:
                                                                                     composite_match; composite: either
                                                                                     or both, by where it changed
    blank         a panel replaced by its median colour                              quality + whatever reads that panel

`composite_match` is the object <-> composite relation (the composite is the object panel plus a
compact logo), `panels_agree` the logo <-> composite relation (the logo in the composite has the
logo panel's shape and colours). Seeds come from `derive_seed(run_seed, "judge-calibration", i)`,
a namespace that seed and test triplets (`"synthetic"`) never use.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from models.domains.logo_object.world import PANELS, TOP_LEVEL, Triplet, make_triplet
from models.judge.image_ops import to_float, to_image
from storage.hashing import derive_seed

CRITERIA = ("logo_clean", "object_clean", "composite_match", "panels_agree", "quality")
KINDS = ("residue", "missing", "mismatch", "wrong_logo", "unclean_logo", "blur", "noise", "colour_shift", "blank")

# which criteria a blank panel breaks: quality, plus every criterion that reads that panel
_BLANK_BREAKS = {
    "composite": {"composite_match", "panels_agree", "quality"},
    "logo": {"logo_clean", "panels_agree", "quality"},
    "object": {"object_clean", "composite_match", "quality"},
}
_SHIFT_BREAKS = {"logo": {"panels_agree"}, "object": {"composite_match"}}  # composite: see corrupt()


@dataclass(frozen=True)
class BenchItem:
    index: int
    seed: int
    kind: str  # "clean" or one of KINDS
    composite: Image.Image
    logo: Image.Image
    object: Image.Image
    broken: frozenset[str]  # criteria this item violates (empty for clean items)
    detail: dict = field(default_factory=dict)  # what was done: panel, strength, donor seed

    @property
    def panels(self) -> tuple[Image.Image, Image.Image, Image.Image]:
        return self.composite, self.logo, self.object

    def label(self, criterion: str) -> bool:
        """True when the criterion holds for this item."""
        return criterion not in self.broken


# ----------------------------------------------------------------------------- pixel helpers


def _hue_rotate(x: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate hue about the grey axis (luma-preserving YIQ rotation): greys stay grey."""
    a = np.deg2rad(degrees)
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    m = np.linalg.inv(to_yiq) @ rot @ to_yiq
    return np.clip(x @ m.T, 0.0, 1.0)


def _half_plane(shape, rng) -> np.ndarray:
    """A random half of the panel through its centre (for partial residue)."""
    h, w = shape
    a = 2 * np.pi * rng.random()
    y, x = np.mgrid[0:h, 0:w]
    return (np.cos(a) * (x - w / 2) + np.sin(a) * (y - h / 2)) > 0


def _different(t: Triplet, make_donor, key) -> Triplet:
    """A donor triplet that differs from t in what `key` reads (so the label is exact)."""
    for attempt in range(16):
        d = make_donor(attempt)
        if key(d.params) != key(t.params):
            return d
    raise RuntimeError("no differing donor in 16 attempts")  # never seen: the vocabularies are large


# ----------------------------------------------------------------------------- corruptions


def corrupt(t: Triplet, kind: str, rng: np.random.Generator, make_donor) -> tuple[tuple, frozenset, dict]:
    """Apply corruption `kind` to triplet t. `make_donor(attempt) -> Triplet` supplies other triplets
    (same size) for swaps. Returns ((composite, logo, object), broken criteria, detail)."""
    comp, logo, obj = to_float(t.composite), to_float(t.logo), to_float(t.object)
    size = comp.shape[0]
    scale = size / 64.0  # strengths are given for 64-px panels
    fp = np.asarray(t.footprint) > 0
    panel = PANELS[int(rng.random() * 3)]
    if kind == "residue":
        a = 0.35 + 0.4 * rng.random()
        where = fp & _half_plane(fp.shape, rng) if rng.random() < 0.5 else fp
        if where.sum() < 0.3 * fp.sum():  # a half that misses the logo is no residue
            where = fp
        obj = np.where(where[..., None], obj + a * (comp - obj), obj)
        return (to_image(comp), t.logo, to_image(obj)), frozenset({"object_clean"}), {"alpha": round(a, 3),
                                                                                "partial": bool((where != fp).any())}
    if kind == "missing":
        a = 0.9 + 0.1 * rng.random()
        comp = comp + a * (obj - comp)
        return (to_image(comp), t.logo, t.object), frozenset({"composite_match", "panels_agree"}), {"alpha": round(a, 3)}
    if kind == "mismatch":
        which = "object" if rng.random() < 0.5 else "composite"
        d = _different(t, make_donor, lambda p: (p["object_kind"], p["finish"]["colour"]))
        if which == "object":
            return (t.composite, t.logo, d.object), frozenset({"composite_match"}), {"panel": which,
                                                                                      "donor": d.params["seed"]}
        broken = {"composite_match", "panels_agree"}
        return (d.composite, t.logo, t.object), frozenset(broken), {"panel": which, "donor": d.params["seed"]}
    if kind == "wrong_logo":
        d = _different(t, make_donor, lambda p: (p["logo"]["kind"], p["logo"]["colour"], p["logo"]["letters"]))
        return (t.composite, d.logo, t.object), frozenset({"panels_agree"}), {"donor": d.params["seed"]}
    if kind == "unclean_logo":
        # the generator failed to clear the scene: the logo sits on a faded copy of the composite
        a = 0.35 + 0.45 * rng.random()
        ink = np.abs(logo - 1.0).max(axis=-1) > 0.02
        scene = (1 - a) * 1.0 + a * comp
        if (np.abs(scene - 1.0).max(axis=-1)[~ink] > 0.1).mean() < 0.05:
            # the logo would hide the scene: shrink it so the scene shows around it (exact label)
            k = round(0.6 * size)
            small = np.asarray(t.logo.resize((k, k), Image.BOX), dtype=np.float64) / 255.0
            logo, ink = np.ones_like(logo), np.zeros(ink.shape, dtype=bool)
            o0 = (size - k) // 2
            logo[o0:o0 + k, o0:o0 + k] = small
            ink[o0:o0 + k, o0:o0 + k] = np.abs(small - 1.0).max(axis=-1) > 0.02
        logo = np.where(ink[..., None], logo, scene)
        return (t.composite, to_image(logo), t.object), frozenset({"logo_clean"}), {"alpha": round(a, 3)}
    if kind in ("blur", "noise"):
        every = rng.random() < 0.25
        targets = PANELS if every else (panel,)
        sigma = (1.0 + 1.0 * rng.random()) * scale if kind == "blur" else 0.04 + 0.08 * rng.random()
        out = {"composite": t.composite, "logo": t.logo, "object": t.object}
        for p in targets:
            if kind == "blur":
                out[p] = out[p].filter(ImageFilter.GaussianBlur(sigma))
            else:
                x = to_float(out[p])
                out[p] = to_image(x + sigma * rng.standard_normal(x.shape))
        broken = {"quality"} | ({"logo_clean"} if kind == "noise" and "logo" in targets else set())
        detail = {"panel": "all" if every else panel, "sigma": round(sigma, 3)}
        return (out["composite"], out["logo"], out["object"]), frozenset(broken), detail
    if kind == "colour_shift":
        x = {"composite": comp, "logo": logo, "object": obj}[panel]
        deg = 90.0 + 180.0 * rng.random()
        y = _hue_rotate(x, deg)
        if np.percentile(np.abs(y - x).max(axis=-1), 95) < 0.2:  # achromatic panel: a hue turn is no change
            y, deg = np.clip(x + np.array([0.3, -0.15, -0.15]) * (1 if rng.random() < 0.5 else -1), 0, 1), None
        change = np.abs(y - x).max(axis=-1)
        if panel == "composite":  # what changed decides what broke: the object around the logo, the logo, or both
            broken = {"composite_match"} if np.percentile(change[~fp], 95) >= 0.1 else set()
            broken |= {"panels_agree"} if change[fp].mean() >= 0.1 else set()
        else:
            broken = _SHIFT_BREAKS[panel]
        out = {"composite": t.composite, "logo": t.logo, "object": t.object, panel: to_image(y)}
        return ((out["composite"], out["logo"], out["object"]), frozenset(broken),
                {"panel": panel, "degrees": None if deg is None else round(deg, 1)})
    if kind == "blank":
        x = {"composite": comp, "logo": logo, "object": obj}[panel]
        flat = np.broadcast_to(np.median(x.reshape(-1, 3), axis=0), x.shape)
        out = {"composite": t.composite, "logo": t.logo, "object": t.object, panel: to_image(flat)}
        return (out["composite"], out["logo"], out["object"]), frozenset(_BLANK_BREAKS[panel]), {"panel": panel}
    raise ValueError(f"unknown corruption kind {kind!r}; known: {', '.join(KINDS)}")


CODEC_SUFFIX = "+codec"


LATENT_NOISE_PER_SIGMA = 2.5  # a noise item's t in the latents (0.1-0.3) per unit of its pixel sigma


def latent_noise(it: BenchItem) -> tuple[tuple[int, ...], float, int] | None:
    """Where a decode carries a noise item's noise: the codec removes pixel noise (sigma 0.04-0.12
    in; the decode lies 44-28 dB from the clean triplet's decode, docs/research-log.md "Noise the
    codec removes"), so the same panels' latents are noised as a sample stopped short is: t = 2.5
    sigma, 0.1-0.3, which puts the decode 33-19 dB from the clean decode, as the pixel noise put the
    raw panel 28-18 dB from the clean one."""
    if it.kind != "noise":
        return None
    panels = tuple(range(3)) if it.detail["panel"] == "all" else (PANELS.index(it.detail["panel"]),)
    return panels, LATENT_NOISE_PER_SIGMA * it.detail["sigma"], derive_seed(it.seed, "judge-calibration", "latent-noise")


def through_codec(items: list[BenchItem], codec) -> list[BenchItem]:
    """The same items after `codec` (a list of (composite, logo, object) -> the same, round-tripped
    through the VAE; `latent_noise=` per item, see models/loop/evaluate.codec_roundtrip): every
    candidate the loop judges is a decode, so a judge must accept clean triplets after the codec and
    still reject corrupted ones. Labels are unchanged; kinds get "+codec"; noise items keep their
    noise in the latents (`latent_noise`)."""
    made = codec([it.panels for it in items], latent_noise=[latent_noise(it) for it in items])
    return [BenchItem(it.index, it.seed, it.kind + CODEC_SUFFIX, c, l, o, it.broken, it.detail)
            for it, (c, l, o) in zip(items, made)]


def build_benchmark(run_seed: int, n: int, size: int, kinds: tuple[str, ...] = KINDS,
                    clean_fraction: float = 0.4, codec=None, level: int = TOP_LEVEL) -> list[BenchItem]:
    """n items: about clean_fraction clean triplets, the rest cycling through `kinds`; with a
    `codec`, followed by the same n items through it (`through_codec`): 2n items.

    Item i uses triplet `derive_seed(run_seed, "judge-calibration", i)` of the world at `level`; its
    corruption draws and donors are derived from the same (run_seed, i), so the benchmark is a pure
    function of its args.
    """
    items = []
    n_clean = round(n * clean_fraction)
    # interleave: clean items spread evenly, corruption kinds in turn over the others
    is_clean = [int((i + 1) * n_clean / n) > int(i * n_clean / n) for i in range(n)]
    k = 0
    for i in range(n):
        seed = derive_seed(run_seed, "judge-calibration", i)
        t = make_triplet(seed, size, level)
        if is_clean[i]:
            items.append(BenchItem(i, seed, "clean", t.composite, t.logo, t.object, frozenset()))
            continue
        kind = kinds[k % len(kinds)]
        k += 1
        rng = np.random.Generator(np.random.PCG64(derive_seed(run_seed, "judge-calibration", i, "corruption")))
        donor = lambda attempt, i=i: make_triplet(derive_seed(run_seed, "judge-calibration", i, "donor", attempt), size,
                                                  level)
        (c, l, o), broken, detail = corrupt(t, kind, rng, donor)
        items.append(BenchItem(i, seed, kind, c, l, o, broken, detail))
    return items + (through_codec(items, codec) if codec is not None else [])
