"""Decomposition quality on the held-out test split, beside the trivial baseline and the codec.

For each test composite the adapter predicts (logo, object); we report per-layer PSNR and SSIM
against ground truth, and the object's PSNR inside the logo footprint, where the work is (most
object pixels already equal the composite). Side by side:
  - baseline: logo = blank white panel, object = the composite itself;
  - baseline_codec: the same through the VAE and back (the model's panels are decodes too, so
    this is the like-for-like floor);
  - codec: the ground truth through the VAE and back, the ceiling of any latent model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from models.iclora.backbone import Backbone
from models.iclora.codec import psnr
from models.iclora.fill import decode_latents, encode_images
from models.iclora.grid import grid_tensor, split_grid_tensor, to_pil
from models.iclora.sample import Sampler, blank


def to_unit_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL -> [B, C, H, W] in [0, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr if arr.ndim == 4 else arr[..., None]).permute(0, 3, 1, 2)


def layer_metrics(
    logos: Sequence[Image.Image], objects: Sequence[Image.Image], truth_logos, truth_objects, footprints
) -> dict[str, float]:
    pl, po, tl, to = (to_unit_tensor(x) for x in (logos, objects, truth_logos, truth_objects))
    fp = (to_unit_tensor(footprints) > 0.5).float()
    return {
        "logo_psnr": round(psnr(pl, tl), 3),
        "logo_ssim": round(float(ssim(pl, tl, data_range=1.0)), 4),
        "object_psnr": round(psnr(po, to), 3),
        "object_ssim": round(float(ssim(po, to, data_range=1.0)), 4),
        "object_psnr_footprint": round(psnr(po, to, fp), 3),
    }


@torch.no_grad()
def codec_roundtrip(backbone: Backbone, triplets) -> list[tuple[Image.Image, Image.Image, Image.Image]]:
    grid = grid_tensor(list(triplets))
    recon = split_grid_tensor(decode_latents(backbone, encode_images(backbone, grid)).float().cpu())
    return list(zip(*(to_pil(p) for p in recon)))


def evaluate_decomposition(sampler: Sampler, test: Sequence[dict], seeds: Sequence[int], predicted=None) -> dict:
    """`test` items carry PIL `composite`, `logo`, `object`, `footprint` (ground truth).
    Pass a list as `predicted` to receive the (logo, object) predictions too."""
    composites = [t["composite"] for t in test]
    truth = ([t["logo"] for t in test], [t["object"] for t in test], [t["footprint"] for t in test])
    made = sampler.decompose(composites, seeds)
    if predicted is not None:
        predicted.extend(made)
    predicted = made
    s = composites[0].size[0]
    codec = codec_roundtrip(sampler.backbone, [(t["composite"], t["logo"], t["object"]) for t in test])
    baseline_codec = codec_roundtrip(sampler.backbone, [(c, blank(s), c) for c in composites])
    return {
        "n": len(test),
        "model": layer_metrics([p[0] for p in predicted], [p[1] for p in predicted], *truth),
        "baseline": layer_metrics([blank(s)] * len(test), composites, *truth),
        "baseline_codec": layer_metrics([b[1] for b in baseline_codec], [b[2] for b in baseline_codec], *truth),
        "codec": layer_metrics([c[1] for c in codec], [c[2] for c in codec], *truth),
    }


def decomposition_sheet(test: Sequence[dict], predicted, n: int = 8):
    """Rows of `composite | true logo | true object` beside `composite | predicted logo | predicted object`."""
    from models.loop.viz import contact_sheet

    cells, labels = [], []
    for t, (logo, obj) in list(zip(test, predicted))[:n]:
        cells += [(t["composite"], t["logo"], t["object"]), (t["composite"], logo, obj)]
        labels += ["ground truth", "prediction"]
    return contact_sheet(cells, labels, columns=2, scale=3)
