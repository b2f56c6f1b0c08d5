"""What the tiny codec's latents hold, against what its decoder gives back: each panel kind of 48
held-out triplets per world level through (a) the shipped decoder and (b) the exact linear inverse
of the PCA encoder (the 8x8 patch rebuilt from its 64 codes, plus the PCA's mean), and how many of
40 ground-truth triplets the unchanged judge accepts through each; with K=..., also the linear
inverse of a PCA of K codes fitted on the same images (what a codec of K latent channels holds).
If (b) meets the codec's aims
(>= 30 dB every panel kind, >= 36/40 round trips) where (a) does not, the latents are wide enough
and the gap is the decoder's fit, not the code. (b) is not a decoder the pipeline can use: the
diffusers Decoder upsamples by nearest neighbour + 3x3 conv, which cannot place a channel at one
pixel of a 2x2 cell: identical codes decode to a flat cell (bench/probes/decoder_widen.py).

    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/codec_ceiling.py [LEVEL ...] [K=96,128] > /tmp/codec-ceiling.log
"""

from __future__ import annotations

import sys
from collections import Counter

import torch
import torch.nn.functional as F

from configs import load_config
from models.domains.logo_object.world import WORLD_LEVELS, make_triplet
from models.domains.registry import judge_of
from models.iclora.backbone import load_backbone
from models.iclora.codec import _features, reconstruction_psnr
from models.iclora.grid import psnr, to_pil
from models.judge import failing
from models.loop.evaluate import codec_roundtrip
from models.loop.runtime import REPO_ROOT
from models.pretrain.base import PretrainRecipe, codec_batch, to_tensor
from storage.hashing import derive_seed

PANELS = ("composite", "logo", "object")


def patches(vae, images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, H/8 * W/8, 192]: each 8x8 patch in the encoder's channel order."""
    return F.unfold(_features(vae, images, 2)[:, :48], kernel_size=2, stride=2).transpose(1, 2).double()


@torch.no_grad()
def linear_inverse(vae, images: torch.Tensor, basis: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """The images rebuilt from their PCA codes alone: code = basis (p - mean), p' = basis^T code + mean."""
    b, _, h, w = images.shape
    p = patches(vae, images)
    rebuilt = ((p - mean) @ basis.T @ basis + mean).transpose(1, 2).float()  # [B, 192, h/8 * w/8]
    cells = F.fold(rebuilt, output_size=(h // 4, w // 4), kernel_size=2, stride=2)  # [B, 48, H/4, W/4]
    return F.pixel_shuffle(F.pixel_shuffle(cells, 2), 2).clamp(-1, 1)  # undo the two space-to-depths


if __name__ == "__main__":
    torch.set_num_threads(1)
    base = load_backbone(str(REPO_ROOT / "models" / "tiny_base"), torch.float32, "cpu")
    vae, k = base.vae, base.vae.config.latent_channels
    basis = vae.encoder.down_blocks[2].downsamplers[0].conv.weight[:k, :48, :2, :2].reshape(k, 192).double()
    recipe = PretrainRecipe()  # the PCA's own images (pretrain_encoder), for its mean
    fitted = torch.cat([patches(vae, codec_batch(recipe, "codec-pca", j, 50)).reshape(-1, 192)
                        for j in range(recipe.pca_images // 50)])
    mean = fitted.mean(0)
    widths = [int(w) for a in sys.argv[1:] if a.startswith("K=") for w in a[2:].split(",")]
    vt = torch.linalg.svd(fitted - mean, full_matrices=False)[2] if widths else None
    bases = {"linear": basis} | {f"linear K={w}": vt[:w] for w in widths}
    for level in [int(a) for a in sys.argv[1:] if a.isdigit()] or range(WORLD_LEVELS):
        cfg = load_config("tiny", overrides=[f"data.world_level={level}"])
        triplets = [make_triplet(derive_seed(cfg.run.seed, "synthetic", "test", i), 64, level) for i in range(48)]
        row = []
        for p in PANELS:
            x = to_tensor([getattr(t, p) for t in triplets])
            row.append(f"{p} {reconstruction_psnr(vae, x):.2f} / " + " / ".join(
                f"{psnr((linear_inverse(vae, x, b, mean) + 1) / 2, (x + 1) / 2):.2f}" for b in bases.values()))
        judge = judge_of(cfg)
        gt = [(t.composite, t.logo, t.object) for t in triplets[:40]]
        made = {"decoder": codec_roundtrip(base, gt)} | {
            name: [tuple(to_pil(linear_inverse(vae, to_tensor([im]), b, mean)[0]) for im in t) for t in gt]
            for name, b in bases.items()}
        counts = []
        for name, panels in made.items():
            verdicts = judge.judge(panels)
            why = Counter(c for j in verdicts for c in failing(j.scores, judge.criteria))
            counts.append(f"{name} {sum(j.accepted for j in verdicts)}/40 {dict(why)}")
        print(f"level {level}, dB decoder / " + " / ".join(bases) + ": " + ", ".join(row) + " | round trips accepted: "
              + "; ".join(counts), flush=True)
