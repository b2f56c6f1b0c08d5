"""The tiny profile's learning claims (slow): starting from the shipped base, an adapter trained
on the 100 procedural seeds for the tiny config's steps (under 5 CPU minutes) decomposes held-out
composites better than the trivial baseline through the codec, by >= 2 dB on the logo panel and
inside the logo footprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from configs import load_config
from models.backbone import TinySpec
from models.pretrain import RECIPE_FILE, PretrainRecipe, recipe_hash
from models.runtime import REPO_ROOT, resolve_base

SHIPPED = REPO_ROOT / "models" / "tiny_base"


def test_shipped_base_matches_its_recipe():
    record = json.loads((SHIPPED / RECIPE_FILE).read_text())
    assert record["recipe_hash"] == recipe_hash(TinySpec(), PretrainRecipe())
    assert record["command"].startswith("layerboot pretrain-tiny")
    assert Path(resolve_base(load_config("tiny").model.base)).resolve() == SHIPPED
    weights = list(SHIPPED.rglob("*.safetensors"))
    assert weights and not list(SHIPPED.rglob("*.bin"))
    assert sum(p.stat().st_size for p in weights) < 40 * 2**20  # fp32: transformer 21.6 MB, VAE 12.1 MB


@pytest.mark.slow
def test_adapter_beats_trivial_baseline_on_held_out(tmp_path):
    from models.dataio import read_triplets
    from models.evaluate import evaluate_decomposition
    from models.backbone import load_adapter
    from models.runtime import load_base
    from models.sample import Sampler
    from models.seeding import seed_rows
    from models.train import train_adapter
    from storage.schema import to_table
    from storage.store import Store

    cfg = load_config("tiny")
    store = Store(str(tmp_path / "w"))
    store.commit_round(0, to_table(seed_rows(store, cfg, cfg.data.n_seeds, 24)))
    pool = read_triplets(store, store.pool(0))
    test = read_triplets(store, store.test_split(), footprint=True)
    result = train_adapter(load_base(cfg), cfg, [(t["composite"], t["logo"], t["object"]) for t in pool],
                           [t["prompt"] for t in pool], tmp_path / "adapter", seed=0)
    backbone = load_base(cfg)
    load_adapter(backbone, tmp_path / "adapter")
    report = evaluate_decomposition(Sampler(backbone, cfg), test, list(range(len(test))))
    print(json.dumps(report, indent=1))
    model, baseline = report["model"], report["baseline_codec"]  # like for like: both through the codec
    assert model["logo_psnr"] >= baseline["logo_psnr"] + 2.0
    assert model["object_psnr_footprint"] >= baseline["object_psnr_footprint"] + 2.0
