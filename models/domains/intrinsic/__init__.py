"""The intrinsic layer task: composite = albedo x shading; layers: albedo, shading.

    world.py      the procedural world (exact ground truth, Retinex assumptions by construction)
    judge.py      its measurement judge's checks
    benchmark.py  the labelled corruption benchmark the judge is calibrated on
    metrics.py    held-out metrics (si-MSE, LMSE) and the trivial baseline
    domain.py     the `Domain` the round reads
"""
