"""The layer tasks a config may name (`domain:`), and the one a config asks for.

    logo_object   composite = an object carrying a flat logo; layers: logo, object
    intrinsic     composite = albedo x shading; layers: albedo, shading

Each is a folder, models/domains/<task>/, whose domain.py declares its `DOMAIN`; adding a task is
its folder and its name in TASKS (README, "Add a layer task").
"""

from __future__ import annotations

import importlib

from configs import Config, ConfigError
from models.domains.base import Domain
from models.judge import Judge, build_judge

TASKS = ("logo_object", "intrinsic")


def declared(names) -> dict[str, Domain]:
    """Each named task's `Domain`, read from models/domains/<name>/domain.py."""
    return {name: importlib.import_module(f"models.domains.{name}.domain").DOMAIN for name in names}


DOMAINS: dict[str, Domain] = declared(TASKS)


def domain_of(config: Config) -> Domain:
    """The config's layer task (`domain:`), its world at the config's level (`data.world_level`,
    unset: the full world). A task, level or cycle check the task does not have is refused here,
    not by the config's schema: configs/ sits below the tasks and does not know them."""
    domain = DOMAINS.get(config.domain)
    if domain is None:
        raise ConfigError(f"domain: no layer task {config.domain!r} (known: {', '.join(DOMAINS)})")
    if config.bootstrap.cycle_check == "analytic" and domain.recompose is None:
        with_formula = ", ".join(name for name, d in DOMAINS.items() if d.recompose is not None)
        raise ConfigError(f"bootstrap.cycle_check 'analytic' needs a task whose composite is a formula of its "
                          f"layers ({with_formula}); domain {domain.name!r} has none: use 'model'")
    level = config.data.world_level
    if level is None:
        return domain
    if level >= domain.levels:
        raise ConfigError(f"data.world_level: the {domain.name} world has levels 0..{domain.levels - 1} (got {level})")
    return domain.at_level(level)


def judge_of(config: Config, thresholds: dict[str, float] | None = None, panel_size: int | None = None) -> Judge:
    """The judge the config asks for (`judge.kind`), for its layer task."""
    return build_judge(config, domain_of(config).judge, thresholds, panel_size)
