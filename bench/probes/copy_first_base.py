"""Does an x-prediction base that learns routing first copy, and does its adapter then decompose?
(docs/research-log.md, "A copy-first base" was velocity: its copy stalled at ~16 dB; x-prediction
reaches 23 dB on the copy probe.) A fresh width-192 x-prediction transformer on the shipped codec
and text encoders: A_STEPS steps on pretraining's routing relations only (copy, shift, alpha_over:
the answer is in another panel, moved or laid over), then B_STEPS of the shipped mix (never a
triplet), into OUT; after each stage the one-step x0 PSNR at sigma 1 per relation and on the logo
task at LEVEL (bench/probes/base_relations.py). Then bench/probes/adapter_on_base.py OUT ...

    OMP_NUM_THREADS=2 nohup .venv/bin/python bench/probes/copy_first_base.py /tmp/copyfirst 1500 1500 1 2 > /tmp/copyfirst.log &

An optional last argument names stage A's relations instead (comma-separated), e.g. `copy` alone
(relations outside pretraining's mix, e.g. `cut_out`, are drawn by name: an equal share each);
LR=... in the environment sets stage A's learning rate (default 5e-4, pretraining's); MASKS=kept
trains stage A under the decompose and compose masks only (default: those and text-to-image's).
INIT=BASE starts stage A from BASE's transformer (an x-prediction base) instead of fresh weights.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from base_relations import one_step_psnr  # noqa: E402  (a sibling probe)
from configs import load_config
from models.domains.logo_object.world import make_triplet
from models.iclora.backbone import load_backbone, save_backbone
from models.iclora.encoded import KEPT_TASKS, TASKS, encode_grids, make_batch
from models.iclora.objective import FlowMatching
from models.iclora.tiny import TinySpec, build_tiny
from models.iclora.train import optimizer_step, task_prompts
from models.pretrain.base import PRETRAIN_PROMPTS, PretrainRecipe, pretrain_transformer
from models.pretrain.data import RELATIONS, make_example, make_example_of
from storage.hashing import derive_seed

ROUTING = ("copy", "shift", "alpha_over")
S = 64


def report(bb, stage: str, held, triplets, cfg) -> None:
    enc = encode_grids(bb, [e.panels for e in held], [e.prompt for e in held])
    by = defaultdict(list)
    for e, p in zip(held, one_step_psnr(bb, enc, PRETRAIN_PROMPTS)):
        by[e.relation].append(p)
    enc = encode_grids(bb, [(t.composite, t.logo, t.object) for t in triplets], [t.prompt for t in triplets])
    task = one_step_psnr(bb, enc, task_prompts(cfg))
    print(time.strftime("%H:%M:%S"), stage, " ".join(f"{r} {sum(v) / len(v):.2f}" for r, v in sorted(by.items())),
          f"| logo task {sum(task) / len(task):.2f}", flush=True)


if __name__ == "__main__":
    out, a_steps, b_steps, level, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    routing_relations = tuple(sys.argv[6].split(",")) if len(sys.argv) > 6 else ROUTING
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    bb = load_backbone("models/tiny_base", torch.float32, "cpu")
    spec = TinySpec(prediction_type="sample")
    bb = dataclasses.replace(bb, transformer=build_tiny(spec, seed=0).transformer, prediction_type="sample")
    if os.environ.get("INIT"):
        bb = dataclasses.replace(bb, transformer=load_backbone(os.environ["INIT"], torch.float32, "cpu").transformer)
    cfg = load_config("tiny", [f"data.world_level={level}"])
    held = [make_example(9_000_000 + i, S) for i in range(240)] + [make_example_of(9_500_000 + i, S, "cut_out") for i in range(24)]
    triplets = [make_triplet(derive_seed(cfg.run.seed, "synthetic", "test", i), S, level) for i in range(48)]

    # stage A: routing relations only (rejection-sampled from pretraining's own example stream)
    named = [r for r in routing_relations if r not in RELATIONS]  # drawn by name, an equal share each
    routing, i = [], 0
    while len(routing) < 2000 * (len(routing_relations) - len(named)) // len(routing_relations):
        e = make_example(derive_seed(0, "transformer", i), S)
        i += 1
        if e.relation in routing_relations:
            routing.append(e)
    routing += [make_example_of(derive_seed(0, "transformer", r, j), S, r) for r in named
                for j in range(2000 // len(routing_relations))]
    enc = encode_grids(bb, [e.panels for e in routing], [e.prompt for e in routing])
    tr = bb.transformer
    tr.train().requires_grad_(True)
    fm = FlowMatching(bb, guidance_scale=1.0, resolution_shift=False)
    lr = float(os.environ.get("LR", "5e-4"))
    masks = KEPT_TASKS if os.environ.get("MASKS") == "kept" else TASKS
    opt = torch.optim.AdamW(tr.parameters(), lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    t0, losses = time.time(), []
    for step in range(a_steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100)
        idx = torch.randint(len(routing), (8,), generator=gen).tolist()
        tasks = [masks[k] for k in torch.randint(len(masks), (8,), generator=gen).tolist()]
        x0, c, tok = make_batch(bb, enc, idx, tasks, PRETRAIN_PROMPTS)
        loss = fm.loss(x0, c, tok, generator=gen)
        optimizer_step(opt, loss, tr.parameters(), 1.0)
        losses.append(loss.item())
        if (step + 1) % 500 == 0:
            print(time.strftime("%H:%M:%S"), f"A step {step + 1}: loss {sum(losses[-200:]) / 200:.4f}",
                  f"{(time.time() - t0) / (step + 1):.2f} s/step", flush=True)
    tr.eval().requires_grad_(False)
    report(bb, f"after A ({a_steps} steps of {','.join(routing_relations)}):", held, triplets, cfg)

    # stage B: the shipped mix, from stage A's weights
    if b_steps:
        pretrain_transformer(bb, PretrainRecipe(transformer_steps=b_steps, transformer_examples=3000, drawing_examples=1500),
                             log=lambda m: print(time.strftime("%H:%M:%S"), m, flush=True))
        report(bb, f"after B ({b_steps} mixed steps):", held, triplets, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_backbone(bb, out)
    print("saved", out, round(time.time() - t0), "s", flush=True)
