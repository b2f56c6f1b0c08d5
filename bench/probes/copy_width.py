"""Copy probe (docs/research-log.md, "Width, not steps", 2026-12-01): a fresh tiny transformer at WIDTH learns only
pretraining's `copy` relation (all three panels the same image) under the decompose/compose masks,
on the shipped base's codec and grid ids. Every 250 steps: one-step x0 from sigma 1 (nothing of the
answer in the input: the copy itself) and sigma 0.3, PSNR of the generated panels against the
codec's decode of the truth, 100 held-out grids. Batch 8, AdamW, lr 1e-3 (100 warm-up steps).
The fresh transformer predicts what the shipped base predicts (its scheduler_config.json's
`prediction_type`): velocity until 2026-12-06, clean latents (x-prediction) since.

    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/copy_width.py 192 1500 1   # width, steps, threads
    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/copy_width.py 384 1500 1   # beside it: same data, seeds
    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/copy_width.py 192 6000 2   # alone: does the copy keep climbing?
"""
import dataclasses
import json
import sys
import time

import numpy as np
import torch

from models.iclora.backbone import load_backbone
from models.iclora.tiny import TinySpec, build_tiny
from models.iclora.encoded import encode_grids, make_batch
from models.iclora.grid import Task
from models.iclora.objective import FlowMatching
from models.iclora.fill import unpack, decode_latents
from models.pretrain.data import make_image
from models.pretrain.base import PRETRAIN_PROMPTS
from models.iclora.train import optimizer_step

width, steps, threads = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads); torch.manual_seed(0)
bb = load_backbone("models/tiny_base", torch.float32, "cpu")
heads = width // 32
fresh = build_tiny(TinySpec(num_attention_heads=heads), seed=0).transformer
bb = dataclasses.replace(bb, transformer=fresh)
print("width", width, "params", sum(p.numel() for p in fresh.parameters()) / 1e6, "M", flush=True)
S = 64
def grids(ns, n):
    out = []
    for i in range(n):
        im = make_image((7_000_000 if ns == "test" else 8_000_000) + i, S)
        out.append((im, im.copy(), im.copy()))
    return out
train = encode_grids(bb, grids("train", 2000), ["all three panels are the same image"] * 2000)
test = encode_grids(bb, grids("test", 100), ["all three panels are the same image"] * 100)
fm = FlowMatching(bb, guidance_scale=1.0, resolution_shift=False)
tr = bb.transformer; tr.train().requires_grad_(True)
opt = torch.optim.AdamW(tr.parameters(), lr=1e-3, weight_decay=0.01)
gen = torch.Generator().manual_seed(1)
TT = (Task.DECOMPOSE, Task.COMPOSE)

def evaluate():
    tr.eval(); res = {}
    with torch.no_grad():
        for sig in (1.0, 0.3):
            ps = []
            for i in range(0, 100, 20):
                idx = list(range(i, i + 20)); tasks = [Task.DECOMPOSE] * 20
                x0, c, tok = make_batch(bb, test, idx, tasks, PRETRAIN_PROMPTS)
                x1 = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7 + i))
                s = torch.full((20,), sig)
                xt = (1 - sig) * x0 + sig * x1
                x0h = xt - sig * fm.velocity(xt, s, c)
                x0h = torch.where(tok[..., None].bool(), x0h, x0)
                a = decode_latents(bb, unpack(x0h, S, 3 * S)).clamp(-1, 1)
                b = decode_latents(bb, unpack(x0, S, 3 * S)).clamp(-1, 1)
                a, b = a[..., S:], b[..., S:]  # generated panels (decompose: middle + right)
                mse = ((a - b) / 2).pow(2).flatten(1).mean(1)
                ps += (10 * torch.log10(1 / mse)).tolist()
            res[sig] = float(np.mean(ps))
    tr.train(); return res

hist, t0 = [], time.time()
for step in range(1, steps + 1):
    for g in opt.param_groups: g["lr"] = 1e-3 * min(1, step / 100)
    idx = torch.randint(len(train.prompts), (8,), generator=gen).tolist()
    tasks = [TT[k] for k in torch.randint(2, (8,), generator=gen).tolist()]
    x0, c, tok = make_batch(bb, train, idx, tasks, PRETRAIN_PROMPTS)
    loss = fm.loss(x0, c, tok, generator=gen)
    optimizer_step(opt, loss, tr.parameters(), 1.0)
    hist.append(loss.item())
    if step % 250 == 0:
        r = evaluate()
        print(json.dumps({"width": width, "step": step, "loss100": round(float(np.mean(hist[-100:])), 4),
                          "x0_psnr_sigma1": round(r[1.0], 2), "x0_psnr_sigma0.3": round(r[0.3], 2),
                          "s_per_step": round((time.time() - t0) / step, 3)}), flush=True)
