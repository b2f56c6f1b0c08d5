"""Does the codec reach 30 dB on composites when the encoder trains with the decoder?
(docs/research-log.md, "A wider decoder on the shipped codes": the decoder alone on the fixed PCA
codes creeps, +0.07 dB in 600 steps; the route named there is an encoder trained with it.)

From the shipped VAE, the encoder and the decoder go on fitting together on the pretraining's own
single images (never a triplet), L1 + L2 on pixels as in `fit_decoder`, plus ANCHOR x the mean
squared distance of the codes from the shipped encoder's, over the codes' variance: the shipped
transformer was pretrained on those codes, so how far they move is what retraining it would cost.
ENC_LR 0 is the plain continuation (the decoder alone), the same steps and schedule, for the
side-by-side figure. `fresh` after OUT starts the decoder from new weights (the config's seed-0
init), so the encoder and the decoder fit each other from the start, the encoder from the PCA.
Prints the pretraining's probes, each panel kind of 48 level-LEVEL triplets (a probe namespace, not
the test split) and the codes' relative drift every EVERY steps; saves the VAE to OUT.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/codec_joint.py ENC_LR ANCHOR STEPS EVERY LR LEVEL OUT
    e.g. bench/probes/codec_joint.py 1e-4 1.0 600 200 5e-4 2 /tmp/vae_joint
         bench/probes/codec_joint.py 1e-3 0 2000 500 1e-3 2 /tmp/vae_fresh fresh
"""

from __future__ import annotations

import copy
import sys
import time

import torch
from diffusers import AutoencoderKL

from models.iclora.codec import decoder_lr, reconstruction_psnr
from models.loop.runtime import REPO_ROOT
from models.pretrain.base import PretrainRecipe, codec_batch, codec_probes

sys.path.insert(0, str(REPO_ROOT / "bench" / "probes"))
from decoder_widen import level_triplets, shipped_vae  # noqa: E402  (the same 48 probe triplets)


def codes(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    return vae.encode(x).latent_dist.mode()


@torch.no_grad()
def drift(vae: AutoencoderKL, shipped: AutoencoderKL, x: torch.Tensor) -> float:
    """RMS change of the codes over their RMS deviation from the mean code."""
    z0, z1 = codes(shipped, x), codes(vae, x)
    return float((z1 - z0).pow(2).mean().sqrt() / (z0 - z0.mean(dim=(0, 2, 3), keepdim=True)).pow(2).mean().sqrt())


if __name__ == "__main__":
    enc_lr, anchor, steps, every, lr, level, out = (float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                                   int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    recipe = PretrainRecipe()
    shipped = shipped_vae().requires_grad_(False)
    vae = copy.deepcopy(shipped).train()
    if sys.argv[8:] == ["fresh"]:
        torch.manual_seed(0)
        vae.decoder.load_state_dict(AutoencoderKL.from_config(shipped.config).decoder.state_dict())
    probes = codec_probes(recipe, 16) | level_triplets(level)
    z_var = codes(shipped, probes["heldout_singles"]).var(dim=(0, 2, 3)).mean()

    def report(step: int) -> None:
        vae.eval()
        scores = {k: round(reconstruction_psnr(vae, v), 2) for k, v in probes.items()}
        d = drift(vae, shipped, probes[f"L{level}_composite"])
        vae.train()
        print(time.strftime("%H:%M:%S"), f"step {step}: drift {d:.3f} psnr {scores}", flush=True)

    report(0)
    vae.encoder.requires_grad_(enc_lr > 0)
    vae.decoder.requires_grad_(True)
    groups = [{"params": list(vae.decoder.parameters()), "base": lr}]
    if enc_lr > 0:
        encoder = [vae.encoder] + ([vae.quant_conv] if vae.quant_conv is not None else [])
        groups.append({"params": [p for m in encoder for p in m.parameters()], "base": enc_lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    params = [p for g in groups for p in g["params"]]
    t0 = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = decoder_lr(step, steps, g["base"])
        x = codec_batch(recipe, "codec-decoder", recipe.decoder_steps + step, recipe.decoder_batch)
        z = codes(vae, x) if enc_lr > 0 else codes(vae, x).detach()
        recon = vae.decode(z).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        if enc_lr > 0 and anchor > 0:
            with torch.no_grad():
                z0 = codes(shipped, x)
            loss = loss + anchor * (z - z0).pow(2).mean() / z_var
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        opt.step()
        if (step + 1) % every == 0 or step == steps - 1:
            report(step + 1)
    seconds = time.time() - t0
    print(f"enc_lr {enc_lr} anchor {anchor}: {steps} steps in {seconds:.0f} s ({seconds / steps:.3f} s/step)",
          flush=True)
    vae.eval().save_pretrained(out, safe_serialization=True)
