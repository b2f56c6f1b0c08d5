"""How many latent channels the tiny codec needs (docs/research-log.md, "A codec the judge
accepts"): the shipped pretraining's codec stages (PCA encoder of single images, then the decoder
fitted to invert it; never a triplet) for an 8x codec of K latent channels, the VAE's block widths
following K as models/iclora/codec.py needs them (FIRST, 64, max(64, K), 2K); K or KxFIRST (FIRST
16 unless given). Prints reconstruction
PSNR of held-out singles and of each panel kind of domain triplets (report only) every EVERY steps,
and the seconds per decoder step. Run two K side by side, one thread each, to compare curves.
With a base's folder instead of K, its decoder goes on fitting from where it is (same data, a new
cosine schedule from LR), into /tmp/codec-continued:

    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/codec_width.py 64 2000 500 > /tmp/codec64.log &
    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/codec_width.py 128 2000 500 > /tmp/codec128.log &
    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/codec_width.py 64x32 1000 500 > /tmp/codec64x32.log &
    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/codec_width.py models/tiny_base 4000 500 3e-4 > /tmp/codec-more.log &
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

from diffusers import AutoencoderKL

from models.iclora.codec import fit_decoder, reconstruction_psnr
from models.iclora.tiny import TinySpec, build_tiny
from models.pretrain.base import PretrainRecipe, codec_batch, codec_probes, pretrain_encoder


def spec_for(k: int, first: int = 16) -> TinySpec:
    """An 8x codec of k channels; `first` is the first block's width, which is also the decoder's
    last block, the one at full resolution (the PCA needs only 12 there)."""
    return dataclasses.replace(TinySpec(), latent_channels=k, out_channels=4 * k, in_channels=8 * k + 256,
                               vae_block_out_channels=(first, 64, max(64, k), 2 * k))


if __name__ == "__main__":
    steps, every = int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    recipe = PretrainRecipe(decoder_steps=steps, decoder_lr=float(sys.argv[4]) if len(sys.argv) > 4 else 1e-3)
    if Path(sys.argv[1]).is_dir():  # continue a base's decoder; its data steps start after the recipe's
        vae, name = AutoencoderKL.from_pretrained(sys.argv[1], subfolder="vae", use_safetensors=True), "continued"
        batches = lambda step: codec_batch(recipe, "codec-decoder", PretrainRecipe().decoder_steps + step, recipe.decoder_batch)
        print("start", {k: round(reconstruction_psnr(vae, v), 2) for k, v in codec_probes(recipe, 16).items()}, flush=True)
    else:
        k, first = (int(x) for x in (sys.argv[1] + "x16").split("x")[:2])  # K or KxFIRST, e.g. 64x32
        backbone, name = build_tiny(spec_for(k, first), seed=recipe.seed), sys.argv[1]
        vae = backbone.vae
        batches = lambda step: codec_batch(recipe, "codec-decoder", step, recipe.decoder_batch)
        print("vae params", sum(p.numel() for p in vae.parameters()) / 1e6, "M", flush=True)
        print("encoder", pretrain_encoder(backbone, recipe), flush=True)
    t0 = time.time()
    final = fit_decoder(vae, batches, steps, recipe.decoder_lr, codec_probes(recipe, 16), recipe.grad_clip,
                        lambda m: print(time.strftime("%H:%M:%S"), m, flush=True), every=every)
    seconds = time.time() - t0
    print(f"{name}: {steps} decoder steps in {seconds:.0f} s ({seconds / steps:.3f} s/step); final {final}", flush=True)
    vae.save_pretrained(f"/tmp/codec-{name}", safe_serialization=True)
