"""Where a training step of the seeds adapter goes (the tiny default: rank 64, batch 8, the loop's
three tasks), phase by phase over STEPS steps after 5 warm-up ones: building the batch, the
forward pass and loss, backward, clipping + AdamW; then torch.profiler's top operators over 10
steps. Plain steps only (the cycle term is its own cost: `train.cycle.every`).

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/train_step_profile.py [STEPS] [KEY=VALUE ...]
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict

import torch

from configs import load_config
from models.iclora.encoded import TASKS, LatentCache, LatentPool, make_batch, vae_identity
from models.iclora.objective import FlowMatching
from models.iclora.train import prepare_adapter, task_prompts
from models.iclora.lora import trainable_parameters
from models.domains.registry import domain_of
from models.loop.runtime import load_base
from storage.hashing import derive_seed

from probe_args import split_overrides


def one_step(bb, enc, opt, params, objective, weights, prompts, gen, batch, clip, timings=None):
    marks = [time.perf_counter()]
    idx = torch.randint(len(enc), (batch,), generator=gen).tolist()
    task = TASKS[int(torch.multinomial(weights, 1, generator=gen))]
    x0, c, tokens = make_batch(bb, enc, idx, [task] * len(idx), prompts)
    marks.append(time.perf_counter())
    loss = objective.loss(x0, c, tokens, generator=gen)
    marks.append(time.perf_counter())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    marks.append(time.perf_counter())
    if timings is not None:
        for name, a, b in zip(("batch", "forward + loss", "backward", "clip + AdamW"), marks, marks[1:]):
            timings[name].append(b - a)


def fresh_adapter(cfg, n: int = 32):
    """The config's base with a fresh adapter in training mode, its optimizer and objective, and `n`
    procedural triplets encoded: what one_step needs (the probes that time a step share it)."""
    domain, size = domain_of(cfg), cfg.data.panel_size
    seeds = [domain.make(derive_seed(cfg.run.seed, "probe-profile", 0, i), size) for i in range(n)]
    bb = load_base(cfg)
    prepare_adapter(bb, cfg, None)
    params = trainable_parameters(bb.transformer)
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    objective = FlowMatching(bb, cfg.model.guidance_scale, cfg.train.timestep_sampling, logit_mean=cfg.train.sigma_logit_mean,
                             logit_std=cfg.train.sigma_logit_std)
    enc = LatentPool(bb, [t.panels for t in seeds], [t.prompt for t in seeds], LatentCache(None, vae_identity(bb), size),
                     None, size)
    enc.encode(desc="encode")
    bb.transformer.train()
    weights = torch.tensor([getattr(cfg.train.tasks, t.value) for t in TASKS])
    return bb, enc, opt, params, objective, weights, seeds


if __name__ == "__main__":
    args, overrides = split_overrides(sys.argv[1:])
    steps = int(args[0]) if args else 40
    torch.set_num_threads(2)
    cfg = load_config("tiny", overrides)
    bb, enc, opt, params, objective, weights, _ = fresh_adapter(cfg)
    prompts, gen = task_prompts(cfg), torch.Generator().manual_seed(0)
    run = lambda timings=None: one_step(bb, enc, opt, params, objective, weights, prompts, gen, cfg.train.batch_size,  # noqa: E731
                                        cfg.train.grad_clip, timings)
    for _ in range(5):
        run()
    timings = defaultdict(list)
    t0 = time.perf_counter()
    for _ in range(steps):
        run(timings)
    per_step = (time.perf_counter() - t0) / steps
    print(f"{per_step:.3f} s a step over {steps} (batch {cfg.train.batch_size}, rank {cfg.lora.rank}, "
          f"{len(params)} trainable tensors, {sum(p.numel() for p in params):,} numbers)")
    for name, ts in timings.items():
        print(f"  {name:15s} {sum(ts) / steps:.4f} s  {100 * sum(ts) / steps / per_step:5.1f}%")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=22))
