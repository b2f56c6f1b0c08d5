"""The intrinsic task's metrics and trivial baseline.

The standard metrics: scale-invariant MSE and local MSE (LMSE, Grosse et al. 2009: windows of a
quarter of the side, half-overlapping, each scale-invariant, summed and normalised by the truth's
energy), per panel; the trivial baseline: albedo = composite, shading = constant.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from models.domains.base import Layers


def _as_float(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255


def si_mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Scale-invariant MSE: min over a per-channel scale a of mean((a * pred - truth)^2)."""
    p, t = pred.reshape(-1, pred.shape[-1]), truth.reshape(-1, truth.shape[-1])
    a = (p * t).sum(0) / np.maximum((p * p).sum(0), 1e-12)
    return float(((a * p - t) ** 2).mean())


def lmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Local MSE (Grosse et al. 2009): windows of a quarter of the side, half-overlapping; each
    window scale-invariant; the sum of their errors over the sum of the truth's energy in them."""
    size = truth.shape[0]
    k = max(size // 4, 2)
    err = energy = 0.0
    for i in range(0, size - k + 1, k // 2):
        for j in range(0, size - k + 1, k // 2):
            p, t = pred[i:i + k, j:j + k], truth[i:i + k, j:j + k]
            err += si_mse(p, t) * p.shape[0] * p.shape[1]
            energy += float((t ** 2).mean(axis=-1).sum())
    return err / max(energy, 1e-12)


def metrics(predicted: Sequence[Layers], test: Sequence[dict]) -> dict[str, float]:
    """Mean over images of si-MSE and LMSE for albedo and shading (lower is better); `test` items
    carry the ground-truth `panels`."""
    pairs = {"albedo": ([p[0] for p in predicted], [t["panels"][1] for t in test]),
             "shading": ([p[1] for p in predicted], [t["panels"][2] for t in test])}
    out = {}
    for name, (preds, truths) in pairs.items():
        p, t = [_as_float(x) for x in preds], [_as_float(x) for x in truths]
        out[f"{name}_si_mse"] = round(float(np.mean([si_mse(a, b) for a, b in zip(p, t)])), 6)
        out[f"{name}_lmse"] = round(float(np.mean([lmse(a, b) for a, b in zip(p, t)])), 6)
    return out


def baseline(composites: Sequence[Image.Image]) -> list[Layers]:
    """The trivial decomposition: albedo = composite, shading = constant (grey)."""
    return [(c, Image.new("RGB", c.size, (128, 128, 128))) for c in composites]
