"""The shipped tiny codec at each world level (models/domains/logo_object/world.py, WORLD_LEVELS): PSNR per
panel kind on 48 held-out triplets, and how many of 40 ground-truth triplets the unchanged judge
accepts raw and round-tripped through the codec (tests/test_codec.py measures the top level the
same way). A lower world is simpler to code, so a profile at a lower level may meet the codec's
aims (>= 30 dB every panel kind, >= 36/40 round trips) with today's decoder:

    OMP_NUM_THREADS=1 .venv/bin/python bench/probes/codec_levels.py [BASE [LEVEL ...]] [SIZE=PX] > /tmp/codec-levels.log

SIZE draws the triplets at PX-px panels (default 64, the tiny config's), e.g. `models/tiny_base 2 SIZE=96`.
"""

from __future__ import annotations

import sys
from collections import Counter

import torch

from configs import load_config
from models.domains.logo_object.world import WORLD_LEVELS, make_triplet
from models.iclora.backbone import load_backbone
from models.iclora.codec import reconstruction_psnr
from models.domains.registry import judge_of
from models.judge import failing
from models.loop.evaluate import codec_roundtrip
from models.loop.runtime import REPO_ROOT
from models.pretrain.base import to_tensor
from storage.hashing import derive_seed

PANELS = ("composite", "logo", "object")


def codec_figures(base, level: int, size: int = 64) -> str:
    """PSNR per panel kind of 48 test-split triplets at `level`, drawn at `size` px, and the judge's
    verdicts on 40 of them raw and round-tripped through `base`'s codec."""
    cfg = load_config("tiny", overrides=[f"data.world_level={level}", f"data.panel_size={size}"])
    triplets = [make_triplet(derive_seed(cfg.run.seed, "synthetic", "test", i), size, level) for i in range(48)]
    psnr = {p: reconstruction_psnr(base.vae, to_tensor([getattr(t, p) for t in triplets])) for p in PANELS}
    judge = judge_of(cfg)
    gt = [(t.composite, t.logo, t.object) for t in triplets[:40]]
    raw = sum(j.accepted for j in judge.judge(gt))
    verdicts = judge.judge(codec_roundtrip(base, gt))
    coded = sum(j.accepted for j in verdicts)
    why = Counter(c for j in verdicts for c in failing(j.scores, judge.criteria))
    return (f"level {level}" + (f", {size} px" if size != 64 else "") + ": "
            + " ".join(f"{p} {v:.2f} dB" for p, v in psnr.items())
            + f" | judge accepts raw {raw}/40, round-tripped {coded}/40 (failing: {dict(why)})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    args = [a for a in sys.argv[1:] if not a.startswith("SIZE=")]
    size = int(next((a[5:] for a in sys.argv[1:] if a.startswith("SIZE=")), 64))
    base = load_backbone(args[0] if args else str(REPO_ROOT / "models" / "tiny_base"), torch.float32, "cpu")
    for level in [int(a) for a in args[1:]] or range(WORLD_LEVELS):
        print(codec_figures(base, level, size), flush=True)
