"""Would composing unpaired layers feed the loop? An adapter (a committed round's, e.g.
WORKDIR/adapters/round=01, or a probe's; `none`: the bare base) composes N (logo, object) pairs drawn from different procedural triplets (the world's own layers, never paired), the
unchanged judge scores (composite, logo, object), and the per-criterion pass counts are printed
beside those of the round's own generated candidates.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/compose_source.py ADAPTER [N] [OUT.png] [KEY=VALUE ...]

KEY=VALUE are config overrides as `--set` takes them (the adapter's own settings, e.g. lora.rank).
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import torch
from PIL import Image

from configs import load_config
from models.domains.registry import domain_of
from models.iclora.grid import psnr, to_unit_tensor
from models.iclora.sample import Sampler
from models.iclora.lora import load_adapter
from models.loop.runtime import judge_for, load_base
from storage.hashing import derive_seed

from probe_args import split_overrides

if __name__ == "__main__":
    args, overrides = split_overrides(sys.argv[1:])
    adapter, rnd = args[0], 1  # (the probe's layer seeds: "probe-logo"/"probe-object", round 1)
    n = int(args[1]) if len(args) > 1 else 40
    picture = args[2] if len(args) > 2 else None
    torch.set_num_threads(2)
    cfg = load_config("tiny", overrides)
    domain, size = domain_of(cfg), cfg.data.panel_size
    logos = [domain.make(derive_seed(cfg.run.seed, "probe-logo", rnd, i), size) for i in range(n)]
    objects = [domain.make(derive_seed(cfg.run.seed, "probe-object", rnd, i), size) for i in range(n)]
    backbone = load_base(cfg)
    if adapter != "none":
        load_adapter(backbone, adapter)
    sampler = Sampler(backbone, cfg)
    t0 = time.time()
    seeds = [derive_seed(cfg.run.seed, "probe-compose", rnd, i) for i in range(n)]
    composites = sampler.compose([t.panels[1] for t in logos], [t.panels[2] for t in objects], seeds)
    print(f"composed {n} in {time.time() - t0:.1f} s")
    judge = judge_for(cfg)
    triplets = [(c, a.panels[1], b.panels[2]) for c, a, b in zip(composites, logos, objects)]
    verdicts = judge.judge(triplets, [""] * n)
    names = [c.name for c in judge.criteria]
    passed = {k: sum(v.scores[k] >= c.threshold for v in verdicts) for k, c in zip(names, judge.criteria)}
    print("composed: accepted", sum(v.accepted for v in verdicts), "of", n, "| per criterion", passed)
    for reason, count in Counter(v.reject_reason for v in verdicts).most_common(6):
        print(f"  {count:3d}  {reason}")
    truth = [(c.panels[0], c.panels[1], c.panels[2]) for c in logos]  # the world's own triplets, composed by it
    again = sampler.compose([t[1] for t in truth], [t[2] for t in truth], seeds)
    inside = to_unit_tensor([c.footprint.convert("RGB") for c in logos])[:, :1]  # where the logo changes the composite
    made, real = to_unit_tensor(again), to_unit_tensor([t[0] for t in truth])
    print(f"re-composed true pairs, split: away from the logo (the object's copy) {psnr(made, real, 1 - inside):.2f} dB, "
          f"in the logo's footprint {psnr(made, real, inside):.2f} dB")
    print(f"re-composing {n} true pairs: composite PSNR {psnr(made, real):.2f} dB; "
          f"object as composite {psnr(to_unit_tensor([t[2] for t in truth]), real):.2f} dB; "
          "judge accepts", sum(v.accepted for v in judge.judge([(c, t[1], t[2]) for c, t in zip(again, truth)], [""] * n)))
    if picture:
        sheet = Image.new("RGB", (3 * size, min(n, 12) * size), "white")
        for row, t in enumerate(triplets[:12]):
            for col, im in enumerate(t):
                sheet.paste(im, (col * size, row * size))
        sheet.save(picture)
