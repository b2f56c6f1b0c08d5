"""The logo/object task's metrics and trivial baseline: per-layer PSNR and SSIM, and the object's
PSNR inside the logo footprint, where the work is; the baseline: logo = a blank white panel,
object = the composite itself."""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from models.domains.base import Layers
from models.iclora.grid import psnr, to_unit_tensor

WHITE = (255, 255, 255)  # the logo panel's background


def layer_metrics(logos: Sequence[Image.Image], objects: Sequence[Image.Image], truth_logos, truth_objects,
                  footprints) -> dict[str, float]:
    # imported here: torchmetrics takes ~4 s to import, and every process that reads the task registry
    # (the flow, each worker) would pay it, though only evaluation measures SSIM
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    pl, po, tl, to = (to_unit_tensor(x) for x in (logos, objects, truth_logos, truth_objects))
    fp = (to_unit_tensor(footprints) > 0.5).float()
    return {
        "logo_psnr": round(psnr(pl, tl), 3),
        "logo_ssim": round(float(ssim(pl, tl, data_range=1.0)), 4),
        "object_psnr": round(psnr(po, to), 3),
        "object_ssim": round(float(ssim(po, to, data_range=1.0)), 4),
        "object_psnr_footprint": round(psnr(po, to, fp), 3),
    }


def metrics(predicted: Sequence[Layers], test: Sequence[dict]) -> dict[str, float]:
    """`layer_metrics` of predicted (logo, object) pairs against the test items' `panels` and `footprint`."""
    return layer_metrics([p[0] for p in predicted], [p[1] for p in predicted], [t["panels"][1] for t in test],
                         [t["panels"][2] for t in test], [t["footprint"] for t in test])


def baseline(composites: Sequence[Image.Image]) -> list[Layers]:
    """logo = a blank white panel, object = the composite itself."""
    return [(Image.new("RGB", c.size, WHITE), c) for c in composites]
