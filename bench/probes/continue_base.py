"""A base's transformer continued on a curriculum given on the command line (docs/research-log.md):
OUT must hold a copy of a trained base (x-prediction); each STAGE is RELATIONS:STEPS[:DRAWING_SHARE]
with RELATIONS comma-separated (pretraining's relations, models/pretrain/data.py), trained in order
like `layerboot pretrain-tiny --recipe`'s curricula (lr 1e-3, split masks, checkpoints every 500
steps into OUT: run it again to continue). A named recipe in models/pretrain/base.py RECIPES is
what ships; this is for trying one first.

    cp -r models/tiny_base /tmp/b && OMP_NUM_THREADS=2 .venv/bin/python bench/probes/continue_base.py /tmp/b alpha_over:2000 copy,shift,alpha_over,cut_out:1000:0.35
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from models.iclora.tiny import TinySpec
from models.pretrain.base import RECIPES, Stage, pretrain_tiny


def stage(text: str) -> Stage:
    relations, steps, *share = text.split(":")
    return Stage(tuple(relations.split(",")), int(steps), float(share[0]) if share else 0.0)


if __name__ == "__main__":
    torch.set_num_threads(2)
    out, stages = sys.argv[1], tuple(stage(a) for a in sys.argv[2:])
    recipe = dataclasses.replace(RECIPES["routing-first"], curriculum=stages, transformer_steps=sum(s.steps for s in stages))
    record = pretrain_tiny(out, TinySpec(prediction_type="sample"), recipe, ("transformer",),
                           command="bench/probes/continue_base.py " + " ".join(sys.argv[1:]))
    print(record["results"]["transformer"], flush=True)
