"""Prompt and latent helpers that follow FluxFillPipeline exactly (tests compare against it).

Shapes (B batch, H x W pixels, h = H/8, w = W/8 latents, N = (H/16)(W/16) packed tokens,
L text tokens, C latent channels: 16 for FLUX, 64 for the tiny codec): latents [B, C, h, w];
packed [B, N, 4C]; Fill condition [B, N, 4C + 256]; transformer input [B, N, 8C + 256];
velocity [B, N, 4C].
"""

from __future__ import annotations


import torch
from diffusers import FluxFillPipeline

from models.iclora.backbone import Backbone


@torch.no_grad()
def encode_prompts(backbone: Backbone, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """prompts -> (prompt_embeds [B, L, joint_dim], pooled [B, pooled_dim], text_ids [L, 3]),
    through the pipeline's own encode_prompt so the numbers are the pipeline's.

    Each distinct prompt is encoded alone, once, and cached on the backbone (the text encoders are
    frozen, so the cache never goes stale). Alone, so a cached vector depends only on its string,
    never on which other prompts shared its batch."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings")
    if not prompts:
        raise ValueError("no prompts given")
    pipe = backbone.pipeline()
    for prompt in dict.fromkeys(prompts):
        if prompt not in backbone.prompt_cache:
            embeds, pooled, _ = pipe.encode_prompt(
                prompt=[prompt], prompt_2=None, device=backbone.device, max_sequence_length=backbone.max_sequence_length
            )
            backbone.prompt_cache[prompt] = (embeds[0], pooled[0])
    embeds = torch.stack([backbone.prompt_cache[p][0] for p in prompts])  # [B, L, joint_dim]
    pooled = torch.stack([backbone.prompt_cache[p][1] for p in prompts])  # [B, pooled_dim]
    # text positions are all zero in FLUX (RoPE only distinguishes image tokens); same dtype rule as the pipeline
    text_ids = torch.zeros(embeds.shape[1], 3, device=backbone.device, dtype=backbone.text_encoder.dtype)
    return embeds, pooled, text_ids


@torch.no_grad()
def encode_images(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    """x [B, 3, H, W] in [-1, 1] -> latents [B, C, H/8, W/8], normalised as the pipeline does:
    (z - shift_factor) * scaling_factor.

    Uses the posterior's mode, where the pipeline samples it (retrieve_latents' default): with
    the mode, latents are a pure function of the pixels, so they can be cached per triplet and a
    resumed run sees the same numbers. A trained KL-VAE's posterior is narrow, so the two agree up
    to that small noise (a random-init VAE's is not: std ~1 on the tiny one before fitting)."""
    cfg = backbone.vae.config
    z = backbone.vae.encode(x.to(device=backbone.device, dtype=backbone.vae.dtype)).latent_dist.mode()
    return (z - cfg.shift_factor) * cfg.scaling_factor


@torch.no_grad()
def decode_latents(backbone: Backbone, latents: torch.Tensor) -> torch.Tensor:
    """latents [B, C, h, w] -> x [B, 3, 8h, 8w] in [-1, 1] (clamped, as the pipeline's postprocess)."""
    cfg = backbone.vae.config
    z = latents.to(device=backbone.device, dtype=backbone.vae.dtype) / cfg.scaling_factor + cfg.shift_factor
    return backbone.vae.decode(z, return_dict=False)[0].clamp(-1, 1)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: 2x2 patches become tokens, row-major (the pipeline's _pack_latents)."""
    b, c, h, w = latents.shape
    return FluxFillPipeline._pack_latents(latents, b, c, h, w)


def unpack(packed: torch.Tensor, height: int, width: int, vae_scale: int = 8) -> torch.Tensor:
    """[B, N, 4C] -> [B, C, H/vae_scale, W/vae_scale] for an H x W pixel image (the pipeline's _unpack_latents)."""
    return FluxFillPipeline._unpack_latents(packed, height, width, vae_scale)


def latent_image_ids(
    height: int, width: int, vae_scale: int = 8, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """[N, 3] RoPE positions (0, row, col) of the packed tokens of an H x W image; no batch dim."""
    cell = 2 * vae_scale
    return FluxFillPipeline._prepare_latent_image_ids(None, height // cell, width // cell, device, dtype)


def fill_condition(backbone: Backbone, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What FLUX.1-Fill sees besides the noisy latents, as prepare_mask_latents builds it:
    packed latents of `image * (1 - mask)` (4C ch) ++ the mask packed at 8x8-pixel blocks (256 ch).

    image [B, 3, H, W] in [-1, 1]; mask [B or 1, 1, H, W], 1 = generate -> [B, N, 4C + 256]."""
    b, _, height, width = image.shape
    vs = backbone.vae_scale
    image = image.to(device=backbone.device, dtype=torch.float32)
    mask = mask.to(device=backbone.device, dtype=torch.float32).expand(b, 1, height, width)
    mask = (mask >= 0.5).float()  # the pipeline's mask processor binarizes at 0.5
    masked = pack(encode_images(backbone, image * (1 - mask)))  # [B, N, 4C]
    h, w = height // vs, width // vs
    m = mask[:, 0].reshape(b, h, vs, w, vs).permute(0, 2, 4, 1, 3).reshape(b, vs * vs, h, w)  # [B, 64, h, w]
    m = pack(m)  # [B, N, 256]
    return torch.cat([masked.to(backbone.dtype), m.to(backbone.dtype)], dim=-1)


def transformer_inputs(
    backbone: Backbone,
    noisy_packed: torch.Tensor,
    cond: torch.Tensor,
    sigma: torch.Tensor | float,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    img_ids: torch.Tensor,
    guidance_scale: float = 30.0,
) -> dict[str, torch.Tensor | None]:
    """The keyword arguments FluxFillPipeline passes to the transformer at noise level sigma.

    noisy_packed [B, N, 64], cond [B, N, 320], sigma [B] (or scalar) in [0, 1]: the pipeline passes
    t / 1000 and the transformer multiplies by 1000 inside, so training passes sigma itself.
    Guidance is an input only of guidance-distilled transformers; 30 is the pipeline's default
    for Fill, and training with the value used at sampling keeps the two consistent."""
    dt, dev = backbone.dtype, backbone.device
    b = noisy_packed.shape[0]
    sigma = torch.as_tensor(sigma, device=dev, dtype=torch.float32).reshape(-1).expand(b)
    guidance = None
    if backbone.transformer.config.guidance_embeds:
        guidance = torch.full((b,), float(guidance_scale), device=dev, dtype=torch.float32)
    return dict(
        hidden_states=torch.cat([noisy_packed.to(dev, dt), cond.to(dev, dt)], dim=2),  # [B, N, 384]
        timestep=sigma.to(dt),
        guidance=guidance,
        pooled_projections=pooled.to(dev, dt),
        encoder_hidden_states=prompt_embeds.to(dev, dt),
        txt_ids=text_ids.to(dev),
        img_ids=img_ids.to(dev),
    )


SIGMA_MIN = 0.05  # x-prediction's velocity divides by sigma: clamped, as JiT clamps its t (Li & He, 2025)


def to_velocity(output: torch.Tensor, noisy_packed: torch.Tensor, sigma: torch.Tensor | float,
                prediction_type: str) -> torch.Tensor:
    """The transformer's output as velocity v = noise - x0, whatever the base predicts.

    x_sigma = x0 + sigma * v, so a clean-data estimate x0_hat gives v = (x_sigma - x0_hat) / sigma;
    below SIGMA_MIN the division is clamped (the loss's weight on x0_hat, 1 / sigma^2, stays
    bounded, and the sampler's last step, from sigma >= SIGMA_MIN to 0, lands on x0_hat exactly).
    output, noisy_packed [B, N, 4C]; sigma [B] or scalar -> [B, N, 4C]."""
    if prediction_type == "velocity":
        return output
    if prediction_type != "sample":
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    s = torch.as_tensor(sigma, device=output.device, dtype=torch.float32).reshape(-1, 1, 1)
    return ((noisy_packed.to(output.device).float() - output.float()) / s.clamp_min(SIGMA_MIN)).to(output.dtype)


def predict_velocity(
    backbone: Backbone,
    noisy_packed: torch.Tensor,
    cond: torch.Tensor,
    sigma: torch.Tensor | float,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    text_ids: torch.Tensor,
    img_ids: torch.Tensor,
    guidance_scale: float = 30.0,
) -> torch.Tensor:
    """Velocity (noise - x0) predicted at x_sigma = sigma * noise + (1 - sigma) * x0 -> [B, N, 4C],
    from the transformer's output as the base's prediction type reads it (to_velocity)."""
    kwargs = transformer_inputs(
        backbone, noisy_packed, cond, sigma, prompt_embeds, pooled, text_ids, img_ids, guidance_scale
    )
    output = backbone.transformer(**kwargs, return_dict=False)[0]
    return to_velocity(output, noisy_packed, sigma, backbone.prediction_type)
