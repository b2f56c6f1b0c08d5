"""Does a seeds adapter read the composite, or recall the seeds? (docs/research-log.md)

The same adapter decomposes 24 of its own training seeds and 24 held-out triplets, at 1 step and at
the config's steps; for each it also reports how far the logo panel's ink colour (pixels away from
white) is from the truth's, and from the ink of the seed it learnt nearest (RGB distance, 0-255).

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/adapter_memorises.py WORKDIR ADAPTER [KEY=VALUE ...]

WORKDIR is an adapter_on_base.py store (its round 0 holds the seeds, its test split the held-out).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from configs import load_config
from models.domains.registry import domain_of
from models.iclora.lora import load_adapter
from models.iclora.sample import Sampler
from models.loop.dataio import read_triplets
from models.loop.runtime import load_base
from storage.store import Store


def ink(img) -> np.ndarray:
    """Mean colour of the pixels that are not near-white (the logo's ink); white if none."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    m = a.min(axis=2) < 200
    return a[m].mean(axis=0) if m.any() else np.full(3, 255.0)


if __name__ == "__main__":
    work, adapter = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(2)
    cfg = load_config("tiny", sys.argv[3:])
    store = Store(str(work))
    seeds = read_triplets(store, store.pool(0), footprint=True)
    sets = {"seeds": seeds[:24], "held-out": read_triplets(store, store.test_split(), footprint=True)[:24]}
    seed_inks = np.stack([ink(t["panels"][1]) for t in seeds])
    backbone = load_base(cfg)
    load_adapter(backbone, adapter)
    domain = domain_of(cfg)
    sampler = Sampler(backbone, cfg)  # once: a Sampler may fuse the backbone's projections (model.fuse_qkv)
    for steps in (1, cfg.sample.steps):
        sampler.steps = steps
        for name, items in sets.items():
            made = sampler.decompose([t["panels"][0] for t in items], list(range(len(items))))
            m = domain.metrics(made, items)
            made_ink = np.stack([ink(p[0]) for p in made])
            true_ink = np.stack([ink(t["panels"][1]) for t in items])
            nearest = seed_inks[np.argmin(((made_ink[:, None] - seed_inks[None]) ** 2).sum(-1), axis=1)]
            print(json.dumps({"steps": steps, "set": name, "logo_psnr": m["logo_psnr"],
                              "object_psnr_footprint": m["object_psnr_footprint"],
                              "ink_error_vs_truth": round(float(np.linalg.norm(made_ink - true_ink, axis=1).mean()), 1),
                              "ink_error_vs_nearest_seed": round(float(np.linalg.norm(made_ink - nearest, axis=1).mean()), 1),
                              "truth_ink_spread": round(float(np.linalg.norm(true_ink - true_ink.mean(0), axis=1).mean()), 1)}),
                  flush=True)
