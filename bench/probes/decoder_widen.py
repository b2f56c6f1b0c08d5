"""Does the shipped decoder reach 30 dB on composites with a wider full-resolution block?
(docs/research-log.md, "What the codec's latents hold": the 64 codes hold 31.2 dB at level 2, the
decoder gives back 28.8; a fresh 32-wide last block was +0.6 dB at 500 steps.)

The shipped VAE's first block width (= the decoder's last, full-resolution block) goes from 16 to
WIDTH without changing what it computes: the encoder's extra channels are zero (it is built, and
its first block only carries RGB), the decoder's new channels copy old ones in the GroupNorm's
order (Chen et al., "Net2Net", ICLR 2016: each old channel twice, the layer after reads each copy
at half weight), plus a little noise so the copies can part. Then the decoder alone goes on fitting
on the pretraining's own single images, from where the recipe stopped (never a triplet). WIDTH 16
is the plain continuation, the same steps and schedule, for the side-by-side figure. Prints the
pretraining's probes and each panel kind of 48 level-LEVEL triplets (a probe namespace, not the
test split) every EVERY steps; saves the VAE to OUT.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/decoder_widen.py WIDTH STEPS EVERY LR LEVEL OUT
    e.g. bench/probes/decoder_widen.py 32 600 200 5e-4 2 /tmp/vae32   (docs/research-log.md's run)
"""

from __future__ import annotations

import sys
import time

import torch
from diffusers import AutoencoderKL

from models.domains.logo_object.world import make_triplet
from models.iclora.codec import fit_decoder, reconstruction_psnr
from models.loop.runtime import REPO_ROOT
from models.pretrain.base import PretrainRecipe, codec_batch, codec_probes, to_tensor
from storage.hashing import derive_seed


def copy_map(old: int, new: int, groups: int) -> torch.Tensor:
    """New channel -> old channel, group by group: each new group repeats one old group's channels."""
    s_old, s_new = old // groups, new // groups
    return torch.tensor([s_old * (j // s_new) + (j % s_new) % s_old for j in range(new)])


@torch.no_grad()
def widen(vae: AutoencoderKL, width: int, noise: float = 1e-3, seed: int = 0) -> AutoencoderKL:
    c = dict(vae.config)
    old_width = c["block_out_channels"][0]
    if width == old_width:
        return vae
    assert width % old_width == 0, "WIDTH must be a multiple of the shipped width"
    c["block_out_channels"] = [width, *c["block_out_channels"][1:]]
    wide = AutoencoderKL.from_config(c)
    old = vae.state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in wide.state_dict().items():
        q = old[name]
        if q.shape == p.shape:
            state[name] = q
            continue
        if name.startswith("encoder."):  # zero-pad: the built encoder's extra channels carry nothing
            z = torch.zeros_like(p)
            z[tuple(slice(0, s) for s in q.shape)] = q
            state[name] = z
            continue
        state[name] = grown(q, p.shape, c["norm_num_groups"], noise, g)
    wide.load_state_dict(state)
    return wide.eval()


def grown(q: torch.Tensor, shape: torch.Size, groups: int, noise: float, g: torch.Generator) -> torch.Tensor:
    """Old weights `q` at the wider `shape`: each widened dimension repeats its channels in GroupNorm
    order (`copy_map`); a conv reading widened channels reads each copy at 1/repeats; weights (not
    biases or norms) get a little noise so the copies can part."""
    for d in [d for d in range(q.dim()) if q.shape[d] != shape[d]]:
        repeats = shape[d] // q.shape[d]
        q = q.index_select(d, copy_map(q.shape[d], shape[d], groups))
        if d == 1:
            q = q / repeats
    return q + noise * q.std() * torch.randn(q.shape, generator=g) if q.dim() > 1 else q


def shipped_vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(str(REPO_ROOT / "models" / "tiny_base"), subfolder="vae",
                                         use_safetensors=True).eval()


def continue_decoder(vae: AutoencoderKL, recipe: PretrainRecipe, steps: int, every: int, lr: float,
                     probes: dict[str, torch.Tensor], name: str) -> dict:
    """`fit_decoder` on the pretraining's single images past the recipe's steps (never a triplet);
    prints the probes every EVERY steps and the seconds a step."""
    t0 = time.time()
    batches = lambda step: codec_batch(recipe, "codec-decoder", recipe.decoder_steps + step, recipe.decoder_batch)
    final = fit_decoder(vae, batches, steps, lr, probes, recipe.grad_clip,
                        lambda msg: print(time.strftime("%H:%M:%S"), msg, flush=True), every=every)
    seconds = time.time() - t0
    print(f"{name}: {steps} steps in {seconds:.0f} s ({seconds / max(steps, 1):.3f} s/step); final {final}", flush=True)
    return final


def level_triplets(level: int, n: int = 48) -> dict[str, torch.Tensor]:
    triplets = [make_triplet(derive_seed(0, "decoder-widen-probe", i), 64, level) for i in range(n)]
    return {f"L{level}_{p}": to_tensor([getattr(t, p) for t in triplets]) for p in ("composite", "logo", "object")}


if __name__ == "__main__":
    width, steps, every, lr, level, out = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]),
                                           int(sys.argv[5]), sys.argv[6])
    recipe = PretrainRecipe()
    shipped = shipped_vae()
    vae = widen(shipped, width)
    probes = codec_probes(recipe, 16) | level_triplets(level)
    x = probes["heldout_singles"]
    with torch.no_grad():
        z0, z1 = shipped.encode(x).latent_dist.mode(), vae.encode(x).latent_dist.mode()
        d0, d1 = shipped.decode(z0).sample, vae.decode(z1).sample
    print(f"width {width}: encoder max |dz| {float((z0 - z1).abs().max()):.2e}, decoder max |dx| "
          f"{float((d0 - d1).abs().max()):.2e}; vae params {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M",
          flush=True)
    print("start", {k: round(reconstruction_psnr(vae, v), 2) for k, v in probes.items()}, flush=True)
    continue_decoder(vae, recipe, steps, every, lr, probes, f"width {width}")
    vae.save_pretrained(out, safe_serialization=True)
