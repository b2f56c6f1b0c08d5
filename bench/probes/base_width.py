"""Spike (docs/learning-notes.md, "Width, not steps"): the shipped tiny base's codec and text
encoders with a fresh transformer at width 384 (12 heads), pretrained by the shipped recipe's
transformer stage (logo world, never a triplet) for STEPS steps, into OUT. It checkpoints every 250
steps into OUT/checkpoint-transformer: run the same command again to continue.

    OMP_NUM_THREADS=2 nohup .venv/bin/python bench/probes/base_width.py /tmp/base384 5000 2 > /tmp/base384.log 2>&1 &

Then, for issue 13's figure: `layerboot run --config tiny --set model.base=OUT --rounds 1`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from models.iclora.backbone import load_backbone
from models.iclora.tiny import TinySpec, build_tiny
from models.pretrain.base import TRANSFORMER_CHECKPOINT, PretrainRecipe, pretrain_transformer

if __name__ == "__main__":
    out, steps, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    if not (out / TRANSFORMER_CHECKPOINT).exists():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree("models/tiny_base", out)
    backbone = load_backbone(str(out), torch.float32, "cpu")
    backbone = dataclasses.replace(backbone, transformer=build_tiny(TinySpec(num_attention_heads=12), seed=0).transformer)
    t0 = time.time()
    result = pretrain_transformer(backbone, PretrainRecipe(transformer_steps=steps), checkpoint=out / TRANSFORMER_CHECKPOINT,
                                  checkpoint_every=250, log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
    shutil.rmtree(out / "transformer")
    backbone.transformer.save_pretrained(str(out / "transformer"), safe_serialization=True)
    shutil.rmtree(out / TRANSFORMER_CHECKPOINT)
    (out / "SPIKE.json").write_text(json.dumps({"width": 384, "steps": steps, "results": result,
                                                "seconds": round(time.time() - t0, 1)}))
    print("done", result, flush=True)
