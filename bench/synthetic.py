"""Procedural domain speed: triplets per second at the tiny (64 px) and real (512 px) panel sizes.

    .venv/bin/python bench/synthetic.py
"""

import time

from models.domains.logo_object.world import make_triplets


def rate(size: int, n: int) -> float:
    t0 = time.perf_counter()
    list(make_triplets(range(n), size))
    return n / (time.perf_counter() - t0)


if __name__ == "__main__":
    r64, r512 = rate(64, 300), rate(512, 20)
    print(f"64 px: {r64:.0f} triplets/s   512 px: {r512:.1f} triplets/s   ratio 64/512: {r64 / r512:.1f}x")
