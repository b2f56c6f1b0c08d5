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


def test_real_size_lora_step_and_sample():
    from models.iclora.fill import decode_latents, latent_image_ids
    from models.iclora.lora import add_lora, trainable_parameters
    from models.iclora.grid import Task, token_mask
    from models.iclora.objective import Conditioning, FlowMatching
    from models.pretrain.realsize import random_prompt, real_size_backbone

    dev, dt = "cuda", torch.bfloat16
    bb = real_size_backbone(dev, dt)
    transformer = bb.transformer
    add_lora(transformer, rank=32, alpha=32, gradient_checkpointing=True)
    assert all(p.dtype == torch.float32 for p in trainable_parameters(transformer))
    s, b = 512, 1
    n_tokens = 3 * (s // 16) ** 2  # 3072
    embeds, pooled, text_ids = random_prompt(b, dev, dt)
    c = Conditioning(torch.randn(b, n_tokens, 320, device=dev, dtype=dt), embeds, pooled, text_ids,
                     latent_image_ids(s, 3 * s, 8, device=dev, dtype=dt))
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
    from models.iclora.fill import unpack

    image = decode_latents(bb, unpack(x, s, 3 * s, 8))
    torch.cuda.synchronize()
    sample_s = time.perf_counter() - t0
    assert image.shape == (b, 3, s, 3 * s)
    print(f"\nreal-size Fill: {step_s:.2f} s/LoRA step (bf16, grad ckpt), {sample_s:.2f} s per 28-step "
          f"1536x512 sample, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def test_qwen25_vl_7b_size_judge_batched_vs_one_by_one():
    """Qwen2.5-VL-7B-size, random weights, bf16 + SDPA: 64 triplets batched and one by one."""
    from models.judge.base import Criterion
    from models.judge.qwen import QwenVLJudge
    from models.pretrain.realsize import real_size_judge
    from models.domains.logo_object.world import make_triplet

    model, processor = real_size_judge()  # built on the GPU in bf16
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
