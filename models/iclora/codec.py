"""The tiny profile's codec: an `AutoencoderKL` whose encoder is an exact 8x8-patch PCA.

Why: fitting a small conv VAE from scratch on 2 CPU cores crawls (17-18 dB after 600 steps,
measured), while a linear PCA of 8x8 patches with 64 components already reconstructs the
procedural domain at 30-33 dB. So the encoder is *built*, not trained: its weights are set so
that it computes the PCA code of every 8x8 patch (to ~1e-2), and only the decoder is trained, on
those fixed codes. A fixed encoder also fixes the latent space early, so the transformer can be
pretrained on it while the decoder is still being fitted.

How the diffusers Encoder computes a PCA (block widths from `TinySpec`: 16, 64, 64, 128):
  conv_in       RGB into channels 0-2 (centre tap);
  resnets       identities (conv2 = 0, 1x1 shortcuts copy channels);
  downsample 1  space-to-depth: a stride-2 3x3 conv whose 2x2 top-left taps copy (c, dy, dx);
  downsample 2  space-to-depth again: 48 channels at 16x16 hold every pixel of a 4x4 cell;
  downsample 3  the PCA itself: over a 2x2 neighbourhood of those 48 channels (= one 8x8 patch,
                192 values) it computes the K codes, with the mean folded into the bias;
  block 4       the 1x1 shortcut lays the K codes out in 8 norm groups, each with 8 constant
                channels (+-CONST): the group's statistics are then almost image-independent, so
                conv_norm_out is an affine map, and its beta (+BETA) keeps SiLU in its linear part;
  conv_out      reads the codes back by least squares; logvar = -20 (a near-deterministic posterior).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from models.iclora.checkpoint import STATE_FILE, load_module, module_saver, read_checkpoint, write_checkpoint
from models.iclora.grid import psnr

CONST, BETA, LOGVAR = 50.0, 20.0, -20.0
GROUPS = 8


def check_encoder_shape(vae: AutoencoderKL) -> None:
    c = vae.config
    k, widths = c.latent_channels, tuple(c.block_out_channels)
    need = {
        "four blocks (8x)": len(widths) == 4,
        "block 1 holds 12 channels (2x2 RGB)": widths[0] >= 12,
        "block 2 holds 48 channels (4x4 RGB)": widths[1] >= 48,
        "block 3 holds the codes": widths[2] >= k,
        f"block 4 = 2 x latent channels, in {GROUPS} norm groups": widths[3] == 2 * k and c.norm_num_groups == GROUPS
        and k % GROUPS == 0,
        "one resnet per block": c.layers_per_block == 1,
        "no mid-block attention": not c.mid_block_add_attention,
    }
    broken = [name for name, ok in need.items() if not ok]
    if broken:
        raise ValueError(f"VAE config cannot hold the PCA encoder: {', '.join(broken)}")


def _identity_resnet(r) -> None:
    r.conv2.weight.zero_()
    r.conv2.bias.zero_()
    if r.conv_shortcut is not None:
        n = min(r.conv_shortcut.in_channels, r.conv_shortcut.out_channels)
        r.conv_shortcut.weight[:n, :n, 0, 0] = torch.eye(n)


def _space_to_depth(conv: torch.nn.Conv2d, c_in: int) -> None:
    """Downsample2D pads right/bottom then convolves 3x3 at stride 2: tap (dy, dx) in {0,1}^2 reads
    pixel (2i+dy, 2j+dx). Output channel c*4 + dy*2 + dx = pixel_shuffle's order."""
    for c in range(c_in):
        for dy in range(2):
            for dx in range(2):
                conv.weight[c * 4 + dy * 2 + dx, c, dy, dx] = 1.0


