"""The tiny profile's learning claims (slow): the shipped base matches its recipe, and an adapter
trained on the 100 procedural seeds for the tiny config's 1,200 steps (~5 CPU minutes) decomposes
held-out composites better than the untrained base. Measured on 24 held-out triplets
(2026-12-06, the x-prediction routing-first base, rank 64, tasks 1 / 0.25 / 0.25, sigma centred
at +0.8, sampled in 8 steps): object in the footprint 10.78 -> 15.98 dB and whole object 12.87 ->
21.33 dB; the logo barely moves (10.03 -> 10.43 dB). The trivial baseline through the codec is
9.71 / 10.33 / 21.59 dB (logo / footprint / whole object) and the nearest seed 9.49 / 13.37 /
16.20: the footprint clears the first by 5.6 dB and the second by 2.6; the logo clears neither by
the 2 dB the tiny base's aims ask (docs/research-log.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from configs import load_config
from models.iclora.backbone import load_backbone
from models.iclora.tiny import TinySpec
from models.pretrain.base import RECIPE_FILE, RECIPES, PretrainRecipe, recipe_hash
from models.loop.runtime import REPO_ROOT, resolve_base

SHIPPED = REPO_ROOT / "models" / "tiny_base"
MIN_GAIN = 1.0  # dB over the untrained base on held-out object PSNR, in the footprint and whole (measured +7.97, +9.68)


def test_shipped_intrinsic_base_matches_its_recipe():
    """The intrinsic task's base: the shipped base's codec and text encoders, its transformer
    continued on the intrinsic world's single images (never a triplet)."""
    shipped = REPO_ROOT / "models" / "tiny_base_intrinsic"
    record = json.loads((shipped / RECIPE_FILE).read_text())
    assert record["recipe_hash"] == recipe_hash(TinySpec(prediction_type="sample"),
                                                PretrainRecipe(world="intrinsic", transformer_steps=2000))
    assert record["transformer_started_from"]["recipe_hash"] == json.loads((SHIPPED / RECIPE_FILE).read_text())["recipe_hash"]
    assert record["command"] == ("layerboot pretrain-tiny --out models/tiny_base_intrinsic --stage transformer "
                                 "--world intrinsic --transformer-steps 2000 --prediction-type sample --threads 2")
    assert Path(resolve_base(load_config("intrinsic_tiny").model.base)).resolve() == shipped
    for part in ("vae", "text_encoder", "text_encoder_2"):  # the same codec and text encoders, byte for byte
        for f in (SHIPPED / part).glob("*.safetensors"):
            assert (shipped / part / f.name).read_bytes() == f.read_bytes()


def test_shipped_base_matches_its_recipe():
    record = json.loads((SHIPPED / RECIPE_FILE).read_text())
    assert record["recipe_hash"] == recipe_hash(TinySpec(prediction_type="sample"), RECIPES["routing-first"])
    assert record["command"].startswith("layerboot pretrain-tiny") and "--recipe routing-first" in record["command"]
    assert load_backbone(str(SHIPPED), torch.float32, "cpu").prediction_type == "sample"  # x-prediction
    assert Path(resolve_base(load_config("tiny").model.base)).resolve() == SHIPPED
    weights = list(SHIPPED.rglob("*.safetensors"))
    assert weights and not list(SHIPPED.rglob("*.bin"))
    assert sum(p.stat().st_size for p in weights) < 40 * 2**20  # fp32: transformer 21.6 MB, VAE 12.1 MB


@pytest.mark.slow
def test_adapter_training_moves_held_out_decomposition(tmp_path):
    """Trained on the 100 seeds for the tiny config's 1,200 steps (cycle loss late), at its world
    level, the adapter decomposes held-out composites better than the untrained base, than the
    trivial baseline through the codec by 2 dB on the logo and on the object under it, and than
    memorising the seeds (the nearest seed's layers) on both. Measured 2026-12-07 at level 2 with 32
    T5 tokens a prompt, logo / object in the footprint: 11.81 / 19.64 dB against 9.32 / 10.15
    (codec-passed trivial) and 9.26 / 15.77 (nearest seed); 325 s of training. The logo's margin is
    seed-thin: training seed 1 gives 11.27, +1.95 (README, "World levels")."""
    from models.loop.dataio import read_triplets
    from models.domains.registry import domain_of
    from models.loop.evaluate import evaluate_decomposition
    from models.iclora.lora import load_adapter
    from models.loop.runtime import load_base
    from models.iclora.sample import Sampler
    from models.loop.seeding import seed_rows
    from models.iclora.train import train_adapter
    from storage.schema import to_table
    from storage.store import Store

    cfg = load_config("tiny")
    store = Store(str(tmp_path / "w"))
    store.commit_round(0, to_table(seed_rows(store, cfg, cfg.data.n_seeds, 24)))
    pool = read_triplets(store, store.pool(0))
    test = read_triplets(store, store.test_split(), footprint=True)
    seeds = list(range(len(test)))
    untrained = evaluate_decomposition(Sampler(load_base(cfg), cfg), test, seeds, domain_of(cfg))
    train_adapter(load_base(cfg), cfg, [t["panels"] for t in pool],
                  [t["prompt"] for t in pool], tmp_path / "adapter", seed=0)
    backbone = load_base(cfg)
    load_adapter(backbone, tmp_path / "adapter")
    trained = evaluate_decomposition(Sampler(backbone, cfg), test, seeds, domain_of(cfg), seed_triplets=pool)
    print(json.dumps({"untrained": untrained["model"], "trained": trained["model"],
                      "baseline_codec": trained["baseline_codec"], "baseline_nn": trained["baseline_nn"]}, indent=1))
    gain = {k: trained["model"][k] - untrained["model"][k] for k in ("logo_psnr", "object_psnr_footprint", "object_psnr")}
    assert gain["object_psnr_footprint"] >= MIN_GAIN and gain["object_psnr"] >= MIN_GAIN, gain
    for figure in ("logo_psnr", "object_psnr_footprint"):
        assert trained["model"][figure] >= trained["baseline_codec"][figure] + 2.0, figure
    assert trained["model"]["logo_psnr"] > trained["baseline_nn"]["logo_psnr"]
    assert trained["model"]["object_psnr_footprint"] >= trained["baseline_nn"]["object_psnr_footprint"] + 1.0
