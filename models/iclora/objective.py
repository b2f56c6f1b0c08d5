"""The training objective, minRF style: flow matching (L_rec) and cycle consistency (L_cyc).

Convention (FLUX's, see docs/stack-notes.md): x0 = data latents, x1 = noise, sigma in [0, 1],
x_sigma = (1 - sigma) * x0 + sigma * x1, and the model predicts the velocity v = x1 - x0.
Everything is on packed latents: [B, N, 4C] tokens, N = (H/16)(W/16) for an H x W grid.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from models.iclora.backbone import Backbone
from models.iclora.fill import predict_velocity


@dataclass
class Conditioning:
    """Everything the transformer sees besides the noisy latents, for one batch."""

    cond: torch.Tensor  # [B, N, 320] packed masked-image latents ++ packed mask
    prompt_embeds: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor  # [B, P]
    text_ids: torch.Tensor  # [L, 3]
    img_ids: torch.Tensor  # [N, 3]


def masked_mse(a: torch.Tensor, b: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the generated tokens only: a, b [B, N, C], tokens [B or 1, N] bool."""
    weight = tokens.to(a.dtype).expand(a.shape[0], -1)  # [B, N]
    per_token = (a.float() - b.float()).pow(2).mean(-1)  # [B, N]
    return (per_token * weight).sum() / weight.sum().clamp_min(1)


class FlowMatching:
    """L_rec and L_cyc of the paper, plus an Euler sampler in the model's own timestep convention."""

    def __init__(self, backbone: Backbone, guidance_scale: float = 1.0, timestep_sampling: str = "logit_normal",
                 resolution_shift: bool = True, logit_mean: float = 0.0, logit_std: float = 1.0):
        if timestep_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"timestep_sampling must be logit_normal or uniform, got {timestep_sampling!r}")
        self.backbone = backbone
        self.guidance_scale = guidance_scale
        self.timestep_sampling = timestep_sampling
        self.resolution_shift = resolution_shift  # off: sigma for no resolution in particular (a base's pretraining)
        self.logit_mean = logit_mean  # logit-normal's centre: > 0 samples noisier sigmas
        self.logit_std = logit_std  # and its spread: < 1 gathers them nearer the centre

    def velocity(self, x_t: torch.Tensor, sigma: torch.Tensor, c: Conditioning) -> torch.Tensor:
        return predict_velocity(
            self.backbone, x_t, c.cond, sigma, c.prompt_embeds, c.pooled, c.text_ids, c.img_ids, self.guidance_scale
        )

    def shift_mu(self, image_tokens: int) -> float:
        """FLUX's resolution-dependent shift, as FluxFillPipeline computes it for `image_tokens`."""
        from diffusers.pipelines.flux.pipeline_flux_fill import calculate_shift

        cfg = self.backbone.scheduler.config
        return calculate_shift(image_tokens, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                               cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))

    def sample_sigma(self, batch: int, image_tokens: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise levels for training: logit-normal (SD3) weights the middle, where the task is decided,
        then shifted exactly as sampling shifts its schedule for this many image tokens. Without the
        shift, training at FLUX's 3,072-token grid rarely sees sigma > 0.7, where sampling spends
        most of its steps."""
        u = torch.rand(batch, generator=generator) if self.timestep_sampling == "uniform" else \
            torch.sigmoid(torch.randn(batch, generator=generator) * self.logit_std + self.logit_mean)
        if not self.resolution_shift:
            return u
        return self.backbone.scheduler.time_shift(self.shift_mu(image_tokens), 1.0, u)

    def loss(self, x0: torch.Tensor, c: Conditioning, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        """L_rec: flow matching on the generated (masked) tokens. x0 [B, N, 4C] clean grid latents."""
        sigma = self.sample_sigma(x0.shape[0], x0.shape[1], generator).to(x0.device)  # [B]
        x1 = torch.randn(x0.shape, generator=generator).to(x0.device)  # [B, N, 4C]
        s = sigma[:, None, None]
        x_t = (1 - s) * x0 + s * x1
        return masked_mse(self.velocity(x_t, sigma, c), x1 - x0, tokens)

    def cycle_loss(
        self,
        x0_real: torch.Tensor,
        c_real: Conditioning,
        x0_cycled: torch.Tensor,
        c_cycled: Conditioning,
        tokens: torch.Tensor,
        generator=None,
    ) -> torch.Tensor:
        """One direction of L_cyc: |v(x_t^real, M, t, tau) - v(x_t^cycled, M, t, tau)|^2.

        The real and the cycled grid share t and the noise, so only the input differs. Stop-gradient
        on the real branch: it is already trained by L_rec, and letting it move toward the cycled
        branch could make both agree by ignoring the input; the cycled branch learns to match it.
        """
        sigma = self.sample_sigma(x0_real.shape[0], x0_real.shape[1], generator).to(x0_real.device)
        x1 = torch.randn(x0_real.shape, generator=generator).to(x0_real.device)
        s = sigma[:, None, None]
        with torch.no_grad():
            v_real = self.velocity((1 - s) * x0_real + s * x1, sigma, c_real)
        v_cycled = self.velocity((1 - s) * x0_cycled + s * x1, sigma, c_cycled)
        return masked_mse(v_cycled, v_real, tokens)

    @torch.no_grad()
    def sample(self, c: Conditioning, steps: int, noise: torch.Tensor, init: torch.Tensor | None = None,
               strength: float = 1.0) -> torch.Tensor:
        """Euler integration from noise (sigma = 1) to data (sigma = 0) with FLUX's shifted schedule,
        exactly as FluxFillPipeline sets it up. noise [B, N, 4C] -> x0 [B, N, 4C]. With `init`
        [B, N, 4C] and strength < 1, FluxFillPipeline's `strength`: the schedule's first
        int(steps - steps * strength) steps are skipped and the rest start from `init` noised to
        the first of them."""
        from diffusers.pipelines.flux.pipeline_flux_fill import retrieve_timesteps

        scheduler = self.backbone.scheduler
        sigmas = torch.linspace(1.0, 1.0 / steps, steps).numpy()
        mu = self.shift_mu(noise.shape[1])
        timesteps, _ = retrieve_timesteps(scheduler, steps, noise.device, sigmas=sigmas, mu=mu)
        transformer = self.backbone.transformer
        cached = getattr(transformer, "is_cache_enabled", False)  # sample.cache: diffusers' cache hooks
        x = noise.to(self.backbone.dtype)
        if init is not None and strength < 1:  # the pipeline's get_timesteps + prepare_latents
            start = int(max(steps - min(steps * strength, steps), 0))
            if start >= steps:
                raise ValueError(f"strength {strength} leaves no step of {steps}")
            timesteps = timesteps[start:]
            scheduler.set_begin_index(start)
            x = scheduler.scale_noise(init.to(x.dtype), timesteps[:1].expand(x.shape[0]), x)
        try:
            for t in timesteps:
                sigma = (t / 1000).expand(x.shape[0])
                with transformer.cache_context("cond") if cached else contextlib.nullcontext():
                    v = self.velocity(x, sigma, c)
                x = scheduler.step(v, t, x, return_dict=False)[0]
        finally:
            if cached:  # the next call starts from a full forward, never from this one's residuals
                transformer._reset_stateful_cache()
        return x