def _code_layout(k: int) -> torch.Tensor:
    """Channel of code j in block 4: group g = j // per, slot j % per; each group has `per` codes then
    `per` constants (half +CONST, half -CONST)."""
    per = k // GROUPS
    return torch.tensor([(j // per) * 2 * per + j % per for j in range(k)])


def _features(vae: AutoencoderKL, x: torch.Tensor, upto: int) -> torch.Tensor:
    enc = vae.encoder
    h = enc.conv_in(x)
    for b in enc.down_blocks[:upto]:
        h = b(h)
    return h


@torch.no_grad()
def build_pca_encoder(vae: AutoencoderKL, images: torch.Tensor) -> dict:
    """Set `vae.encoder` to the PCA of 8x8 patches of `images` [B, 3, H, W] in [-1, 1]; set the
    config's scaling/shift factors so normalised latents have mean 0, std 1. Returns figures."""
    check_encoder_shape(vae)
    enc, k = vae.encoder, vae.config.latent_channels
    for p in enc.parameters():
        p.zero_()
    for b in enc.down_blocks:
        for r in b.resnets:
            _identity_resnet(r)
    for r in enc.mid_block.resnets:
        _identity_resnet(r)
    enc.conv_in.weight[:3, :3, 1, 1] = torch.eye(3)
    _space_to_depth(enc.down_blocks[0].downsamplers[0].conv, 3)
    _space_to_depth(enc.down_blocks[1].downsamplers[0].conv, 12)
    # the PCA over 2x2 cells of the 48 channels at 1/4 resolution (a permutation of the 8x8 patch)
    cells = F.unfold(_features(vae, images, 2)[:, :48], kernel_size=2, stride=2)  # [B, 192, h*w]
    patches = cells.transpose(1, 2).reshape(-1, 192).double()
    mean = patches.mean(0)
    _, s, vt = torch.linalg.svd(patches - mean, full_matrices=False)
    basis = vt[:k]  # [K, 192]
    kept = float((s[:k] ** 2).sum() / (s**2).sum())
    down3 = enc.down_blocks[2].downsamplers[0].conv
    down3.weight[:k, :48, :2, :2] = basis.reshape(k, 48, 2, 2).float()
    down3.bias[:k] = -(basis @ mean).float()
    shortcut = enc.down_blocks[3].resnets[0].conv_shortcut
    shortcut.weight.zero_()
    layout = _code_layout(k)
    shortcut.weight[layout, torch.arange(k), 0, 0] = 1.0
    per = k // GROUPS
    for g in range(GROUPS):
        shortcut.bias[g * 2 * per + per : g * 2 * per + per + per // 2] = CONST
        shortcut.bias[g * 2 * per + per + per // 2 : (g + 1) * 2 * per] = -CONST
    enc.conv_norm_out.weight.fill_(1.0)
    enc.conv_norm_out.bias.fill_(BETA)
    # conv_out: least squares from the (affine) normalised features back to the codes
    h = enc.mid_block(_features(vae, images, 4))
    codes = h[:, layout]
    f = enc.conv_act(enc.conv_norm_out(h))
    a = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, 2 * k), torch.ones(f.numel() // (2 * k), 1)], 1).double()
    sol = torch.linalg.lstsq(a, codes.permute(0, 2, 3, 1).reshape(-1, k).double()).solution  # [2K + 1, K]
    enc.conv_out.weight[:k, :, 1, 1] = sol[:-1].T.float()
    enc.conv_out.bias[:k] = sol[-1].float()
    enc.conv_out.bias[k:] = LOGVAR
    z = vae.encode(images).latent_dist.mode()
    readout_error = float((z - codes).abs().max())
    shift, scale = float(z.mean()), float(1.0 / z.std())
    vae.register_to_config(shift_factor=round(shift, 6), scaling_factor=round(scale, 6))
    return {"pca_variance_kept": round(kept, 5), "readout_max_error": round(readout_error, 5),
            "shift_factor": round(shift, 6), "scaling_factor": round(scale, 6)}


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """Mean PSNR (dB) of `images` [B, 3, H, W] in [-1, 1] through the VAE and back."""
    recon = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    return psnr((recon.float() + 1) / 2, (images.float() + 1) / 2)


DECODER_WEIGHTS = "decoder.safetensors"  # inside a decoder checkpoint


def decoder_lr(step: int, steps: int, lr: float) -> float:
    """`fit_decoder`'s schedule: a 100-step linear warm-up times a cosine decay over all the steps."""
    return lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))


def fit_decoder(vae: AutoencoderKL, batches: Callable[[int], torch.Tensor], steps: int, lr: float,
                probes: dict[str, torch.Tensor], grad_clip: float = 1.0, log: Callable[[str], None] = print,
                every: int = 1000, checkpoint: Path | None = None, checkpoint_every: int = 500,
                on_checkpoint: Callable[[int], None] | None = None, fingerprint: dict | None = None) -> dict:
    """Train the decoder (only) to invert the fixed encoder: L1 + L2 on pixels in [-1, 1].
    `batches(step)` must be a function of the step alone: then, with `checkpoint` (a folder), the
    decoder, optimizer and losses are saved there every `checkpoint_every` steps and a rerun
    continues from the last one exactly; `fingerprint` (what the caller fits from, as JSON) guards
    against resuming another recipe's fit. The caller removes the folder when done."""
    vae.encoder.requires_grad_(False).eval()
    dec = vae.decoder.train().requires_grad_(True)
    opt = torch.optim.AdamW(dec.parameters(), lr=lr, weight_decay=0.0)
    start, history = 0, []
    if checkpoint is not None and (checkpoint / STATE_FILE).exists():
        start, history, meta = read_checkpoint(checkpoint, opt)
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"{checkpoint} is a checkpoint of another decoder fit ({meta.get('fingerprint')}); "
                             "remove it to start again")
        load_module(dec, checkpoint, DECODER_WEIGHTS)
        log(f"decoder: resumed at step {start} from {checkpoint}")
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="fit decoder", unit="step", disable=None)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = decoder_lr(step, steps, lr)
        x = batches(step)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        recon = vae.decode(z).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec.parameters(), grad_clip)
        opt.step()
        history.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
        if (step + 1) % every == 0 or step == steps - 1:
            dec.eval()
            scores = {name: round(reconstruction_psnr(vae, x), 2) for name, x in probes.items()}
            dec.train()
            log(f"decoder step {step + 1}: loss {np.mean(history[-100:]):.4f} psnr {scores}")
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            write_checkpoint(checkpoint, opt, None, step + 1, history, module_saver(dec, DECODER_WEIGHTS),
                             fingerprint=fingerprint)
            if on_checkpoint is not None:
                on_checkpoint(step + 1)
    dec.eval().requires_grad_(False)
    return {name: round(reconstruction_psnr(vae, x), 2) for name, x in probes.items()}
