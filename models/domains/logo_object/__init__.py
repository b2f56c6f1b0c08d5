"""The logo/object layer task: composite = an object carrying a flat logo; layers: logo, object.

    world.py      the procedural world (exact ground truth, five world levels)
    judge.py      its measurement judge's checks
    benchmark.py  the labelled corruption benchmark the judge is calibrated on
    metrics.py    held-out metrics and the trivial baseline
    domain.py     the `Domain` the round reads
"""
