"""Spike (docs/research-log.md, "Width, not steps" and "x-prediction"): the shipped tiny base's
codec and text encoders with a fresh transformer of HEADS heads (32 wide each; default 12 = width
384) predicting PRED (velocity, default, or sample = x-prediction), pretrained by the shipped
recipe's transformer stage (logo world, never a triplet) for STEPS steps, into OUT. It checkpoints
every 250 steps into OUT/checkpoint-transformer: run the same command again to continue (with the
same HEADS and PRED: the checkpoint records the recipe only).

    OMP_NUM_THREADS=2 nohup .venv/bin/python bench/probes/base_width.py /tmp/base384 5000 2 > /tmp/base384.log 2>&1 &
    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/probes/base_width.py /tmp/base192x 1500 1 6 sample > /tmp/base192x.log 2>&1 &

Then the loop on it: `layerboot run --config tiny --set model.base=OUT --rounds 1`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from models.iclora.backbone import load_backbone, save_backbone
from models.iclora.tiny import TinySpec, build_tiny
from models.pretrain.base import TRANSFORMER_CHECKPOINT, PretrainRecipe, pretrain_transformer

if __name__ == "__main__":
    out, steps, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    heads = int(sys.argv[4]) if len(sys.argv) > 4 else 12
    pred = sys.argv[5] if len(sys.argv) > 5 else "velocity"
    torch.set_num_threads(threads)
    if not (out / TRANSFORMER_CHECKPOINT).exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree("models/tiny_base", out)
    backbone = load_backbone(str(out), torch.float32, "cpu")
    spec = TinySpec(num_attention_heads=heads, prediction_type=pred)
    backbone = dataclasses.replace(backbone, transformer=build_tiny(spec, seed=0).transformer, prediction_type=pred)
    t0 = time.time()
    result = pretrain_transformer(backbone, PretrainRecipe(transformer_steps=steps), checkpoint=out / TRANSFORMER_CHECKPOINT,
                                  checkpoint_every=250, log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
    shutil.rmtree(out / TRANSFORMER_CHECKPOINT)
    save_backbone(backbone, out)  # the whole base: the transformer, and the prediction type in the scheduler's config
    (out / "SPIKE.json").write_text(json.dumps({"width": 32 * heads, "prediction_type": pred, "steps": steps, "results": result,
                                                "seconds": round(time.time() - t0, 1)}))
    print("done", result, flush=True)
