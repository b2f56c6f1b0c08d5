"""How many Euler steps the tiny loop's sampling needs: a committed round's adapter decomposes the
held-out split of its workdir (what the evaluate stage measures) and generates the round's
candidates (judged per criterion), at each step count, with the seconds each took.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/sample_steps.py WORKDIR [ROUND] [STEPS ...]
"""

from __future__ import annotations

import sys
import time

import torch

from configs import load_config
from models.domains.registry import domain_of
from models.iclora.sample import Sampler
from models.loop.bootstrap import candidate_prompt, pass_rates
from models.loop.evaluate import evaluate_decomposition, held_out, seed_triplets
from models.loop.runtime import backbone_for, judge_for
from storage.store import Store

if __name__ == "__main__":
    workdir = sys.argv[1]
    rnd = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    counts = [int(a) for a in sys.argv[3:]] or [4, 8, 16]
    torch.set_num_threads(2)
    store = Store(workdir)
    base_cfg = load_config("tiny")
    test, seeds = held_out(base_cfg, store, base_cfg.bootstrap.eval_n)
    pool = seed_triplets(store)
    judge = judge_for(base_cfg)
    specs = [candidate_prompt(base_cfg, None, rnd, i) for i in range(base_cfg.bootstrap.candidates)]
    for steps in counts:
        cfg = load_config("tiny", [f"sample.steps={steps}"])
        sampler = Sampler(backbone_for(cfg, store.adapter_dir(rnd)), cfg)
        t0 = time.time()
        report = evaluate_decomposition(sampler, test, seeds, domain_of(cfg), seed_triplets=pool)
        t1 = time.time()
        made = sampler.generate([p for p, _ in specs], [s for _, s in specs], cfg.data.panel_size)
        t2 = time.time()
        verdicts = judge.judge(made, [p for p, _ in specs])
        rows = [{"judge_scores": v.scores} for v in verdicts]
        rates = pass_rates(rows, {c.name: c.threshold for c in judge.criteria})
        m = report["model"]
        print(f"steps {steps:3d}: held-out logo {m['logo_psnr']:.2f} / footprint {m['object_psnr_footprint']:.2f} / "
              f"object {m['object_psnr']:.2f} dB ({t1 - t0:.1f} s); candidates accepted "
              f"{sum(v.accepted for v in verdicts)}/{len(verdicts)}, pass "
              + ", ".join(f"{k} {round(v * len(verdicts))}" for k, v in rates.items()) + f" ({t2 - t1:.1f} s)", flush=True)
