"""Decomposition quality on the held-out test split, beside the trivial baseline and the codec.

For each test composite the adapter predicts both layers; the layer task (models/domains/<task>/metrics.py)
measures them against ground truth (logo/object: per-layer PSNR and SSIM, and the object's PSNR
inside the logo footprint, where the work is; intrinsic: si-MSE and LMSE). Side by side:
  - baseline: the task's trivial decomposition (logo = blank panel, object = the composite;
    albedo = the composite, shading = constant);
  - baseline_codec: the same through the VAE and back (the model's panels are decodes too, so
    this is the like-for-like floor);
  - baseline_nn: what memorising the seeds gives: for each test composite, the layers of the seed
    triplet whose composite is nearest (models/loop/evaluate.nearest_seed);
  - codec: the ground truth through the VAE and back, the ceiling of any latent model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from models.iclora.backbone import Backbone
from models.iclora.fill import decode_latents, encode_images
from models.iclora.grid import grid_tensor, split_grid_tensor, to_pil, to_unit_tensor
from models.iclora.sample import Sampler
from models.loop.dataio import read_triplets
from storage.hashing import derive_seed
from storage.store import Store


@torch.no_grad()
def codec_roundtrip(backbone: Backbone, triplets, latent_noise=None) -> list[tuple[Image.Image, Image.Image, Image.Image]]:
    """Triplets through the VAE and back, as one grid each. `latent_noise` (optional, one entry per
    triplet: None, or (panel indices, t, seed)) noises those panels' latents before decoding, as a
    sample stopped short of the end is noised: z <- (1 - t) z + t eps. That is where a decode
    carries noise; pixel noise put in before the encoder, the codec mostly removes."""
    grid = grid_tensor(list(triplets))
    z = encode_images(backbone, grid)  # [B, C, h, 3h]: the panels side by side
    w = z.shape[-1] // 3
    for b, spec in enumerate(latent_noise or ()):
        if spec is not None:
            panels, t, seed = spec
            g = torch.Generator().manual_seed(seed)
            for k in panels:
                panel = z[b, :, :, k * w:(k + 1) * w]  # a view: noised in place
                panel.mul_(1 - t).add_(t * torch.randn(panel.shape, generator=g).to(panel))
    recon = split_grid_tensor(decode_latents(backbone, z).float().cpu())
    return list(zip(*(to_pil(p) for p in recon)))


NN_SIDE = 32  # the nearest seed is searched on thumbnails: cheap at any panel size, and what "near" means


def nearest_seed(composites: Sequence[Image.Image], seed_triplets: Sequence[dict]) -> list[tuple]:
    """For each composite, the layers (panels after the composite) of the seed triplet whose
    composite is nearest in mean squared error on NN_SIDE-pixel thumbnails."""
    def thumbs(images):
        return to_unit_tensor([im.convert("RGB").resize((NN_SIDE, NN_SIDE), Image.BILINEAR) for im in images]).flatten(1)

    nearest = torch.cdist(thumbs(composites), thumbs([t["panels"][0] for t in seed_triplets])).argmin(1)  # [B]
    return [tuple(seed_triplets[i]["panels"][1:]) for i in nearest.tolist()]


def evaluate_decomposition(sampler: Sampler, test: Sequence[dict], seeds: Sequence[int], domain,
                           predicted=None, seed_triplets: Sequence[dict] = ()) -> dict:
    """`test` items carry the PIL `panels` and `footprint` (ground truth); `domain` is the layer
    task (its metrics and baseline); `seed_triplets` (round 0's pool) give the nearest-seed
    baseline. Pass a list as `predicted` to receive the predicted layer pairs too."""
    composites = [t["panels"][0] for t in test]
    made = sampler.decompose(composites, seeds)
    if predicted is not None:
        predicted.extend(made)
    baseline = domain.baseline(composites)
    codec = codec_roundtrip(sampler.backbone, [t["panels"] for t in test])
    baseline_codec = codec_roundtrip(sampler.backbone, [(c, *layers) for c, layers in zip(composites, baseline)])
    report = {
        "n": len(test),
        "model": domain.metrics(made, test),
        "baseline": domain.metrics(baseline, test),
        "baseline_codec": domain.metrics([b[1:] for b in baseline_codec], test),
        "codec": domain.metrics([c[1:] for c in codec], test),
    }
    if seed_triplets:
        report["baseline_nn"] = domain.metrics(nearest_seed(composites, seed_triplets), test)
    return report


def held_out(config, store: Store, n: int) -> tuple[list[dict], list[int]]:
    """The first n held-out test triplets (with footprints) and each one's sampling seed: what the
    round's evaluate stage and `layerboot evaluate` both decompose."""
    test = read_triplets(store, store.test_split(), footprint=True)[:n]
    return test, [derive_seed(config.run.seed, "eval", t["triplet_id"]) for t in test]


def seed_triplets(store: Store) -> list[dict]:
    """Round 0's pool, the seeds: what the nearest-seed baseline may memorise."""
    return read_triplets(store, store.pool(0)) if 0 in store.committed_rounds() else []


BASELINES = ("baseline", "baseline_codec", "baseline_nn")  # an evaluation report's keys besides model and codec


def eval_metrics(report: dict) -> dict[str, float]:
    """An evaluation report as rounds.parquet's `eval_metrics` map: the model's metrics as they
    are (logo_psnr, ...), the baselines' prefixed (baseline_logo_psnr, baseline_codec_logo_psnr,
    baseline_nn_logo_psnr)."""
    out = dict(report.get("model", {}))
    for who in BASELINES:
        out |= {f"{who}_{k}": v for k, v in report.get(who, {}).items()}
    return out


def decomposition_sheet(test: Sequence[dict], predicted, n: int = 8):
    """Rows of `composite | true logo | true object` beside `composite | predicted logo | predicted object`."""
    from models.loop.viz import contact_sheet

    cells, labels = [], []
    for t, (logo, obj) in list(zip(test, predicted))[:n]:
        cells += [t["panels"], (t["panels"][0], logo, obj)]
        labels += ["ground truth", "prediction"]
    return contact_sheet(cells, labels, columns=2, scale=3)
