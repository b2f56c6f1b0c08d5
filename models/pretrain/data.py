"""Procedural pretraining data: three-panel in-context examples, and single images for the VAE.

Before the tiny model ever sees the logo-on-object task it is pretrained as a broad in-context
model on content of *other* families (textures, shapes, layered scenes, colour fields, shading
maps), so it learns generic skills -- copying between panels, separating layers, blending,
inpainting -- without seeing that domain or its test split. Nothing here draws products or logos.

Every example is `panel0 | panel1 | panel2`; panel0 is computed *exactly* from panel1 and panel2
(on the returned uint8 pixels) by a named relation, so a model can learn both directions:
panel0 from panel1+panel2, and panel1+panel2 from panel0.

Content is drawn at SS x resolution and LANCZOS-downsampled (anti-aliasing, deterministic); the
relations are then applied to the downsampled uint8 panels, so their equations hold exactly.
Everything is a pure function of (seed, size): one numpy Generator(PCG64) per call, no global RNG.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from models.domains.base import check_size

RELATIONS: tuple[str, ...] = (  # the mix `make_example` draws from (the shipped bases' pretraining)
    "alpha_over", "multiply", "screen", "add", "darken", "lighten",
    "warp_blend", "copy", "shift", "recolour", "flip", "rotate90",
)
# Relations drawn only by name (`make_example_of`), for a curriculum's stages: adding them to
# RELATIONS would change every example `make_example` draws, and so the shipped bases' data.
NAMED_RELATIONS: tuple[str, ...] = ("cut_out", "cut_out_flat")
SS = 2  # supersampling factor: draw at SS x size, then LANCZOS down

# Separate streams so make_image(s) is not just make_example(s)'s first picture.
_EXAMPLE_STREAM, _IMAGE_STREAM = 0, 1


@dataclass(frozen=True)
class Example:
    panels: tuple[Image.Image, Image.Image, Image.Image]  # RGB, size x size each
    relation: str  # one of RELATIONS
    prompt: str  # short text naming the relation, e.g. "left is the middle layer laid over the right background"


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def make_example(seed: int, size: int) -> Example:
    """One three-panel example; the relation is drawn uniformly from RELATIONS."""
    return make_example_detailed(seed, size)[0]


def make_example_detailed(seed: int, size: int, relation: str | None = None) -> tuple[Example, dict[str, Any]]:
    """`make_example` plus the ground truth that the panels alone do not show (for tests/debugging);
    with `relation` (any of RELATIONS + NAMED_RELATIONS), an example of that relation instead of a
    drawn one (`make_example_of`):

    alpha_over / warp_blend / cut_out: "alpha" (uint8 size x size, the coverage of the layer as laid
    onto panel2; panel1 shows the unwarped layer, whose coverage is "layer_alpha"); warp_blend:
    "warp"; cut_out: "scale"; shift: "move" = (dy, dx) content displacement from panel1 to panel0
    (and panel0 to panel2); recolour: "op" and "perm" or "matrix"; flip: "axis" (panel0's mirror
    axis); rotate90: "k" for np.rot90; multiply / screen / add / darken / lighten / copy: nothing.
    """
    check_size(size)
    rng = _rng(seed, _EXAMPLE_STREAM)
    if relation is None:
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    elif relation not in _BUILDERS:
        raise ValueError(f"unknown relation {relation!r}; one of {', '.join(_BUILDERS)}")
    p0, p1, p2, prompt, truth = _BUILDERS[relation](rng, size)
    panels = tuple(Image.fromarray(np.ascontiguousarray(p), "RGB") for p in (p0, p1, p2))
    return Example(panels, relation, prompt), truth


def make_example_of(seed: int, size: int, relation: str) -> Example:
    """One example of the named relation (a curriculum's stage draws its relations by name)."""
    return make_example_detailed(seed, size, relation)[0]


def make_image(seed: int, size: int) -> Image.Image:
    """One RGB image from the same content families (pretraining data for a tiny VAE)."""
    check_size(size)
    rng = _rng(seed, _IMAGE_STREAM)
    return Image.fromarray(_down(_picture(rng, _square(size))), "RGB")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([stream, int(seed)]))


# ----------------------------------------------------------------------------------------------
# Relations. Each builder returns (panel0, panel1, panel2, prompt, truth) as uint8 HxWx3 arrays.
# Content is made at SS x, downsampled, and only then related, so the equations are exact.
# ----------------------------------------------------------------------------------------------

Panels = tuple[np.ndarray, np.ndarray, np.ndarray, str, dict[str, Any]]


