"""Typed, validated run configuration: one YAML file per profile, loaded by `load_config` only."""

from configs.schema import (
    Config,
    ConfigError,
    apply_overrides,
    config_hash,
    load_config,
    local_base_problem,
    resolve_config_path,
    training_hash,
    write_effective_config,
)

__all__ = ["Config", "ConfigError", "apply_overrides", "config_hash", "load_config", "local_base_problem",
           "resolve_config_path", "training_hash", "write_effective_config"]
