"""Its metrics (mean squared error per layer) and trivial baseline (disc = the composite, box = white paper)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def _mse(a: Image.Image, b: Image.Image) -> float:
    return float((((np.asarray(a, np.float64) - np.asarray(b, np.float64)) / 255) ** 2).mean())


def metrics(predicted, test) -> dict[str, float]:
    return {f"{name}_mse": round(float(np.mean([_mse(p[k], t["panels"][k + 1]) for p, t in zip(predicted, test)])), 6)
            for k, name in enumerate(("disc", "box"))}


def baseline(composites):
    return [(c, Image.new("RGB", c.size, (255, 255, 255))) for c in composites]
