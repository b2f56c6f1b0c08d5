"""Its measurement judge: the layers multiply back to the composite, and no panel is blank."""

from __future__ import annotations

import numpy as np
from PIL import Image

from models.domains.overprint.world import PANELS
from models.judge.image_ops import to_float
from models.judge.measure import Checks, MeasureJudge

CHECKS: Checks = {
    "recomposes": [("miss", 0.02, 0.08, "disc x box misses the composite by {v:.3f}")],
    "quality": [(f"{p}_std", 0.04, 0.01, f"{p} panel is blank") for p in PANELS],
}


def measure(composite: Image.Image, disc: Image.Image, box: Image.Image) -> dict[str, float]:
    c, d, b = (to_float(im, 32) for im in (composite, disc, box))
    return {"miss": float(np.abs(d * b - c).max(axis=-1).mean()),
            **{f"{p}_std": float(x.std(axis=(0, 1)).max()) for p, x in zip(PANELS, (c, d, b))}}


class OverprintJudge(MeasureJudge):
    kind = "measure-overprint"
    panels = PANELS
    checks = CHECKS
    measure = staticmethod(measure)