def _alpha_over(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    p_layer, a_layer = _down_layer(*_layer(rng, cv))
    bg = _down(_picture(rng, cv))
    p1 = _over(p_layer, a_layer, _white(size))  # the layer alone, shown on white
    p0 = _over(p_layer, a_layer, bg)
    return p0, p1, bg, "left is the middle layer laid over the right background", {"alpha": a_layer}


def _warp_blend(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    prem, alpha = _patch_layer(rng, cv)
    kind = ("affine", "perspective", "wave")[int(rng.integers(3))]
    sx, sy = _WARPS[kind](rng, cv)
    warped = _remap(np.dstack([prem, alpha]), sx, sy)
    p_flat, a_flat = _down_layer(prem, alpha)
    p_warp, a_warp = _down_layer(warped[..., :3], warped[..., 3])
    bg = _down(_picture(rng, cv))
    p1 = _over(p_flat, a_flat, _white(size))
    p0 = _over(p_warp, a_warp, bg)
    how = {"affine": "turned and stretched", "perspective": "seen in perspective", "wave": "bent by a wave"}[kind]
    prompt = f"left is the middle layer {how} and laid over the right background"
    return p0, p1, bg, prompt, {"alpha": a_warp, "layer_alpha": a_flat, "warp": kind}


def _multiply(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    albedo = _down(_picture(rng, cv))
    if rng.random() < 0.7:
        other, what = _down(_shading(rng, cv)), "shading"  # albedo x illumination
    else:
        other, what = _down(_texture(rng, cv)), "pattern"
    p0 = _div255(albedo.astype(np.int32) * other)
    return p0, albedo, other, f"left is the middle image multiplied by the right {what}", {}


def _screen(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    base = _down(_picture(rng, cv))
    other, what = (_down(_lightmap(rng, cv)), "light") if rng.random() < 0.6 else (_down(_picture(rng, cv)), "image")
    p0 = 255 - _div255((255 - base.astype(np.int32)) * (255 - other.astype(np.int32)))
    return p0, base, other, f"left is the middle image screened with the right {what}", {}


def _add(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    base = _down(_picture(rng, cv) * rng.uniform(0.45, 0.85))  # dimmed so the sum rarely clips
    other = _down(_lightmap(rng, cv) * rng.uniform(0.5, 1.0))
    p0 = np.minimum(base.astype(np.int32) + other, 255).astype(np.uint8)
    return p0, base, other, "left is the middle image plus the right light", {}


def _darken(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    # Dark ink on a light ground reads as "drawn onto" the other image.
    first = _shapes_on(rng, cv, _colour(rng, "near_white")) if rng.random() < 0.6 else _picture(rng, cv)
    a, b = _down(first), _down(_picture(rng, cv))
    return np.minimum(a, b), a, b, "left keeps the darker of the middle and right images at each pixel", {}


def _lighten(rng: np.random.Generator, size: int) -> Panels:
    cv = _square(size)
    first = _shapes_on(rng, cv, _colour(rng, "dark")) if rng.random() < 0.6 else _picture(rng, cv)
    a, b = _down(first), _down(_picture(rng, cv))
    return np.maximum(a, b), a, b, "left keeps the lighter of the middle and right images at each pixel", {}


def _copy(rng: np.random.Generator, size: int) -> Panels:
    img = _down(_picture(rng, _square(size)))
    return img, img.copy(), img.copy(), "all three panels are the same image", {}


def _shift(rng: np.random.Generator, size: int) -> Panels:
    # Crop three windows from one larger picture: panel1 -> panel0 -> panel2 each moves the content
    # by (dy, dx), so panel0 is the midpoint and is fully determined by panels 1 and 2.
    m = size // 4
    dy, dx = 0, 0
    while dy == 0 and dx == 0:
        dy, dx = (int(v) for v in rng.integers(-m, m + 1, 2))
    hb, wb = size + 2 * abs(dy), size + 2 * abs(dx)
    big = _down(_picture(rng, _Canvas(hb * SS, wb * SS, size * SS)))
    oy, ox = 2 * max(dy, 0), 2 * max(dx, 0)
    p1, p0, p2 = (big[oy - k * dy: oy - k * dy + size, ox - k * dx: ox - k * dx + size] for k in range(3))
    words = [f"{abs(dx)} px {'right' if dx > 0 else 'left'}"] if dx else []
    words += [f"{abs(dy)} px {'down' if dy > 0 else 'up'}"] if dy else []
    prompt = f"left is the middle image moved {' and '.join(words)}; right is moved twice as far"
    return p0, p1, p2, prompt, {"move": (dy, dx)}


def _recolour(rng: np.random.Generator, size: int) -> Panels:
    # Same chain as shift: panel0 = T(panel1), panel2 = T(panel0).
    img = _down(_picture(rng, _square(size)))
    op = ("hue", "channels", "invert")[int(_pick_index(rng, (0.45, 0.35, 0.2)))]
    if op == "invert":
        p0 = 255 - img
        return p0, img, 255 - p0, "left is the middle image inverted; right inverts it back", {"op": op}
    if op == "channels":
        perm = (1, 2, 0) if rng.random() < 0.5 else (2, 0, 1)
        p0 = img[..., perm]
        return p0, img, p0[..., perm], "left is the middle image with its colour channels cycled; right cycles them again", {"op": op, "perm": perm}
    angle = rng.uniform(30, 90) * (1 if rng.random() < 0.5 else -1)
    matrix = hue_matrix(angle)
    p0 = apply_colour_matrix(img, matrix)
    prompt = "left is the middle image with its hues rotated; right rotates them again"
    return p0, img, apply_colour_matrix(p0, matrix), prompt, {"op": op, "matrix": matrix}


def _flip(rng: np.random.Generator, size: int) -> Panels:
    img = _down(_picture(rng, _square(size)))
    axis = int(rng.integers(2))  # np axis: 1 mirrors left-right, 0 top-bottom
    names = {1: "left to right", 0: "top to bottom"}
    prompt = f"left is the middle image mirrored {names[axis]}; right is it mirrored {names[1 - axis]}"
    return np.flip(img, axis), img, np.flip(img, 1 - axis), prompt, {"axis": axis}


def _rotate90(rng: np.random.Generator, size: int) -> Panels:
    img = _down(_picture(rng, _square(size)))
    k = 1 if rng.random() < 0.5 else -1  # np.rot90 k=1 turns the picture anticlockwise
    p0 = np.rot90(img, k)
    way = "anticlockwise" if k == 1 else "clockwise"
    return p0, img, np.rot90(p0, k), f"left is the middle image turned a quarter turn {way}; right turns it again", {"k": k}


def _cut_out(rng: np.random.Generator, size: int) -> Panels:
    # A layer laid small over a picture (panel0); the same layer cut out, large and centred on
    # white (panel1); the picture (panel2). Splitting panel0 means finding the layer, lifting it
    # out at another scale and filling the picture in under it: what a layer task's decomposition
    # asks, on generic shapes and pictures (never a product or an emblem of a task's world).
    cv = _square(size)
    prem, alpha = _patch_layer(rng, cv)
    scale = rng.uniform(0.3, 0.65)
    reach = 0.42 * scale  # the patch reaches ~0.4 panel widths from its centre
    small = _made_small(rng, cv, prem, alpha, scale, lambda: rng.uniform(reach - 0.45, 0.45 - reach))
    bg = _down(_picture(rng, cv))
    return _cut_out_panels(prem, alpha, small, bg, scale, "left is the middle layer made small and laid over the right background")


def _cut_out_flat(rng: np.random.Generator, size: int) -> Panels:
    # cut_out's plainest case: one flat-coloured shape, made small on a plain face of another
    # colour that stands on a plain field; the same shape large on white; the face and field.
    cv = _square(size)
    kinds = ("polygon", "ellipse", "ring", "rect", "blob")
    alpha = _mask(_shape_mask(rng, cv, centre=(0.5, 0.5), radius=rng.uniform(0.3, 0.4), kinds=kinds))
    prem = _colour(rng) * alpha[..., None]
    face_at = rng.uniform(0.4, 0.6, 2)
    face = _mask(_shape_mask(rng, cv, centre=tuple(face_at), radius=rng.uniform(0.3, 0.4), kinds=("rect", "ellipse", "polygon")))
    bg = _down(_paint(_flat(rng, cv), face, _colour(rng)))
    scale = rng.uniform(0.2, 0.45)
    at = iter(face_at - 0.5 + rng.uniform(-0.06, 0.06, 2))
    small = _made_small(rng, cv, prem, alpha, scale, lambda: next(at))
    return _cut_out_panels(prem, alpha, small, bg, scale, "left is the middle shape made small and laid on the right picture")


def _made_small(rng: np.random.Generator, cv: _Canvas, prem: np.ndarray, alpha: np.ndarray, scale: float,
                offset: Callable[[], float]) -> np.ndarray:
    """The centred layer (premultiplied, with alpha) at `scale`, turned up to 20 degrees, its
    centre moved by offset() panel widths across, then down: [h, w, 4] at SS x."""
    t = math.radians(rng.uniform(-20, 20))
    inv = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) / scale
    dx, dy = (offset() * cv.unit for _ in range(2))
    x, y = _pixel_grid(cv)
    cx, cy = (cv.w - 1) / 2, (cv.h - 1) / 2
    ox, oy = x - cx - dx, y - cy - dy
    return _remap(np.dstack([prem, alpha]), cx + inv[0, 0] * ox + inv[0, 1] * oy, cy + inv[1, 0] * ox + inv[1, 1] * oy)


def _cut_out_panels(prem: np.ndarray, alpha: np.ndarray, small: np.ndarray, bg: np.ndarray, scale: float,
                    prompt: str) -> Panels:
    p_big, a_big = _down_layer(prem, alpha)
    p_small, a_small = _down_layer(small[..., :3], small[..., 3])
    size = bg.shape[0]
    return (_over(p_small, a_small, bg), _over(p_big, a_big, _white(size)), bg, prompt,
            {"alpha": a_small, "layer_alpha": a_big, "scale": scale})


_BUILDERS: dict[str, Callable[[np.random.Generator, int], Panels]] = {
    "alpha_over": _alpha_over, "multiply": _multiply, "screen": _screen, "add": _add,
    "darken": _darken, "lighten": _lighten, "warp_blend": _warp_blend, "copy": _copy,
    "shift": _shift, "recolour": _recolour, "flip": _flip, "rotate90": _rotate90,
    "cut_out": _cut_out, "cut_out_flat": _cut_out_flat,
}
assert tuple(_BUILDERS) == RELATIONS + NAMED_RELATIONS


def hue_matrix(degrees: float) -> np.ndarray:
    """3x3 rotation about the grey axis (Rodrigues): turns hues, keeps greys grey."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    return c * np.eye(3) + s * cross + (1 - c) * np.full((3, 3), 1 / 3)


def apply_colour_matrix(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 RGB through a 3x3 matrix, rounded and clipped. Written as per-channel sums (not a
    BLAS matmul) so the result is bit-identical on every call."""
    x = img.astype(np.float64)
    out = [matrix[c, 0] * x[..., 0] + matrix[c, 1] * x[..., 1] + matrix[c, 2] * x[..., 2] for c in range(3)]
    return np.clip(np.rint(np.stack(out, -1)), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# uint8 compositing: the exact arithmetic behind the relations
# ----------------------------------------------------------------------------------------------

def _div255(x: np.ndarray) -> np.ndarray:
    """round(x / 255) for non-negative ints (255 is odd, so there are no ties)."""
    return ((x + 127) // 255).astype(np.uint8)


def _over(prem: np.ndarray, alpha: np.ndarray, under: np.ndarray) -> np.ndarray:
    """Premultiplied `over`: prem + under * (1 - alpha). alpha 0 leaves `under` untouched exactly;
    alpha 255 gives `prem` exactly. prem <= alpha keeps the sum within 255."""
    return (prem + _div255(under.astype(np.int32) * (255 - alpha.astype(np.int32))[..., None])).astype(np.uint8)


def _white(size: int) -> np.ndarray:
    return np.full((size, size, 3), 255, np.uint8)


# ----------------------------------------------------------------------------------------------
# Canvases and resampling. Content is float32 in [0, 1] on a canvas of SS x pixels.
# ----------------------------------------------------------------------------------------------

class _Canvas(NamedTuple):
    h: int  # pixels (supersampled)
    w: int
    unit: int  # pixels per panel width: every length in the content is in these units

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        return _grid(self.h, self.w, self.unit)


def _square(size: int) -> _Canvas:
    return _Canvas(size * SS, size * SS, size * SS)


@lru_cache(maxsize=16)
def _grid(h: int, w: int, unit: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in panel units (cached: many textures share one canvas)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs, ys = (xs + 0.5) / unit, (ys + 0.5) / unit
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)


def _down(x: np.ndarray) -> np.ndarray:
    """SS x float canvas -> final uint8 pixels (LANCZOS: anti-aliased edges, smooth gradients)."""
    img = Image.fromarray(_to_u8(x), "RGB" if x.ndim == 3 else "L")
    return np.asarray(img.resize((img.width // SS, img.height // SS), Image.LANCZOS))


def _down_layer(prem: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Downsample a premultiplied layer; clamp colour to alpha (LANCZOS can ring past it)."""
    a = _down(alpha)
    return np.minimum(_down(prem), a[..., None]), a


def _remap(img: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Bilinear sample img (h, w, c) at source pixel coords (sx, sy); outside the image is 0,
    i.e. transparent for a premultiplied layer."""
    h, w = img.shape[:2]
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)))
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    # +1 for the pad; clipping both corners into the zero border makes far-outside samples 0.
    xa, xb = (np.clip(x0 + d, 0, w + 1).astype(np.intp) for d in (1, 2))
    ya, yb = (np.clip(y0 + d, 0, h + 1).astype(np.intp) for d in (1, 2))
    top = pad[ya, xa] * (1 - fx) + pad[ya, xb] * fx
    bottom = pad[yb, xa] * (1 - fx) + pad[yb, xb] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Warps: each returns, for every output pixel, the source pixel to sample (inverse mapping)
# ----------------------------------------------------------------------------------------------

def _pixel_grid(cv: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = cv.grid()
    return xs * cv.unit - 0.5, ys * cv.unit - 0.5


def _affine_warp(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    t = math.radians(rng.uniform(-35, 35))
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    shear = np.array([[1, rng.uniform(-0.3, 0.3)], [0, 1]])
    fwd = rot @ shear @ np.diag(rng.uniform(0.6, 1.15, 2))
    inv = np.linalg.inv(fwd)
    x, y = _pixel_grid(cv)
    cx, cy = (cv.w - 1) / 2, (cv.h - 1) / 2
    ox, oy = x - cx - rng.uniform(-0.12, 0.12) * cv.unit, y - cy - rng.uniform(-0.12, 0.12) * cv.unit
    return cx + inv[0, 0] * ox + inv[0, 1] * oy, cy + inv[1, 0] * ox + inv[1, 1] * oy


def _perspective_warp(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    # The layer's corners land on a jittered quad; solve the homography quad -> layer corners.
    src = np.array([[0, 0], [cv.w, 0], [cv.w, cv.h], [0, cv.h]], float)
    dst = src + rng.uniform(-0.22, 0.22, (4, 2)) * cv.unit
    rows, rhs = [], []
    for (u, v), (x, y) in zip(src, dst):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    h = np.linalg.solve(np.array(rows), np.array(rhs))
    x, y = _pixel_grid(cv)
    den = h[6] * x + h[7] * y + 1
    return (h[0] * x + h[1] * y + h[2]) / den, (h[3] * x + h[4] * y + h[5]) / den


def _wave_warp(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pixel_grid(cv)
    u = cv.unit
    ax, ay = rng.uniform(0.015, 0.06, 2) * u
    lx, ly = rng.uniform(0.3, 0.9, 2) * u
    px, py = rng.uniform(0, 2 * math.pi, 2)
    return x + ax * np.sin(2 * math.pi * y / lx + px), y + ay * np.sin(2 * math.pi * x / ly + py)


_WARPS = {"affine": _affine_warp, "perspective": _perspective_warp, "wave": _wave_warp}


# ----------------------------------------------------------------------------------------------
# Colours: wide variety (saturated, pastel, dark, near-white, muted, grey), in related palettes
# ----------------------------------------------------------------------------------------------

# style -> ((saturation range), (value range)) in HSV
_STYLES = {
    "saturated": ((0.65, 1.0), (0.6, 1.0)),
    "pastel": ((0.12, 0.4), (0.85, 1.0)),
    "dark": ((0.2, 0.9), (0.04, 0.3)),
    "near_white": ((0.0, 0.07), (0.9, 1.0)),
    "muted": ((0.1, 0.45), (0.3, 0.75)),
    "grey": ((0.0, 0.0), (0.0, 1.0)),
}
_STYLE_NAMES = tuple(_STYLES)
_STYLE_WEIGHTS = (0.3, 0.2, 0.15, 0.1, 0.17, 0.08)


def _pick_index(rng: np.random.Generator, weights: Sequence[float]) -> int:
    cum = np.cumsum(weights)
    return int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))


def _pick(rng: np.random.Generator, options: Sequence, weights: Sequence[float]):
    return options[_pick_index(rng, weights)]


def _colour(rng: np.random.Generator, style: str | None = None, hue: float | None = None) -> np.ndarray:
    style = style or _pick(rng, _STYLE_NAMES, _STYLE_WEIGHTS)
    (s0, s1), (v0, v1) = _STYLES[style]
    h = rng.random() if hue is None else hue % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(s0, s1), rng.uniform(v0, v1)), np.float32)


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """k colours that belong together: one style around a hue scheme, with the odd contrasting
    accent; neighbours are kept apart so patterns stay visible."""
    style = _pick(rng, _STYLE_NAMES, _STYLE_WEIGHTS)
    hue0, scheme = rng.random(), int(rng.integers(3))
    step = rng.uniform(0.04, 0.12)
    cols: list[np.ndarray] = []
    for i in range(k):
        if scheme == 0:  # analogous
            hue = hue0 + step * i
        elif scheme == 1:  # complementary pairs
            hue = hue0 + 0.5 * (i % 2) + step * (i // 2)
        else:
            hue = rng.random()
        for _ in range(4):  # resample a colour too close to its predecessor
            c = _colour(rng, style if rng.random() < 0.7 else None, hue)
            if not cols or np.abs(c - cols[-1]).max() > 0.15:
                break
        cols.append(c)
    return np.stack(cols)


def _ramp(t: np.ndarray, pal: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] through evenly spaced colour stops."""
    stops = np.linspace(0, 1, len(pal))
    return np.stack([np.interp(t, stops, pal[:, c]).astype(np.float32) for c in range(3)], -1)


def _flat(rng: np.random.Generator, cv: _Canvas, colour: np.ndarray | None = None) -> np.ndarray:
    out = np.empty((cv.h, cv.w, 3), np.float32)
    out[:] = _colour(rng) if colour is None else colour
    return out


# ----------------------------------------------------------------------------------------------
# Textures: stripes, checkers, noise, gradients, dots, plaid / weave
# ----------------------------------------------------------------------------------------------

def _texture(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    fn = _pick(rng, (_stripes, _checkers, _noise, _gradient, _dots, _plaid), (3, 2, 3, 2, 2, 2))
    return fn(rng, cv)


def _along(cv: _Canvas, angle: float) -> np.ndarray:
    xs, ys = cv.grid()
    return xs * math.cos(angle) + ys * math.sin(angle)


def _rotated(cv: _Canvas, angle: float) -> tuple[np.ndarray, np.ndarray]:
    return _along(cv, angle), _along(cv, angle + math.pi / 2)


def _angle(rng: np.random.Generator) -> float:
    # Axis-aligned patterns are common in real images; keep them frequent.
    r = rng.random()
    return 0.0 if r < 0.3 else math.pi / 2 if r < 0.45 else math.pi / 4 if r < 0.55 else rng.uniform(0, math.pi)


def _stripes(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    t = _along(cv, _angle(rng)) / rng.uniform(0.04, 0.3) + rng.random()
    pal = _palette(rng, int(rng.integers(2, 5)))
    if rng.random() < 0.25:  # soft sine bands
        m = (0.5 + 0.5 * np.sin(2 * math.pi * t))[..., None]
        return pal[0] + (pal[1] - pal[0]) * m
    if len(pal) == 2:
        return pal[((t % 1.0) < rng.uniform(0.2, 0.8)).astype(np.intp)]
    return pal[np.floor(t).astype(np.intp) % len(pal)]


def _checkers(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    u, v = _rotated(cv, 0.0 if rng.random() < 0.6 else _angle(rng))
    p = rng.uniform(0.05, 0.3)
    parity = (np.floor(u / p) + np.floor(v / p)).astype(np.intp) % 2
    return _palette(rng, 2)[parity]


def _fbm(rng: np.random.Generator, cv: _Canvas, cells: float, octaves: int) -> np.ndarray:
    """Value noise: random grids upsampled bicubically, summed over octaves; normalised to [0, 1]."""
    out = np.zeros((cv.h, cv.w), np.float32)
    amp = 1.0
    for o in range(octaves):
        c = cells * 2 ** o
        if c * SS * 4 > cv.unit:  # finer than ~4 final pixels a cell: just speckle
            break
        gh, gw = max(2, math.ceil(c * cv.h / cv.unit) + 1), max(2, math.ceil(c * cv.w / cv.unit) + 1)
        grid = rng.random((gh, gw), dtype=np.float32)
        out += amp * np.asarray(Image.fromarray(grid, "F").resize((cv.w, cv.h), Image.BICUBIC))
        amp *= 0.5
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def _noise(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    n = _fbm(rng, cv, rng.uniform(1.5, 8), int(rng.integers(1, 5)))
    pal = _palette(rng, int(rng.integers(2, 5)))
    if rng.random() < 0.4:  # posterised: camouflage-like flat patches with crisp edges
        return pal[np.minimum((n * len(pal)).astype(np.intp), len(pal) - 1)]
    return _ramp(n, pal)


def _gradient(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    pal = _palette(rng, int(rng.integers(2, 4)))
    if rng.random() < 0.55:
        t = _along(cv, rng.uniform(0, 2 * math.pi))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    else:  # radial
        xs, ys = cv.grid()
        cx, cy = rng.uniform(0, cv.w / cv.unit), rng.uniform(0, cv.h / cv.unit)
        t = np.minimum(np.hypot(xs - cx, ys - cy) / rng.uniform(0.3, 1.2), 1.0)
    return _ramp(t ** rng.uniform(0.6, 1.6), pal)


def _dots(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    u, v = _rotated(cv, 0.0 if rng.random() < 0.6 else _angle(rng))
    p = rng.uniform(0.06, 0.25)
    u, v = u / p, v / p
    if rng.random() < 0.5:  # staggered rows
        u = u + 0.5 * (np.floor(v) % 2)
    du, dv = u % 1.0 - 0.5, v % 1.0 - 0.5
    inside = (du * du + dv * dv) < rng.uniform(0.15, 0.45) ** 2
    return _palette(rng, 2)[inside.astype(np.intp)]


def _plaid(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    pal = _palette(rng, int(rng.integers(2, 5)))
    p = rng.uniform(0.12, 0.45)
    widths = np.cumsum(rng.dirichlet(np.ones(int(rng.integers(3, 7)))))
    colour_of = rng.integers(len(pal), size=len(widths))  # the "sett": which colour each band is
    xs, ys = cv.grid()
    bx = colour_of[np.minimum(np.searchsorted(widths, (xs / p) % 1.0), len(widths) - 1)]
    by = colour_of[np.minimum(np.searchsorted(widths, (ys / p) % 1.0), len(widths) - 1)]
    if rng.random() < 0.5:  # woven: warp and weft threads alternate over/under (twill)
        t = rng.uniform(0.012, 0.03)
        over = ((np.floor(xs / t) + np.floor(ys / t)) % 4) < 2
        return np.where(over[..., None], pal[bx], pal[by])
    return 0.5 * (pal[bx] + pal[by])  # tartan: crossing bands mix


# ----------------------------------------------------------------------------------------------
# Shapes: polygons, ellipses, blobs, rings, lines, bezier strokes, rectangles (as SS x masks)
# ----------------------------------------------------------------------------------------------

_SHAPES = ("polygon", "ellipse", "blob", "ring", "line", "stroke", "rect")
_SHAPE_WEIGHTS = (2, 2, 2, 1, 1, 1.5, 2)


def _shape_mask(rng: np.random.Generator, cv: _Canvas, centre: tuple[float, float] | None = None,
                radius: float | None = None, kinds: Sequence[str] = _SHAPES) -> Image.Image:
    """One random shape as an 'L' mask; centre and radius in panel units."""
    u = cv.unit
    kind = _pick(rng, kinds, [_SHAPE_WEIGHTS[_SHAPES.index(k)] for k in kinds])
    # Mostly well inside the canvas; shapes cut by the border still happen through their size.
    cx, cy = centre or (rng.uniform(0.08, cv.w / u - 0.08), rng.uniform(0.08, cv.h / u - 0.08))
    r = (radius or rng.uniform(0.07, 0.35)) * u
    cx, cy = cx * u, cy * u
    img = Image.new("L", (cv.w, cv.h), 0)
    draw = ImageDraw.Draw(img)
    rot = rng.uniform(0, 2 * math.pi)

    def outline(radii: np.ndarray, aspect: float = 1.0, angles: np.ndarray | None = None) -> list[tuple[float, float]]:
        a = np.linspace(0, 2 * math.pi, len(radii), endpoint=False) if angles is None else angles
        x, y = radii * np.cos(a), radii * np.sin(a) * aspect
        return list(zip(cx + x * math.cos(rot) - y * math.sin(rot), cy + x * math.sin(rot) + y * math.cos(rot)))

    if kind == "polygon":
        n = int(rng.integers(3, 9))
        if rng.random() < 0.5:  # regular
            draw.polygon(outline(np.full(n, r)), fill=255)
        else:
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            draw.polygon(outline(r * rng.uniform(0.45, 1.0, n), angles=angles), fill=255)
    elif kind == "ellipse":
        draw.polygon(outline(np.full(48, r), rng.uniform(0.35, 1.0)), fill=255)
    elif kind == "blob":
        a = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        wobble = sum(rng.uniform(0, 0.3) / k * np.cos(k * a + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4, 5))
        draw.polygon(outline(r * (1 + wobble), rng.uniform(0.6, 1.0)), fill=255)
    elif kind == "ring":
        aspect = rng.uniform(0.5, 1.0)
        draw.polygon(outline(np.full(48, r), aspect), fill=255)
        draw.polygon(outline(np.full(48, r * rng.uniform(0.45, 0.85)), aspect), fill=0)
    elif kind == "rect":
        if rng.random() < 0.3:
            w2, h2 = r * rng.uniform(0.4, 1.0), r * rng.uniform(0.4, 1.0)
            draw.rounded_rectangle((cx - w2, cy - h2, cx + w2, cy + h2), radius=r * rng.uniform(0.05, 0.4), fill=255)
        else:
            half = math.atan(rng.uniform(0.3, 1.0))  # corner angle sets the aspect ratio
            draw.polygon(outline(np.full(4, r), angles=np.array([half, math.pi - half, math.pi + half, -half])), fill=255)
    else:  # line / stroke: a straight bar, or a cubic bezier with round caps
        width = max(1, int(rng.uniform(0.012, 0.07) * u))
        if kind == "line":
            pts = outline(np.array([r, r]), angles=np.array([0.0, math.pi]))
        else:
            ctrl = np.array([cx, cy]) + rng.uniform(-1.3, 1.3, (4, 2)) * r
            t = np.linspace(0, 1, 32)[:, None]
            curve = ((1 - t) ** 3 * ctrl[0] + 3 * (1 - t) ** 2 * t * ctrl[1]
                     + 3 * (1 - t) * t ** 2 * ctrl[2] + t ** 3 * ctrl[3])
            pts = [tuple(p) for p in curve]
        draw.line(pts, fill=255, width=width, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return img


def _mask(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.float32) * (1 / 255)


def _fill(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """What a shape is filled with: mostly a flat colour (big flat regions), else a pattern."""
    r = rng.random()
    if r < 0.65:
        return _colour(rng)
    return _texture(rng, cv) if r < 0.85 else _gradient(rng, cv)


def _paint(canvas: np.ndarray, m: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return canvas + (fill - canvas) * m[..., None]


def _shifted(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """m moved by (dy, dx) pixels, zero-filled (no wrap-around)."""
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0): h + min(dy, 0), max(dx, 0): w + min(dx, 0)] = m[max(-dy, 0): h - max(dy, 0), max(-dx, 0): w - max(dx, 0)]
    return out


def _shapes_on(rng: np.random.Generator, cv: _Canvas, colour: np.ndarray | None = None) -> np.ndarray:
    """A few shapes on a flat colour field."""
    canvas = _flat(rng, cv, colour)
    for _ in range(int(rng.integers(1, 6))):
        canvas = _paint(canvas, _mask(_shape_mask(rng, cv)), _fill(rng, cv))
    return canvas


def _scene(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """Several shapes over a textured / gradient / flat ground, some with soft drop shadows,
    sometimes under an illumination map."""
    canvas = _pick(rng, (_texture, _gradient, _flat), (2, 1, 1))(rng, cv)
    for _ in range(int(rng.integers(2, 8))):
        img = _shape_mask(rng, cv)
        if rng.random() < 0.25:
            off = max(1, int(rng.uniform(0.01, 0.04) * cv.unit))
            shadow = _mask(img.filter(ImageFilter.GaussianBlur(off)))
            canvas = canvas * (1 - rng.uniform(0.25, 0.6) * _shifted(shadow, off, off))[..., None]
        canvas = _paint(canvas, _mask(img), _fill(rng, cv))
    if rng.random() < 0.3:
        canvas = canvas * _shading(rng, cv)
    return canvas


# ----------------------------------------------------------------------------------------------
# Light: smooth illumination / shading maps (for multiply) and glow maps (for screen / add)
# ----------------------------------------------------------------------------------------------

def _shading(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """Smooth illumination in [lo, 1]: a linear falloff, a spot light, soft noise, or the
    Lambertian shading of a bumpy height field; grey or tinted by a pale light colour."""
    kind = int(rng.integers(4))
    xs, ys = cv.grid()
    if kind == 0:
        t = _along(cv, rng.uniform(0, 2 * math.pi))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == 1:
        d2 = (xs - rng.uniform(0, cv.w / cv.unit)) ** 2 + (ys - rng.uniform(0, cv.h / cv.unit)) ** 2
        t = 1 / (1 + d2 / rng.uniform(0.05, 0.5) ** 2)
    elif kind == 2:
        t = _fbm(rng, cv, rng.uniform(1, 3), int(rng.integers(1, 3)))
    else:
        height = _fbm(rng, cv, rng.uniform(1.5, 5), int(rng.integers(1, 4)))
        gy, gx = np.gradient(height * (cv.unit * rng.uniform(0.03, 0.12)))
        azimuth = rng.uniform(0, 2 * math.pi)
        light = np.array([math.cos(azimuth), math.sin(azimuth), rng.uniform(0.6, 1.5)])
        light /= np.linalg.norm(light)
        t = np.clip((-gx * light[0] - gy * light[1] + light[2]) / np.sqrt(gx * gx + gy * gy + 1), 0, 1)
    lo = rng.uniform(0.05, 0.6)
    s = (lo + (1 - lo) * t).astype(np.float32)[..., None]
    tint = _colour(rng, "pastel") if rng.random() < 0.4 else np.ones(3, np.float32)
    return s * tint


def _lightmap(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """A dark field with soft coloured glows and the odd beam (additive light)."""
    xs, ys = cv.grid()
    out = _flat(rng, cv, _colour(rng, "dark") * rng.uniform(0.0, 1.0))
    for _ in range(int(rng.integers(1, 5))):
        c = _colour(rng, "saturated" if rng.random() < 0.6 else "pastel") * rng.uniform(0.4, 1.0)
        if rng.random() < 0.75:
            d2 = (xs - rng.uniform(0, cv.w / cv.unit)) ** 2 + (ys - rng.uniform(0, cv.h / cv.unit)) ** 2
            g = np.exp(-d2 / rng.uniform(0.01, 0.15))
        else:
            t = _along(cv, rng.uniform(0, math.pi)) - rng.uniform(0, 1.4)
            g = np.exp(-t * t / rng.uniform(0.001, 0.02))
        out = out + c * g[..., None]
    return np.minimum(out, 1.0)


# ----------------------------------------------------------------------------------------------
# Layers (premultiplied colour + alpha) and whole pictures
# ----------------------------------------------------------------------------------------------

def _layer(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """A layer with soft alpha: a cloud of noise, or a few shapes with per-shape opacity and
    feathered edges. Returned premultiplied so resampling never bleeds hidden colour."""
    if rng.random() < 0.2:
        n = _fbm(rng, cv, rng.uniform(1.5, 5), int(rng.integers(1, 4)))
        lo = rng.uniform(0.4, 0.65)
        a = np.clip((n - lo) / rng.uniform(0.05, 0.3), 0, 1)
        a = a * a * (3 - 2 * a)  # smoothstep
        return _fill(rng, cv) * a[..., None], a
    prem = np.zeros((cv.h, cv.w, 3), np.float32)
    alpha = np.zeros((cv.h, cv.w), np.float32)
    n = int(rng.integers(1, 5))
    for i in range(8):
        if i >= n and alpha.mean() > 0.04:  # a lone hairline is too little layer to learn from
            break
        img = _shape_mask(rng, cv)
        if rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.005, 0.03) * cv.unit))
        a = _mask(img) * (1.0 if rng.random() < 0.6 else rng.uniform(0.35, 0.9))
        prem = prem * (1 - a[..., None]) + _fill(rng, cv) * a[..., None]
        alpha = alpha * (1 - a) + a
    return prem, alpha


def _patch_layer(rng: np.random.Generator, cv: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """A centred layer for warping: a patterned patch, or a tight group of shapes."""
    if rng.random() < 0.5:
        img = _shape_mask(rng, cv, centre=(0.5, 0.5), radius=rng.uniform(0.22, 0.38),
                          kinds=("rect", "ellipse", "blob", "polygon", "ring"))
        a = _mask(img)
        return _texture(rng, cv) * a[..., None], a
    prem = np.zeros((cv.h, cv.w, 3), np.float32)
    alpha = np.zeros((cv.h, cv.w), np.float32)
    n = int(rng.integers(2, 6))
    for i in range(8):
        if i >= n and alpha.mean() > 0.04:
            break
        centre = tuple(0.5 + rng.uniform(-0.2, 0.2, 2))
        a = _mask(_shape_mask(rng, cv, centre=centre, radius=rng.uniform(0.06, 0.2)))
        prem = prem * (1 - a[..., None]) + _fill(rng, cv) * a[..., None]
        alpha = alpha * (1 - a) + a
    return prem, alpha


def _composite(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    prem, alpha = _layer(rng, cv)
    return prem + _scene(rng, cv) * (1 - alpha[..., None])


_PICTURES = (_flat, _gradient, _shading, _texture, _shapes_on, _scene, _composite)
_PICTURE_WEIGHTS = (0.08, 0.08, 0.06, 0.25, 0.2, 0.25, 0.08)


def _picture(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """One picture from any content family: what make_image returns and what panels are made of."""
    return _pick(rng, _PICTURES, _PICTURE_WEIGHTS)(rng, cv)
