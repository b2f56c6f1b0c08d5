"""GPU throughput at real size (random weights from the published configs, bf16), side by side:

  (a) candidate generation, triplets/hour: our batched sampler (cached prompt embeddings, one
      forward per step for a whole batch) vs diffusers' FluxFillPipeline called one grid at a time;
      same 28 steps, same 1536x512 three-panel grid. Goal >= 1.5x.
  (b) LoRA training: seconds per step and model FLOPs utilisation (6 * params * tokens per sample,
      the usual convention; recomputation by gradient checkpointing not counted). Goal >= 40%.
  (c) Qwen2.5-VL-7B-size judging: images/s batched vs one by one. Goal >= 5x.

    .venv/bin/python bench/gpu.py [--grids 16] [--batch 8] [--train-batch 4] [--only a,b,c]

Skips (exit 0, says why) without CUDA. Prints the ratios last.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}  # dense, per GPU


def timed_cuda(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def generation(n_grids: int, batch: int, steps: int = 28, size: int = 512) -> tuple[float, float]:
    from diffusers import FluxFillPipeline
    from PIL import Image

    from models.backbone import decode_latents, fill_condition, latent_image_ids, unpack
    from models.grid import Task, task_mask
    from models.objective import Conditioning, FlowMatching
    from models.realsize import random_prompt, real_size_backbone

    bb = real_size_backbone()
    bb.transformer.eval()
    mask = task_mask(Task.GENERATE, size).to("cuda")  # [1, 1, s, 3s]
    img_ids = latent_image_ids(size, 3 * size, 8, device="cuda", dtype=bb.dtype)
    fm = FlowMatching(bb, guidance_scale=30.0)
    tokens = img_ids.shape[0]

    @torch.no_grad()
    def ours(n_grids: int, batch: int):
        for i in range(0, n_grids, batch):
            b = min(batch, n_grids - i)
            embeds, pooled, text_ids = random_prompt(b)
            pixels = torch.zeros(b, 3, size, 3 * size, device="cuda", dtype=bb.dtype)
            c = Conditioning(fill_condition(bb, pixels, mask), embeds, pooled, text_ids, img_ids)
            x = fm.sample(c, steps, torch.randn(b, tokens, 64, device="cuda"))
            decode_latents(bb, unpack(x, size, 3 * size, 8))

    pipe = FluxFillPipeline(**bb.components())
    pipe.set_progress_bar_config(disable=True)
    blank = Image.new("RGB", (3 * size, size))
    mask_image = Image.fromarray((mask[0, 0].float().cpu().numpy() * 255).astype("uint8"))

    @torch.no_grad()
    def diffusers_one_by_one(n_grids: int):
        embeds, pooled, _ = random_prompt(1)
        for _ in range(n_grids):
            pipe(image=blank, mask_image=mask_image, prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                 height=size, width=3 * size, num_inference_steps=steps, guidance_scale=30.0,
                 max_sequence_length=bb.max_sequence_length, output_type="pt")

    ours(batch, batch), diffusers_one_by_one(1)  # warm up kernels and the allocator
    t_ours = timed_cuda(lambda: ours(n_grids, batch))
    t_base = timed_cuda(lambda: diffusers_one_by_one(n_grids))
    del pipe, bb
    torch.cuda.empty_cache()
    return 3600 * n_grids / t_ours, 3600 * n_grids / t_base


def training(batch: int, steps: int = 5, size: int = 512) -> tuple[float, float]:
    from models.backbone import add_lora, count_parameters, latent_image_ids, trainable_parameters
    from models.grid import Task, token_mask
    from models.objective import Conditioning, FlowMatching
    from models.realsize import random_prompt, real_size_backbone

    bb = real_size_backbone()
    add_lora(bb.transformer, rank=32, alpha=32, gradient_checkpointing=True)
    n_tokens = 3 * (size // 16) ** 2
    embeds, pooled, text_ids = random_prompt(batch)
    c = Conditioning(torch.randn(batch, n_tokens, 320, device="cuda", dtype=bb.dtype), embeds, pooled, text_ids,
                     latent_image_ids(size, 3 * size, 8, device="cuda", dtype=bb.dtype))
    fm = FlowMatching(bb, guidance_scale=30.0)
    opt = torch.optim.AdamW(trainable_parameters(bb.transformer), lr=1e-4)
    x0, tokens = torch.randn(batch, n_tokens, 64, device="cuda"), token_mask(Task.DECOMPOSE, size).to("cuda")

    def step():
        fm.loss(x0, c, tokens).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(), step()  # warm up
    seconds = timed_cuda(lambda: [step() for _ in range(steps)]) / steps
    flops = 6 * count_parameters(bb.transformer) * batch * (n_tokens + embeds.shape[1])
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 989.4) * 1e12
    del bb, opt
    torch.cuda.empty_cache()
    return seconds, flops / seconds / peak


def judging(n: int = 64, batch: int = 16) -> tuple[float, float]:
    from models.judge.base import Criterion
    from models.judge.qwen import QWEN25_VL_7B, QwenVLJudge, build_tiny_qwen
    from models.synthetic import make_triplet

    model, processor = build_tiny_qwen(QWEN25_VL_7B, seed=0)
    model = model.to("cuda", torch.bfloat16)
    crit = [Criterion("logo_clean", "Is the middle panel a clean logo on a plain background?", 0.5)]
    triplets = [(t.composite, t.logo, t.object) for t in (make_triplet(i, 64) for i in range(n))]
    rates = {}
    for b in (batch, 1):
        judge = QwenVLJudge(model, processor, crit, batch_size=b, min_pixels=384 * 128, max_pixels=384 * 128 * 2)
        judge.judge(triplets[:b])  # warm up
        rates[b] = n / timed_cuda(lambda: judge.judge(triplets))
    return rates[batch], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--only", default="a,b,c")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipping the GPU benchmarks")
        sys.exit(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    ratios = []
    if "a" in args.only:
        ours, base = generation(args.grids, args.batch)
        print(f"(a) generation: ours {ours:.0f} triplets/h (batch {args.batch}), diffusers one by one {base:.0f} "
              f"triplets/h", flush=True)
        ratios.append(f"generation {ours / base:.2f}x (goal >= 1.5x)")
    if "b" in args.only:
        seconds, mfu = training(args.train_batch)
        print(f"(b) LoRA training: {seconds:.2f} s/step at batch {args.train_batch}, MFU {mfu:.1%}", flush=True)
        ratios.append(f"training MFU {mfu:.1%} (goal >= 40%)")
    if "c" in args.only:
        batched, single = judging()
        print(f"(c) judging: {batched:.1f} images/s batched, {single:.1f} one by one", flush=True)
        ratios.append(f"judging {batched / single:.1f}x (goal >= 5x)")
    print("ratios: " + "; ".join(ratios))


if __name__ == "__main__":
    main()
