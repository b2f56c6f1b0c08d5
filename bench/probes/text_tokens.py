"""What the text stream's padding costs a training step: the tiny base pads every prompt to its T5
tokenizer's 64 tokens (FluxFillPipeline's `max_sequence_length`), while the loop's prompts need at
most 28 (mean 16); the joint attention then runs 64 text + 48 image tokens. Steps of the seeds
adapter (the tiny default: rank 64, batch 8, the loop's three tasks) timed at each length in turn,
ROUNDS times, so the machine's drift falls on both alike.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/text_tokens.py [STEPS] [LENGTHS=64,32] [ROUNDS=3]
"""

from __future__ import annotations

import sys
import time

import torch

from train_step_profile import fresh_adapter, one_step

from configs import load_config
from models.iclora.train import task_prompts

if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    steps = int(next((a for a in sys.argv[1:] if "=" not in a), 20))
    lengths = [int(n) for n in args.get("LENGTHS", "64,32").split(",")]
    torch.set_num_threads(2)
    cfg = load_config("tiny", ["model.max_sequence_length=null"])  # the base's 64, cut below
    bb, enc, opt, params, objective, weights, seeds = fresh_adapter(cfg)
    tok, prompts = bb.tokenizer_2, task_prompts(cfg)
    longest = max(len(tok(p)["input_ids"]) for p in [t.prompt for t in seeds] + list(prompts.values()))
    print(f"longest prompt here: {longest} T5 tokens; the base pads to {bb.max_sequence_length}")
    gen = torch.Generator().manual_seed(0)
    seconds = {n: [] for n in lengths}
    for _ in range(int(args.get("ROUNDS", 3))):
        for n in lengths:
            bb.max_sequence_length = n
            bb.prompt_cache.clear()
            for _ in range(3):  # warm-up at this length (the prompts re-encoded)
                one_step(bb, enc, opt, params, objective, weights, prompts, gen, cfg.train.batch_size, 1.0)
            t0 = time.perf_counter()
            for _ in range(steps):
                one_step(bb, enc, opt, params, objective, weights, prompts, gen, cfg.train.batch_size, 1.0)
            seconds[n].append((time.perf_counter() - t0) / steps)
    ref = min(seconds[lengths[0]])
    for n in lengths:
        best = min(seconds[n])
        print(f"{n:3d} text tokens: {best:.3f} s a step (best of {len(seconds[n])}; all {[round(s, 3) for s in seconds[n]]}), "
              f"{best / ref:.2f}x of {lengths[0]}")
