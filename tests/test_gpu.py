"""Real-size FLUX.1-Fill on a GPU, random weights from the published configs: one bf16 LoRA
training step and one 512-px three-panel sample. Skipped cleanly without CUDA."""

from __future__ import annotations

import time

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# FLUX.1-Fill-dev's published transformer and VAE configs (diffusers layout).
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


def test_real_size_lora_step_and_sample():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from models.backbone import add_lora, decode_latents, latent_image_ids, pack, trainable_parameters
    from models.grid import Task, task_mask, token_mask
    from models.objective import Conditioning, FlowMatching

    dev, dt = "cuda", torch.bfloat16
    transformer = FluxTransformer2DModel(**FILL_TRANSFORMER).to(dev, dt)
    vae = AutoencoderKL(**FLUX_VAE).to(dev, dt).eval()
    add_lora(transformer, rank=32, alpha=32, gradient_checkpointing=True)
    assert all(p.dtype == torch.float32 for p in trainable_parameters(transformer))

    class Real:  # the parts of a Backbone the objective and latents use (text encoders: embeddings below)
        pass

    bb = Real()
    bb.transformer, bb.vae, bb.device, bb.dtype, bb.vae_scale = transformer, vae, torch.device(dev), dt, 8
    bb.scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                   base_image_seq_len=256, max_image_seq_len=4096)
    s, b = 512, 1
    n_tokens = 3 * (s // 16) ** 2  # 3072
    c = Conditioning(
        cond=torch.randn(b, n_tokens, 320, device=dev, dtype=dt),
        prompt_embeds=torch.randn(b, 512, 4096, device=dev, dtype=dt),
        pooled=torch.randn(b, 768, device=dev, dtype=dt),
        text_ids=torch.zeros(512, 3, device=dev, dtype=dt),
        img_ids=latent_image_ids(s, 3 * s, 8, device=dev, dtype=dt),
    )
    fm = FlowMatching(bb, guidance_scale=30.0)
    opt = torch.optim.AdamW(trainable_parameters(transformer), lr=1e-4)
    x0 = torch.randn(b, n_tokens, 64, device=dev)
    tokens = token_mask(Task.DECOMPOSE, s).to(dev)
    torch.cuda.reset_peak_memory_stats()
    for step in range(3):  # the first step warms up kernels
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = fm.loss(x0, c, tokens)
        loss.backward()
        opt.step()
        opt.zero_grad()
        torch.cuda.synchronize()
        step_s = time.perf_counter() - t0
    assert torch.isfinite(loss)
    transformer.eval()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    x = fm.sample(c, steps=28, noise=torch.randn(b, n_tokens, 64, device=dev))
    from models.backbone import unpack

    image = decode_latents(bb, unpack(x, s, 3 * s, 8))
    torch.cuda.synchronize()
    sample_s = time.perf_counter() - t0
    assert image.shape == (b, 3, s, 3 * s)
    print(f"\nreal-size Fill: {step_s:.2f} s/LoRA step (bf16, grad ckpt), {sample_s:.2f} s per 28-step "
          f"1536x512 sample, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def test_qwen25_vl_7b_size_judge_batched_vs_one_by_one():
    """Qwen2.5-VL-7B-size, random weights, bf16 + SDPA: 64 triplets batched and one by one."""
    from models.judge.base import Criterion
    from models.judge.qwen import QWEN25_VL_7B, QwenVLJudge, build_tiny_qwen
    from models.synthetic import make_triplet

    model, processor = build_tiny_qwen(QWEN25_VL_7B, seed=0)
    model = model.to("cuda", torch.bfloat16)
    crit = [Criterion("logo_clean", "Is the middle panel a clean logo on a plain background?", 0.5)]
    triplets = [(t.composite, t.logo, t.object) for t in (make_triplet(i, 64) for i in range(64))]
    rates = {}
    for batch in (16, 1):
        judge = QwenVLJudge(model, processor, crit, batch_size=batch, min_pixels=384 * 128, max_pixels=384 * 128 * 2)
        judge.judge(triplets[:batch])  # warm up kernels
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        scores = [j.scores["logo_clean"] for j in judge.judge(triplets)]
        torch.cuda.synchronize()
        rates[batch] = len(triplets) / (time.perf_counter() - t0)
        assert len(scores) == 64
    print(f"\nQwen2.5-VL-7B-size judge: {rates[16]:.1f} triplets/s batched (16), {rates[1]:.1f} one by one, "
          f"ratio {rates[16] / rates[1]:.1f}x")
