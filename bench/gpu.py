"""GPU throughput at real size (random weights from the published configs, bf16), side by side,
in one run of about 6-7 minutes on an H100/H200 (estimated from the FLOP counts; not yet run on one):

  (a) candidate generation, 1536x512 three-panel grids, 28 steps: diffusers' FluxFillPipeline one
      grid at a time vs our batched sampler (cached prompt embeddings, one forward per step for a
      batch), and our sampler with each speed option: `sample.cache` (First Block Cache),
      `model.compile` (regional torch.compile), `model.fuse_qkv`; s per triplet and peak memory.
  (b) LoRA training (rank 32, gradient checkpointing): s per step and model FLOPs utilisation
      (6 * params * tokens per sample; recomputation not counted), against PEAK_BF16_TFLOPS.
  (c) Qwen2.5-VL-7B-size judging: triplets/s batched vs one by one.

    .venv/bin/python bench/gpu.py [--grids 8] [--batch 4] [--train-batch 1] [--cache 0.12] [--only a,b,c]

Skips (exit 0, says why) without CUDA. Prints one table and the ratios last.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}  # dense, per GPU (spec sheet)


def timed_cuda(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30


def generation(n_grids: int, batch: int, cache: float, steps: int = 28, size: int = 512) -> list[tuple[str, float, float]]:
    """[(variant, s per triplet, peak GiB)]."""
    from diffusers import FluxFillPipeline
    from PIL import Image

    from models.iclora.fill import decode_latents, fill_condition, latent_image_ids, unpack
    from models.iclora.grid import Task, task_mask
    from models.iclora.objective import Conditioning, FlowMatching
    from models.pretrain.realsize import random_prompt, real_size_backbone
    from models.iclora.sample import compiled_blocks, first_block_cache, fuse_qkv

    bb = real_size_backbone()
    mask = task_mask(Task.GENERATE, size).to("cuda")  # [1, 1, s, 3s]
    img_ids = latent_image_ids(size, 3 * size, 8, device="cuda", dtype=bb.dtype)
    fm = FlowMatching(bb, guidance_scale=30.0)
    tokens = img_ids.shape[0]

    @torch.no_grad()
    def ours(n: int):
        for i in range(0, n, batch):
            b = min(batch, n - i)
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
    def diffusers_one_by_one(n: int):
        embeds, pooled, _ = random_prompt(1)
        for _ in range(n):
            pipe(image=blank, mask_image=mask_image, prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                 height=size, width=3 * size, num_inference_steps=steps, guidance_scale=30.0,
                 max_sequence_length=bb.max_sequence_length, output_type="pt")

    def measure(name: str, fn, n: int, warm: int) -> tuple[str, float, float]:
        fn(warm)  # kernels, the allocator, and for compile the graphs
        torch.cuda.reset_peak_memory_stats()
        seconds = timed_cuda(lambda: fn(n)) / n
        row = (name, seconds, peak_gib())
        print(f"  {name:<38} {seconds:6.2f} s/triplet   peak {row[2]:5.1f} GiB", flush=True)
        return row

    rows = [measure("FluxFillPipeline, one grid at a time", diffusers_one_by_one, max(2, n_grids // 2), 1),
            measure(f"ours, batch {batch}", ours, n_grids, batch)]

    def with_cache(n):
        with first_block_cache(bb, cache):
            ours(n)

    rows.append(measure(f"ours + sample.cache={cache}", with_cache, n_grids, batch))

    def with_compile(n):
        with compiled_blocks(bb):
            ours(n)

    rows.append(measure("ours + model.compile (regional)", with_compile, n_grids, batch))
    fuse_qkv(bb)  # last: it changes the base (no adapter here, so nothing is merged)
    rows.append(measure("ours + model.fuse_qkv", ours, n_grids, batch))
    del pipe, bb
    torch.cuda.empty_cache()
    return rows


def training(batch: int, steps: int = 5, size: int = 512) -> tuple[float, float, float]:
    from models.iclora.backbone import count_parameters
    from models.iclora.fill import latent_image_ids
    from models.iclora.lora import add_lora, trainable_parameters
    from models.iclora.grid import Task, token_mask
    from models.iclora.objective import Conditioning, FlowMatching
    from models.pretrain.realsize import random_prompt, real_size_backbone

    bb = real_size_backbone()
    add_lora(bb.transformer, rank=32, alpha=32, gradient_checkpointing=True)
    bb.transformer.train()
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
    torch.cuda.reset_peak_memory_stats()
    seconds = timed_cuda(lambda: [step() for _ in range(steps)]) / steps
    flops = 6 * count_parameters(bb.transformer) * batch * (n_tokens + embeds.shape[1])
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), 989.4) * 1e12
    memory = peak_gib()
    del bb, opt
    torch.cuda.empty_cache()
    return seconds, flops / seconds / peak, memory


def judging(n: int = 64, batch: int = 16) -> tuple[float, float, float]:
    from models.judge.base import Criterion
    from models.judge.qwen import QwenVLJudge
    from models.pretrain.realsize import real_size_judge
    from models.domains.logo_object.world import make_triplet

    model, processor = real_size_judge()
    crit = [Criterion("logo_clean", "Is the middle panel a clean logo on a plain background?", 0.5)]
    triplets = [(t.composite, t.logo, t.object) for t in (make_triplet(i, 64) for i in range(n))]
    rates = {}
    torch.cuda.reset_peak_memory_stats()
    for b in (batch, 1):
        judge = QwenVLJudge(model, processor, crit, batch_size=b, min_pixels=384 * 128, max_pixels=384 * 128 * 2,
                            max_reason_tokens=8)
        judge.judge(triplets[:b])  # warm up
        rates[b] = n / timed_cuda(lambda: judge.judge(triplets))
    return rates[batch], rates[1], peak_gib()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=1)
    ap.add_argument("--cache", type=float, default=0.12, help="First Block Cache threshold for (a)")
    ap.add_argument("--only", default="a,b,c")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: skipping the GPU benchmarks")
        sys.exit(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    t_start = time.time()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    ratios = []
    if "a" in args.only:
        print("(a) generation, 1536x512 grid, 28 steps, guidance 30:", flush=True)
        rows = generation(args.grids, args.batch, args.cache)
        base = rows[0][1]
        ratios += [f"{name}: {base / s:.2f}x" for name, s, _ in rows[1:]]
    if "b" in args.only:
        seconds, mfu, memory = training(args.train_batch)
        print(f"(b) LoRA training: {seconds:.2f} s/step at batch {args.train_batch}, MFU {mfu:.1%}, peak {memory:.1f} GiB",
              flush=True)
        ratios.append(f"training MFU {mfu:.1%} (goal >= 40%)")
    if "c" in args.only:
        batched, single, memory = judging()
        print(f"(c) judging: {batched:.1f} triplets/s batched (16), {single:.1f} one by one, peak {memory:.1f} GiB",
              flush=True)
        ratios.append(f"judging {batched / single:.1f}x (goal >= 5x)")
    print(f"vs FluxFillPipeline one by one -> {'; '.join(ratios)}; total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
