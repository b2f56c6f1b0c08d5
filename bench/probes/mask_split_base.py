"""Which masks should pretraining's batches train under? (docs/research-log.md, "What stops the
copy in the pretraining mix", 2026-12-06.) A fresh width-192 x-prediction transformer on the shipped
codec and text encoders, pretrained STEPS steps on the shipped mix (relations and drawings, never a
triplet) with PretrainRecipe.masks = MASKS ("every": the shipped bases; "split": relations only
under the masks that keep a panel, drawings only under text-to-image), then the one-step x0 PSNR at
sigma 1 per relation and on the logo task at LEVEL (bench/probes/base_relations.py), into OUT.
Then bench/probes/adapter_on_base.py OUT ... trains the seeds adapter on it.

    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/probes/mask_split_base.py /tmp/split 2000 split 1 1 > /tmp/split.log &
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from copy_first_base import report  # noqa: E402  (a sibling probe)
from configs import load_config
from models.domains.logo_object.world import make_triplet
from models.iclora.backbone import load_backbone, save_backbone
from models.iclora.tiny import TinySpec, build_tiny
from models.pretrain.base import PretrainRecipe, pretrain_transformer
from models.pretrain.data import make_example
from storage.hashing import derive_seed

S = 64

if __name__ == "__main__":
    out, steps, masks, level, threads = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bb = load_backbone("models/tiny_base", torch.float32, "cpu")
    bb = dataclasses.replace(bb, transformer=build_tiny(TinySpec(prediction_type="sample"), seed=0).transformer,
                             prediction_type="sample")
    cfg = load_config("tiny", [f"data.world_level={level}"])
    held = [make_example(9_000_000 + i, S) for i in range(240)]
    triplets = [make_triplet(derive_seed(cfg.run.seed, "synthetic", "test", i), S, level) for i in range(48)]
    t0 = time.time()
    recipe = PretrainRecipe(transformer_steps=steps, transformer_examples=3000, drawing_examples=1500, masks=masks)
    pretrain_transformer(bb, recipe, log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
    report(bb, f"after {steps} mixed steps, masks {masks}:", held, triplets, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_backbone(bb, out)
    print("saved", out, round(time.time() - t0), "s", flush=True)
