"""Where a decode carries noise: pixel noise through the codec, and latents noised as a sample
stopped short (z <- (1 - t) z + t eps), read by the judge's checks (docs/research-log.md, "Noise
the codec removes").

For N level-LEVEL triplets of a probe namespace (not the test split): each panel kind's `speckle`
and pixel-noise measurements on the raw panels, their decodes, and decodes with one panel's
latents noised at t = 0.1-0.4 (that panel's distance from the clean decode in dB); how many of
those triplets the whole judge accepts with and without the speckle check; and pixel noise at
sigma 0.04 / 0.08 / 0.12 through the codec. Writes FIGURE: per row, a raw composite, its decode,
its latents noised at t = 0.2 / 0.3 / 0.5, and pixel noise at sigma 0.08 through the codec.

    OMP_NUM_THREADS=2 .venv/bin/python bench/probes/decoded_noise.py N LEVEL FIGURE
    e.g. bench/probes/decoded_noise.py 30 2 docs/figures/decoded_noise.png
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from configs import load_config
from models.domains.logo_object import judge as logo_judge
from models.domains.logo_object.world import PANELS, make_triplet
from models.domains.registry import judge_of
from models.iclora.grid import psnr, to_unit_tensor
from models.judge.image_ops import to_float, to_image
from models.judge.measure import criterion_scores
from models.loop.evaluate import codec_roundtrip
from models.loop.runtime import load_base
from storage.hashing import derive_seed


def db(a: Image.Image, b: Image.Image) -> float:
    return psnr(to_unit_tensor([a]), to_unit_tensor([b]))


def pixel_noised(triplet, sigma: float, rng: np.random.Generator) -> tuple:
    return tuple(to_image(to_float(p) + sigma * rng.standard_normal((64, 64, 3))) for p in triplet)


def spread(values) -> str:
    v = np.asarray(values)
    return f"min {v.min():.4f} median {np.median(v):.4f} max {v.max():.4f}"


if __name__ == "__main__":
    n, level, figure = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cfg = load_config("tiny", overrides=[f"data.world_level={level}"])
    base, judge = load_base(cfg), judge_of(cfg)
    names, thresholds = [c.name for c in judge.criteria], {c.name: c.threshold for c in judge.criteria}
    without = {k: [c for c in v if not c[0].endswith("_speckle")] for k, v in logo_judge.CHECKS.items()}

    def accepted(panels, checks) -> bool:
        scores, _ = criterion_scores(logo_judge.measure(*panels), names, checks)
        return all(scores[c] >= thresholds[c] for c in names)

    raw = [tuple(getattr(make_triplet(derive_seed(0, "decoded-noise-probe", i), 64, level), p) for p in PANELS)
           for i in range(n)]
    clean = codec_roundtrip(base, raw)
    for label, triplets in (("raw", raw), ("decoded", clean)):
        m = [logo_judge.measure(*t) for t in triplets]
        for p in PANELS:
            print(f"{label:8s} {p:9s} speckle {spread([x[f'{p}_speckle'] for x in m])}  "
                  f"noise {spread([x[f'{p}_noise'] for x in m])}", flush=True)
    for t in (0.1, 0.2, 0.3, 0.4):
        specs = [((i % 3,), t, derive_seed(0, "decoded-noise-probe", i, "eps")) for i in range(n)]
        noisy = codec_roundtrip(base, raw, specs)
        dist = [db(a[i % 3], b[i % 3]) for i, (a, b) in enumerate(zip(clean, noisy))]
        speck = [logo_judge.measure(*x)[f"{PANELS[i % 3]}_speckle"] for i, x in enumerate(noisy)]
        print(f"latents t={t}: {min(dist):.1f}-{max(dist):.1f} dB from the clean decode; speckle {spread(speck)}; "
              f"accepted {sum(accepted(x, logo_judge.CHECKS) for x in noisy)}/{n} "
              f"(without the speckle check {sum(accepted(x, without) for x in noisy)}/{n})", flush=True)
    rng = np.random.default_rng(0)
    for sigma in (0.04, 0.08, 0.12):
        coded = codec_roundtrip(base, [pixel_noised(t, sigma, rng) for t in raw])
        dist = [db(a[k], b[k]) for a, b in zip(clean, coded) for k in range(3)]
        noise = [logo_judge.measure(*x)[f"{p}_noise"] for x in coded for p in PANELS]
        print(f"pixel noise sigma {sigma} through the codec: {min(dist):.1f}-{max(dist):.1f} dB from the clean "
              f"decode; pixel-noise check {spread(noise)}", flush=True)

    rows = []
    for i in range(3):
        cells = [raw[i][0], clean[i][0]]
        cells += [codec_roundtrip(base, raw[i:i + 1], [((0,), t, 7 + i)])[0][0] for t in (0.2, 0.3, 0.5)]
        cells.append(codec_roundtrip(base, [pixel_noised(raw[i], 0.08, rng)])[0][0])
        rows.append(cells)
    sheet = Image.new("RGB", (64 * 6, 64 * 3))
    for r, cells in enumerate(rows):
        for c, im in enumerate(cells):
            sheet.paste(im, (64 * c, 64 * r))
    sheet.resize((sheet.width * 3, sheet.height * 3), Image.NEAREST).save(figure)
    print(f"wrote {figure}")
