"""A base's seeds adapter (docs/research-log.md): the adapter of
tests/test_learning.py (the tiny config's steps, 24 held-out triplets), trained and evaluated on
the base at BASE instead of the shipped one; prints untrained, trained and the baselines.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/adapter_on_base.py /tmp/base384 /tmp/adapter384 [STEPS] [KEY=VALUE ...]

KEY=VALUE are config overrides as `--set` takes them, e.g. data.world_level=0; THREADS=N sets
torch's CPU threads (default 2); SEED=N the training seed (default 0, the learning test's).
PERMUTE=1 trains on each seed under all six orders of its RGB channels (the same order on all
three panels: the relation holds exactly and white stays white), a colour augmentation for
decomposition-only probes (the triplets' own prompts, which name colours, are not permuted with
them).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from configs import load_config
from models.iclora.lora import load_adapter
from models.iclora.sample import Sampler
from models.iclora.train import train_adapter
from models.loop.dataio import read_triplets
from models.domains.registry import domain_of
from models.loop.evaluate import evaluate_decomposition
from models.loop.runtime import load_base
from models.loop.seeding import seed_rows
from storage.schema import to_table
from storage.store import Store

if __name__ == "__main__":
    base, out = sys.argv[1], Path(sys.argv[2])
    steps = int(sys.argv[3]) if len(sys.argv) > 3 and "=" not in sys.argv[3] else None  # the config's unless given
    pairs = [a.split("=", 1) for a in sys.argv[3:] if "=" in a]
    probe = {k: int(v) for k, v in pairs if k in ("THREADS", "PERMUTE", "SEED")}  # the rest are config overrides
    sets = [f"{k}={v}" for k, v in pairs if k not in probe]
    torch.set_num_threads(probe.get("THREADS", 2))
    cfg = load_config("tiny", [f"model.base={base}"] + ([f"train.steps={steps}"] if steps else []) + sets)
    store = Store(str(out / "w"))
    store.commit_round(0, to_table(seed_rows(store, cfg, cfg.data.n_seeds, 24)))
    pool = read_triplets(store, store.pool(0))
    test = read_triplets(store, store.test_split(), footprint=True)
    seeds = list(range(len(test)))
    t0 = time.time()
    untrained = evaluate_decomposition(Sampler(load_base(cfg), cfg), test, seeds, domain_of(cfg))
    print("untrained", json.dumps(untrained["model"]), round(time.time() - t0), "s", flush=True)
    t0 = time.time()
    panels, prompts = [t["panels"] for t in pool], [t["prompt"] for t in pool]
    if probe.get("PERMUTE"):
        orders = list(itertools.permutations(range(3)))
        panels = [tuple(Image.merge("RGB", [p.split()[k] for k in order]) for p in ps) for ps in panels for order in orders]
        prompts = [p for p in prompts for _ in orders]
    train_adapter(load_base(cfg), cfg, panels, prompts, out / "adapter", seed=probe.get("SEED", 0))
    print("trained in", round(time.time() - t0), "s", flush=True)
    backbone = load_base(cfg)
    load_adapter(backbone, out / "adapter")
    trained = evaluate_decomposition(Sampler(backbone, cfg), test, seeds, domain_of(cfg), seed_triplets=pool)
    print(json.dumps({"untrained": untrained["model"], "trained": trained["model"],
                      "baseline_codec": trained["baseline_codec"], "baseline_nn": trained["baseline_nn"]}, indent=1),
          flush=True)
