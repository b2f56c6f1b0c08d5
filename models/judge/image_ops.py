"""Image operations the measurement judges share: float RGB in [0, 1], blurs, masks, gradients
and two measures of panel quality (noise, blur). Every layer task's judge checks
(models/domains/<task>/judge.py) are written with these."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image


def to_float(img: Image.Image, size: int | None = None) -> np.ndarray:
    """RGB PIL -> float64 (size, size, 3) in [0, 1] (box-downsampled when smaller than the image)."""
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BOX)
    return np.asarray(img, dtype=np.float64) / 255.0


def to_image(x: np.ndarray) -> Image.Image:
    """float (H, W, 3), clipped to [0, 1] -> RGB PIL, rounded to nearest: the inverse of `to_float`."""
    return Image.fromarray(np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


def _conv1d(x: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    r = len(k) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    out = np.zeros_like(x)
    for i, w in enumerate(k):
        out += w * np.take(xp, np.arange(i, i + n), axis=axis)
    return out


def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the first two axes (reflect borders)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    return _conv1d(_conv1d(x, k, 0), k, 1)


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)^2 square (separable max)."""
    out = mask.copy()
    for axis in (0, 1):
        m = out.copy()
        for s in range(1, r + 1):
            m |= np.roll(out, s, axis) | np.roll(out, -s, axis)
        out = m
    return out


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    return ~dilate(~mask, r)


def border(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of the outer frame of width w, flattened to (N, C), and the frame's mask."""
    ring = np.zeros(x.shape[:2], dtype=bool)
    ring[:w], ring[-w:], ring[:, :w], ring[:, -w:] = True, True, True, True
    return x[ring], ring


def gradient_magnitude(x: np.ndarray) -> np.ndarray:
    """|gradient| by central differences over the first two axes, the largest over channels (the
    outermost rows and columns, which have no central difference, read 0)."""
    gy = np.zeros_like(x)
    gx = np.zeros_like(x)
    gy[1:-1] = 0.5 * (x[2:] - x[:-2])
    gx[:, 1:-1] = 0.5 * (x[:, 2:] - x[:, :-2])
    return np.sqrt(gy ** 2 + gx ** 2).max(axis=-1)


def noise_level(x: np.ndarray, block: int) -> float:
    """Noise sigma estimate from the flattest blocks: mean |Laplacian| (Immerkaer) in the 10th
    percentile block. Clean renders have smooth backgrounds, so their flattest blocks read ~0."""
    g = x.mean(axis=-1)
    lap = np.abs(g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:] - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1]
                 - 2 * g[1:-1, 2:] + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:])
    h = (lap.shape[0] // block) * block
    blocks = lap[:h, :h].reshape(h // block, block, h // block, block).mean(axis=(1, 3))
    return float(np.percentile(blocks, 10) * math.sqrt(math.pi / 2) / 6.0)


def speckle(x: np.ndarray, sigma: float, width: int) -> float:
    """Median RMS (over channels) of x minus its Gaussian blur at `sigma`, over the panel's frame
    (`border` of `width`): a render keeps its background smooth there, and so does its decode, while
    a decode of noisy latents covers it with blotches a few pixels wide, which the pixel-scale
    Laplacian of `noise_level` barely sees (docs/research-log.md, "Noise the codec removes")."""
    _, ring = border(x, width)
    residual = np.sqrt(((x - gaussian(x, sigma)) ** 2).mean(axis=-1))
    return float(np.median(residual[ring]))


def reblur_ratio(x: np.ndarray, sigma: float) -> float:
    """Top gradient magnitudes after / before a Gaussian re-blur: a sharp image loses much of its
    edge strength (ratio ~0.5), an already blurred one little (ratio -> 1). Contrast-free."""
    def top(img):
        m = gradient_magnitude(img).ravel()
        k = max(8, m.size // 100)
        return float(np.partition(m, -k)[-k:].mean())

    before = top(x)
    if before < 1e-3:
        return math.nan  # flat: no edges to judge
    return top(gaussian(x, sigma)) / before
