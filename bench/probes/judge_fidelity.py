"""How close to its truth must a composite be for the judge to accept the triplet? True triplets
of the world, their composite degraded towards what a soft model gives (Gaussian blur of sigma s
pixels, or Gaussian noise of std n, at 64 px), judged with their true layers by the unchanged
judge: acceptance and `composite_match` passes against the composite's PSNR.

    .venv/bin/python bench/probes/judge_fidelity.py [N] [KEY=VALUE ...]
"""

from __future__ import annotations

import sys

import numpy as np

from configs import load_config
from models.domains.registry import domain_of
from models.judge.image_ops import gaussian, to_float, to_image
from models.loop.runtime import judge_for
from storage.hashing import derive_seed

from probe_args import split_overrides

if __name__ == "__main__":
    args, overrides = split_overrides(sys.argv[1:])
    n = int(args[0]) if args else 40
    cfg = load_config("tiny", overrides)
    domain, size = domain_of(cfg), cfg.data.panel_size
    truth = [domain.make(derive_seed(cfg.run.seed, "probe-fidelity", i), size) for i in range(n)]
    judge = judge_for(cfg)
    rng = np.random.default_rng(0)
    ways = [("as drawn", lambda x: x)] + [(f"blur {s}", lambda x, s=s: gaussian(x, s)) for s in (0.5, 0.75, 1.0, 1.5)] + [
        (f"noise {v}", lambda x, v=v: np.clip(x + rng.normal(0, v, x.shape), 0, 1)) for v in (0.01, 0.02, 0.04, 0.08)]
    for name, degrade in ways:
        composites = [to_image(degrade(to_float(t.panels[0]))) for t in truth]
        errors = [np.mean((to_float(c) - to_float(t.panels[0])) ** 2) for c, t in zip(composites, truth)]
        psnr = float(np.mean([10 * np.log10(1 / max(e, 1e-10)) for e in errors]))
        verdicts = judge.judge([(c, t.panels[1], t.panels[2]) for c, t in zip(composites, truth)], [""] * n)
        match = sum(v.scores["composite_match"] >= 0.5 for v in verdicts)
        print(f"{name:>10}: composite {psnr:5.2f} dB; accepted {sum(v.accepted for v in verdicts):2d}/{n}, "
              f"composite_match {match:2d}/{n}", flush=True)
