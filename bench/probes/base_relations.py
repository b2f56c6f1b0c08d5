"""What a base does before any adapter (docs/research-log.md): one-step x0 from sigma 1 (nothing of
the answer in the input, so the prediction is what the base makes of the kept panel and the
prompt), PSNR of the generated panels against the codec's decode of the truth, under the
decomposition mask, for each of pretraining's relations on held-out examples (what the base
learnt), and for the logo task's triplets at a world level with the loop's decomposition prompt
(what the adapter starts from). Bases side by side, one thread:

    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/base_relations.py models/tiny_base /tmp/xbase [LEVEL]
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch

from configs import load_config
from models.domains.logo_object.world import TOP_LEVEL, make_triplet
from models.iclora.backbone import load_backbone
from models.iclora.encoded import encode_grids, make_batch
from models.iclora.fill import decode_latents, to_velocity, unpack
from models.iclora.grid import Task
from models.iclora.objective import FlowMatching
from models.iclora.train import task_prompts
from models.pretrain.base import PRETRAIN_PROMPTS
from models.pretrain.data import NAMED_RELATIONS, make_example, make_example_of
from storage.hashing import derive_seed

S, N = 64, 96


def one_step_psnr(bb, enc, prompts: dict, cols: slice = slice(S, None)) -> list[float]:
    """Per grid: PSNR of the decomposition's generated panels (or the columns `cols` of the grid),
    x0 predicted in one step from sigma 1."""
    fm, out = FlowMatching(bb, guidance_scale=1.0), []
    with torch.no_grad():
        for i in range(0, len(enc.prompts), 16):
            idx = list(range(i, min(i + 16, len(enc.prompts))))
            x0, c, tok = make_batch(bb, enc, idx, [Task.DECOMPOSE] * len(idx), prompts)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7 + i))
            x0h = noise - fm.velocity(noise, torch.ones(len(idx)), c)  # x_1 = noise: x0 = x_1 - v
            x0h = torch.where(tok[..., None].bool(), x0h, x0)
            a, b = (decode_latents(bb, unpack(x, S, 3 * S)).clamp(-1, 1)[..., cols] for x in (x0h, x0))
            out += (10 * torch.log10(1 / ((a - b) / 2).pow(2).flatten(1).mean(1))).tolist()
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    bases = [a for a in sys.argv[1:] if not a.isdigit()]
    level = int(next((a for a in sys.argv[1:] if a.isdigit()), TOP_LEVEL))
    examples = [make_example(9_000_000 + i, S) for i in range(N * 4)] + [
        make_example_of(9_500_000 + i, S, r) for r in NAMED_RELATIONS for i in range(24)]
    cfg = load_config("tiny", [f"data.world_level={level}"])
    triplets = [make_triplet(derive_seed(cfg.run.seed, "synthetic", "test", i), S, level) for i in range(N)]
    for path in bases:
        bb = load_backbone(path, torch.float32, "cpu")
        enc = encode_grids(bb, [e.panels for e in examples], [e.prompt for e in examples])
        by = defaultdict(list)
        for e, p in zip(examples, one_step_psnr(bb, enc, PRETRAIN_PROMPTS)):
            by[e.relation].append(p)
        line = " ".join(f"{r} {sum(v) / len(v):.2f}" for r, v in sorted(by.items()))
        print(f"{path} [{bb.prediction_type}] relations: {line}", flush=True)
        enc = encode_grids(bb, [(t.composite, t.logo, t.object) for t in triplets], [t.prompt for t in triplets])
        task = one_step_psnr(bb, enc, task_prompts(cfg))
        logo = one_step_psnr(bb, enc, task_prompts(cfg), slice(S, 2 * S))
        # the same grids asked in pretraining's words for a cut-out: does the base's skill reach logos?
        worded = encode_grids(bb, [(t.composite, t.logo, t.object) for t in triplets],
                              [make_example_of(0, S, "cut_out").prompt] * len(triplets))
        cut = one_step_psnr(bb, worded, PRETRAIN_PROMPTS, slice(S, 2 * S))
        print(f"{path} [{bb.prediction_type}] logo task at level {level}: {sum(task) / len(task):.2f}; its logo panel "
              f"{sum(logo) / len(logo):.2f}, asked as a cut-out {sum(cut) / len(cut):.2f}", flush=True)
