"""What the logo PSNR rewards (docs/research-log.md): on held-out triplets at a world level, the
white panel (the trivial baseline) against oracle answers that know only the logo's colour: a
disc of that colour at the centre, and the seeds' average ink mask painted in it; beside them the
answer that knows nothing of the composite, the seeds' mean logo panel (what an MSE-fitted model
that learnt only the prior gives). If colour alone
clears the baseline by 2 dB, an adapter that misses it is not reading the composite's logo.

    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/logo_oracle.py [LEVEL]
"""

from __future__ import annotations

import sys

import numpy as np

from configs import load_config
from models.domains.logo_object.world import TOP_LEVEL, make_triplet
from storage.hashing import derive_seed

if __name__ == "__main__":
    level = int(sys.argv[1]) if len(sys.argv) > 1 else TOP_LEVEL
    cfg = load_config("tiny", [f"data.world_level={level}"])
    logos = np.stack([np.asarray(make_triplet(derive_seed(cfg.run.seed, "synthetic", "test", i), 64, level).logo, float) / 255
                      for i in range(48)])
    seed_logos = np.stack([np.asarray(make_triplet(derive_seed(cfg.run.seed, "synthetic", i), 64, level).logo, float) / 255
                           for i in range(cfg.data.n_seeds)])
    ink = (logos < 0.9).any(-1)
    colour = [lg[k].mean(0) if k.any() else np.ones(3) for lg, k in zip(logos, ink)]

    def psnr(pred) -> float:
        return float(np.mean([10 * np.log10(1 / np.mean((p - t) ** 2)) for p, t in zip(pred, logos)]))

    yy, xx = np.mgrid[:64, :64]
    disc = np.hypot(yy - 31.5, xx - 31.5) < 22
    mask = (seed_logos < 0.9).any(-1).mean(0)[..., None]  # the seeds' ink, averaged: where a logo tends to be
    print(f"level {level}: ink {ink.mean():.1%} of the logo panel; PSNR dB: white panel {psnr(np.ones_like(logos)):.2f}, "
          f"disc of the logo's colour {psnr([np.where(disc[..., None], c, 1.0) for c in colour]):.2f}, "
          f"seeds' mean ink in the logo's colour {psnr([(1 - mask) + c * mask for c in colour]):.2f}, "
          f"the seeds' mean logo panel {psnr([seed_logos.mean(0)] * len(logos)):.2f}")
