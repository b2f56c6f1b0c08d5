"""Training-step cost of the tiny transformer (batch 8, forward + backward + AdamW, one thread, median
of 5), side by side: as shipped (8x codec, 64 channels: 48 tokens per grid); a 4x codec with 16
channels (192 tokens, 64 numbers per token); width 384 (12 heads) at 48 tokens. Random weights and
inputs: only the time is measured (TinySpec insists on an 8x codec, so the model is built directly).

    .venv/bin/python bench/probes/step_cost.py
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
from diffusers import FluxTransformer2DModel

from models.iclora.tiny import TinySpec

BATCH, TEXT_TOKENS = 8, 16


def step_seconds(tokens: int, reps: int = 6, **change) -> float:
    spec = asdict(TinySpec()) | change
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=spec["in_channels"], out_channels=spec["out_channels"], num_layers=spec["num_layers"],
        num_single_layers=spec["num_single_layers"], attention_head_dim=spec["attention_head_dim"],
        num_attention_heads=spec["num_attention_heads"], joint_attention_dim=spec["joint_attention_dim"],
        pooled_projection_dim=spec["pooled_projection_dim"], guidance_embeds=True,
        axes_dims_rope=spec["axes_dims_rope"]).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    rows = int((tokens // 3) ** 0.5)  # a 3-panel grid of rows x (3 rows) tokens
    ids = torch.stack([torch.zeros(tokens), torch.arange(tokens) // (3 * rows), torch.arange(tokens) % (3 * rows)], -1)
    inputs = dict(hidden_states=torch.randn(BATCH, tokens, spec["in_channels"]),
                  encoder_hidden_states=torch.randn(BATCH, TEXT_TOKENS, spec["joint_attention_dim"]),
                  pooled_projections=torch.randn(BATCH, spec["pooled_projection_dim"]),
                  timestep=torch.full((BATCH,), 0.5), img_ids=ids, txt_ids=torch.zeros(TEXT_TOKENS, 3),
                  guidance=torch.ones(BATCH), return_dict=False)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        model(**inputs)[0].pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]  # the first step warms up


if __name__ == "__main__":
    torch.set_num_threads(1)
    shipped = step_seconds(48)
    codec4x = step_seconds(192, in_channels=192, out_channels=64)  # 2 x 64 latent numbers + 4 x 4^2 mask
    wide = step_seconds(48, num_attention_heads=12)
    print(f"step (batch 8, median): shipped {shipped:.3f} s; 4x codec, 16 ch, 192 tokens {codec4x:.3f} s "
          f"({codec4x / shipped:.2f}x); width 384 {wide:.3f} s ({wide / shipped:.2f}x)")
