"""The config schema (pydantic, frozen, unknown keys refused) and the one function that loads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.hashing import stable_id

PROFILES_DIR = Path(__file__).parent


class ConfigError(ValueError):
    """An unusable config; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # the run id in every manifest row
    seed: int = Field(0, ge=0)  # root of every derived seed: same config + seed -> same bytes


class DataConfig(_Strict):
    panel_size: int = Field(ge=32, le=1024)  # pixels per side of each of the three square panels
    n_seeds: int = Field(100, ge=1)  # synthetic seed triplets written by `layerboot seed`
    n_test: int = Field(50, ge=0)  # held-out synthetic test triplets (round 0, split=test)

    @field_validator("panel_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        # FLUX packs 2x2 latents of an 8x VAE: image sides must be multiples of 16.
        if v % 16:
            raise ValueError(f"must be a multiple of 16 (got {v})")
        return v


class Config(_Strict):
    profile: Literal["tiny", "flux"]
    run: RunConfig
    data: DataConfig

    @property
    def run_id(self) -> str:
        return self.run.name


def resolve_config_path(path_or_profile: str | Path) -> Path:
    """A path to a YAML file, or a profile name (`tiny`, `flux`) meaning the packaged file."""
    p = Path(path_or_profile)
    if p.suffix not in (".yaml", ".yml") and (PROFILES_DIR / f"{p}.yaml").exists():
        return PROFILES_DIR / f"{p}.yaml"
    if not p.exists() and not p.is_absolute() and (PROFILES_DIR / p.name).exists() and p.parent.name == "configs":
        return PROFILES_DIR / p.name  # `configs/tiny.yaml` from outside the repo root
    return p


def load_config(path_or_profile: str | Path) -> Config:
    path = resolve_config_path(path_or_profile)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        got = f" (got {first['input']!r})" if first["type"] != "missing" and "input" in first else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {msg}{'' if 'got' in msg else got}{more}") from None


def config_hash(config: Config) -> str:
    """Stable hash of a config's content: keys caches of things fitted from it."""
    return stable_id(json.dumps(config.model_dump(mode="json"), sort_keys=True), length=16)
