"""FLUX.1-Fill-dev at its published size with random weights, for GPU tests and benchmarks
(speed and memory do not depend on the weights; no hub download needed)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from models.backbone import Backbone

# black-forest-labs/FLUX.1-Fill-dev: transformer/config.json and vae/config.json
FILL_TRANSFORMER = dict(
    patch_size=1, in_channels=384, out_channels=64, num_layers=19, num_single_layers=38,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
FLUX_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
)
SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096)
T5_TOKENS, T5_DIM, CLIP_DIM = 512, 4096, 768


def real_size_backbone(device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> Backbone:
    """Transformer + VAE at full size. No text encoders: callers pass prompt embeddings (as the
    pipeline accepts them), which is also how cached task-prompt embeddings are used."""
    transformer = FluxTransformer2DModel(**FILL_TRANSFORMER).to(device, dtype)
    vae = AutoencoderKL(**FLUX_VAE).to(device, dtype).eval()
    return Backbone(transformer, vae, None, None, None, None, FlowMatchEulerDiscreteScheduler(**SCHEDULER),
                    torch.device(device), dtype, T5_TOKENS)


def random_prompt(batch: int, device: str = "cuda", dtype: torch.dtype = torch.bfloat16):
    """(prompt_embeds [B, 512, 4096], pooled [B, 768], text_ids [512, 3]) standing in for T5 + CLIP."""
    g = torch.Generator(device).manual_seed(0)
    embeds = torch.randn(1, T5_TOKENS, T5_DIM, device=device, dtype=dtype, generator=g).expand(batch, -1, -1)
    pooled = torch.randn(1, CLIP_DIM, device=device, dtype=dtype, generator=g).expand(batch, -1)
    return embeds, pooled, torch.zeros(T5_TOKENS, 3, device=device, dtype=dtype)
