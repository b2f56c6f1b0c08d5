"""The overprint task as the round sees it: composite = disc x box, an exact formula."""

import numpy as np
from PIL import Image

from models.domains.base import Domain
from models.domains.overprint import benchmark, metrics, world
from models.domains.overprint.judge import OverprintJudge


def recompose(disc: Image.Image, box: Image.Image) -> Image.Image:
    return Image.fromarray(world.recompose(np.asarray(disc.convert("RGB")), np.asarray(box.convert("RGB"))))


DOMAIN = Domain("overprint", world.PANELS, world.make_triplet, world.describe, OverprintJudge,
                benchmark.build_benchmark, metrics.metrics, metrics.baseline, lower_is_better=True,
                recompose=recompose)
