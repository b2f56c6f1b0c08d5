"""FLUX.1-Fill-dev at its published size with random weights, for GPU tests and benchmarks
(speed and memory do not depend on the weights; no hub download needed), and a "flux-shaped"
model: every published width at reduced depth, saved in the real folder layouts, so the `flux`
profile's whole path (bf16 loading, LoRA on the real module names, the Qwen judge) runs on a CPU."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from models.iclora.backbone import Backbone

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


@contextlib.contextmanager
def _built_on(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Parameters allocated and initialised on `device` in `dtype`: 12 B parameters initialised on
    the host in fp32 would take 48 GB of RAM and minutes."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def real_size_backbone(device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> Backbone:
    """Transformer + VAE at full size. No text encoders: callers pass prompt embeddings (as the
    pipeline accepts them), which is also how cached task-prompt embeddings are used."""
    with _built_on(device, dtype):
        transformer = FluxTransformer2DModel(**FILL_TRANSFORMER).eval()
        vae = AutoencoderKL(**FLUX_VAE).eval()
    return Backbone(transformer, vae, None, None, None, None, FlowMatchEulerDiscreteScheduler(**SCHEDULER),
                    torch.device(device), dtype, T5_TOKENS)


def real_size_judge(device: str = "cuda", dtype: torch.dtype = torch.bfloat16):
    """(model, processor): Qwen2.5-VL-7B's published sizes, random weights, built on `device`."""
    from models.judge.qwen import QWEN25_VL_7B, build_tiny_qwen

    with _built_on(device, dtype):
        model, processor = build_tiny_qwen(QWEN25_VL_7B, seed=0)
    return model, processor


def random_prompt(batch: int, device: str = "cuda", dtype: torch.dtype = torch.bfloat16):
    """(prompt_embeds [B, 512, 4096], pooled [B, 768], text_ids [512, 3]) standing in for T5 + CLIP."""
    g = torch.Generator(device).manual_seed(0)
    embeds = torch.randn(1, T5_TOKENS, T5_DIM, device=device, dtype=dtype, generator=g).expand(batch, -1, -1)
    pooled = torch.randn(1, CLIP_DIM, device=device, dtype=dtype, generator=g).expand(batch, -1)
    return embeds, pooled, torch.zeros(T5_TOKENS, 3, device=device, dtype=dtype)


# -----------------------------------------------------------------------------
# flux-shaped: the published widths at reduced depth, saved in the real folder layouts

# openai/clip-vit-large-patch14 (text) and google/t5-v1_1-xxl (encoder), FLUX.1-Fill-dev's text encoders
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, max_position_embeddings=77,
              projection_dim=768, hidden_act="quick_gelu")
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_heads=64, feed_forward_proj="gated-gelu")


@dataclass(frozen=True)
class FluxShape:
    """Depth of a flux-shaped model: every width is the published one; only the number of blocks
    and layers, the vocabularies (word-level, built offline) and the T5 prompt length shrink."""

    double_blocks: int = 1  # FLUX.1: 19
    single_blocks: int = 1  # FLUX.1: 38
    clip_layers: int = 1  # CLIP-L: 12
    t5_layers: int = 1  # T5-XXL: 24
    t5_max_length: int = 512  # FLUX.1-Fill-dev: 512 (the CPU test uses fewer tokens per prompt)
    qwen_text_layers: int = 1  # Qwen2.5-VL-7B: 28
    qwen_vision_blocks: int = 1  # Qwen2.5-VL-7B: 32


def flux_shaped_backbone(shape: FluxShape = FluxShape(), seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Backbone:
    """FLUX.1-Fill-dev's classes at their published widths (transformer, VAE, CLIP-L, T5-XXL) with
    `shape`'s depth, random weights drawn from `seed`, word-level tokenizers built in memory."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from models.iclora.backbone import assemble, seeded
    from models.iclora.tiny import TINY_WORDS, _clip_tokenizer, _t5_tokenizer

    tokenizer = _clip_tokenizer(TINY_WORDS, CLIP_L["max_position_embeddings"])
    tokenizer_2 = _t5_tokenizer(TINY_WORDS, shape.t5_max_length)
    with seeded(seed, "transformer"):
        transformer = FluxTransformer2DModel(**FILL_TRANSFORMER | dict(
            num_layers=shape.double_blocks, num_single_layers=shape.single_blocks))
    with seeded(seed, "vae"):
        vae = AutoencoderKL(**FLUX_VAE)
    with seeded(seed, "text_encoder"):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), num_hidden_layers=shape.clip_layers, **CLIP_L,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    with seeded(seed, "text_encoder_2"):
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), num_layers=shape.t5_layers, **T5_XXL, dropout_rate=0.0,
            is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
            pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id))
    for m in (transformer, vae, text_encoder, text_encoder_2):
        m.to(dtype)
    return assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2,
                     FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, **SCHEDULER), "cpu", dtype)


def flux_shaped_judge(shape: FluxShape = FluxShape(), seed: int = 0):
    """(model, processor): Qwen2.5-VL-7B's widths with `shape`'s depth and the offline byte-level
    tokenizer's vocabulary (the embedding width stays 3584; a 152k vocabulary would be ~1 B
    parameters of embeddings and lm_head for nothing)."""
    from dataclasses import replace

    from models.judge.qwen import QWEN25_VL_7B, build_tiny_qwen

    spec = replace(QWEN25_VL_7B, layers=shape.qwen_text_layers, vision_layers=shape.qwen_vision_blocks, vocab_size=0)
    return build_tiny_qwen(spec, seed=seed)


def make_flux_shaped(out: str | Path, shape: FluxShape = FluxShape(), seed: int = 0) -> dict[str, str]:
    """Write `out/flux` (diffusers' layout: model_index.json, transformer/, vae/, text_encoder/, ...)
    and `out/qwen` (transformers' layout: config, safetensors weights, processor with its chat
    template), both bf16. Returns the two paths (`model.base` and `judge.model`)."""
    from models.iclora.backbone import save_backbone

    out = Path(out)
    save_backbone(flux_shaped_backbone(shape, seed), out / "flux")
    model, processor = flux_shaped_judge(shape, seed)
    model.to(torch.bfloat16).save_pretrained(out / "qwen", safe_serialization=True)
    processor.save_pretrained(out / "qwen")
    return {"model.base": str(out / "flux"), "judge.model": str(out / "qwen")}
