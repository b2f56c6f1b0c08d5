"""A base's text-to-image drawings beside what their prompts describe (docs/figures): held-out
drawing prompts (three single images of the world, each of its own seed, never a triplet), the
base sampled under the text-only mask with pretraining's drawing words, no adapter.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/base_drawings.py models/tiny_base docs/figures/base_drawings.png
"""

from __future__ import annotations

import sys

import torch

from configs import load_config
from models.iclora.sample import Sampler
from models.loop.runtime import load_base
from models.loop.viz import contact_sheet
from models.pretrain.base import DRAWING_PROMPTS, make_drawing
from storage.hashing import derive_seed

N = 6

if __name__ == "__main__":
    base, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(2)
    cfg = load_config("tiny", [f"model.base={base}"])
    sampler = Sampler(load_base(cfg), cfg)
    sampler.prompts = DRAWING_PROMPTS  # the base's own words: the prompt is the description itself
    drawings = [make_drawing(derive_seed(0, "drawing-heldout", i), cfg.data.panel_size) for i in range(N)]
    drawn = sampler.generate([d[1] for d in drawings], list(range(N)), cfg.data.panel_size)
    cells, labels = [], []
    for (truth, prompt), made in zip(drawings, drawn):
        cells += [truth, made]
        labels += [prompt.replace("left ", "").replace("middle ", "").replace("right ", ""), "drawn by the base"]
    contact_sheet(cells, labels, columns=2, scale=3).save(out)
    print("wrote", out)
