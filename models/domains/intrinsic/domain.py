"""The intrinsic task as the round sees it: composite = albedo x shading, an exact formula the
cycle check can use (`bootstrap.cycle_check: analytic`)."""

import numpy as np
from PIL import Image

from models.domains.base import Domain
from models.domains.intrinsic import benchmark, metrics, world
from models.domains.intrinsic.judge import IntrinsicJudge


def recompose(albedo: Image.Image, shading: Image.Image) -> Image.Image:
    return Image.fromarray(world.recompose(np.asarray(albedo.convert("RGB")), np.asarray(shading.convert("RGB"))))


DOMAIN = Domain("intrinsic", world.PANELS, world.make_triplet, world.describe, IntrinsicJudge,
                benchmark.build_benchmark, metrics.metrics, metrics.baseline, lower_is_better=True,
                recompose=recompose)
