"""More codes a patch, from the shipped decoder: does a K-code PCA codec reach 30 dB and 36/40 round trips?
(docs/research-log.md, "What the codec's latents hold": 128 codes' linear inverse gives 40.6 dB
composites and 39/40 round trips at level 2; the shipped decoder on 64 codes gives 28.8 and 25/40.)

The encoder is built as the shipped one is (`build_pca_encoder`, the recipe's own 3,000 single
images), at K codes: its first 64 codes are the shipped codes (the same PCA, up to each component's
sign, which is read off and folded into the decoder). The decoder starts as the shipped decoder and
computes exactly what it did (Chen et al., "Net2Net", ICLR 2016): it reads the new codes with zero
weights, and its blocks at 1/8 and 1/4 resolution, which `check_encoder_shape` widens with K, copy
their channels in GroupNorm order. Then the decoder alone goes on fitting on the pretraining's
single images (never a triplet). Prints the probes every EVERY steps, then, as
bench/probes/codec_levels.py does, PSNR per panel kind of 48 level-LEVEL test triplets and how many
of 40 the unchanged judge accepts round-tripped. Saves the VAE to OUT.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/codec_codes.py K STEPS EVERY LR LEVEL OUT
    e.g. bench/probes/codec_codes.py 128 1000 250 5e-4 2 /tmp/vae128
"""

from __future__ import annotations

import sys
import time

import torch
from diffusers import AutoencoderKL

from codec_levels import codec_figures
from decoder_widen import continue_decoder, grown, level_triplets, shipped_vae
from models.iclora.backbone import load_backbone
from models.iclora.codec import build_pca_encoder
from models.loop.runtime import REPO_ROOT
from models.pretrain.base import PretrainRecipe, codec_batch, codec_probes


@torch.no_grad()
def more_codes(shipped: AutoencoderKL, k: int, images: torch.Tensor, noise: float = 1e-3, seed: int = 0) -> AutoencoderKL:
    c = dict(shipped.config)
    k0, widths = c["latent_channels"], list(c["block_out_channels"])
    c["latent_channels"], c["block_out_channels"] = k, [widths[0], widths[1], max(widths[2], k), 2 * k]
    vae = AutoencoderKL.from_config(c)
    figures = build_pca_encoder(vae, images)
    z_old, z_new = (v.encode(images[:200]).latent_dist.mode() for v in (shipped, vae))
    corr = torch.stack([torch.corrcoef(torch.stack([z_old[:, j].flatten(), z_new[:, j].flatten()]))[0, 1] for j in range(k0)])
    sign = corr.sign()
    print(f"K {k}: {figures}; first {k0} codes against the shipped: |corr| min {float(corr.abs().min()):.5f}, "
          f"{int((sign < 0).sum())} flipped", flush=True)
    old = shipped.state_dict()
    g = torch.Generator().manual_seed(seed)
    groups = c["norm_num_groups"]
    state = {}
    for name, p in vae.state_dict().items():
        if name.startswith("encoder."):
            state[name] = p  # built
            continue
        if name not in old:  # a 1x1 shortcut where old widths were equal: the identity on the old channels
            assert "conv_shortcut" in name, name
            q = torch.eye(p.shape[0]).view(*p.shape[:1], p.shape[0], 1, 1) if p.dim() == 4 else torch.zeros(p.shape)
        else:
            q = old[name]
        if name == "decoder.conv_in.weight":  # [width, K, 3, 3]: the new codes read with zero weights
            q = torch.cat([q * sign.view(1, -1, 1, 1), torch.zeros(q.shape[0], k - k0, *q.shape[2:])], 1)
        state[name] = q if q.shape == p.shape else grown(q, p.shape, groups, noise, g)
    vae.load_state_dict(state)
    return vae.eval()


if __name__ == "__main__":
    k, steps, every, lr, level, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                       int(sys.argv[5]), sys.argv[6])
    recipe = PretrainRecipe()
    shipped = shipped_vae()
    images = torch.cat([codec_batch(recipe, "codec-pca", j, 50) for j in range(recipe.pca_images // 50)])
    vae = more_codes(shipped, k, images)
    probes = codec_probes(recipe, 16) | level_triplets(level)
    x = probes["heldout_singles"]
    with torch.no_grad():
        d0 = shipped.decode(shipped.encode(x).latent_dist.mode()).sample
        d1 = vae.decode(vae.encode(x).latent_dist.mode()).sample
    print(f"K {k}: decoder max |dx| from the shipped at step 0 {float((d0 - d1).abs().max()):.2e}; "
          f"vae params {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M", flush=True)
    base = load_backbone(str(REPO_ROOT / "models" / "tiny_base"), torch.float32, "cpu")
    base.vae = vae  # the shipped base's other parts; the codec under test
    print(time.strftime("%H:%M:%S"), codec_figures(base, level), flush=True)
    continue_decoder(vae, recipe, steps, every, lr, probes, f"K {k}")
    print(time.strftime("%H:%M:%S"), codec_figures(base, level), flush=True)
    vae.save_pretrained(out, safe_serialization=True)
