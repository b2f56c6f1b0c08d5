"""Typed, validated run configuration: one YAML file per profile, loaded by `load_config` only."""

from configs.schema import Config, ConfigError, config_hash, load_config, local_base_problem, resolve_config_path

__all__ = ["Config", "ConfigError", "config_hash", "load_config", "local_base_problem", "resolve_config_path"]
