"""Command-line arguments shared by the probes that take config overrides beside their own."""

from __future__ import annotations

import re

# KEY.PATH=VALUE, as `layerboot --set` takes them; a path may hold '=' too (adapters/round=01)
_OVERRIDE = re.compile(r"^[a-z_][a-z0-9_.]*=")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the probe's own arguments, the config overrides), each in the order given."""
    return [a for a in argv if not _OVERRIDE.match(a)], [a for a in argv if _OVERRIDE.match(a)]
