"""The logo/object task as the round sees it: composite = an object carrying a flat logo."""

from models.domains.base import Domain
from models.domains.logo_object import benchmark, metrics, world
from models.domains.logo_object.judge import LogoObjectJudge

DOMAIN = Domain("logo_object", world.PANELS, world.make_triplet, world.describe, LogoObjectJudge,
                benchmark.build_benchmark, metrics.metrics, metrics.baseline, make_layer=world.make_layer,
                levels=world.WORLD_LEVELS)
