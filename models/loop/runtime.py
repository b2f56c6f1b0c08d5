"""Turning a config into what a process shares: the ready backbone (device, dtype, where the base
lives, the adapter swapped in) and the judge (built and calibrated once)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from configs import Config, ConfigError, config_hash, local_base_problem
from models.domains.registry import domain_of, judge_of
from models.iclora.backbone import Backbone, load_backbone, resolve_device
from models.iclora.lora import ADAPTER_NAME, load_adapter
from models.judge import Judge
from models.judge.calibrate import calibrate
from models.loop.evaluate import codec_roundtrip

REPO_ROOT = Path(__file__).resolve().parents[2]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_base(base: str) -> str:
    """A local folder as given, else one shipped inside the package (models/tiny_base), else the
    string itself: a hub id, which from_pretrained resolves (offline machines need a local copy)."""
    if Path(base).expanduser().is_dir():
        return str(Path(base).expanduser())
    shipped = REPO_ROOT / base
    return str(shipped) if shipped.is_dir() else base


def load_base(config: Config) -> Backbone:
    """The frozen base of the config's profile: FLUX.1-Fill-dev or the shipped tiny base."""
    m = config.model
    if (problem := local_base_problem(m.base)) is not None:  # never fall through to a hub download
        raise ConfigError(problem)
    device = resolve_device(m.device)
    if device == "cpu":
        torch.set_num_threads(m.cpu_threads)
    return load_backbone(resolve_base(m.base), DTYPES[m.dtype], device, m.max_sequence_length)


# One frozen base per process, adapters swapped in and out: loading FLUX.1-Fill-dev takes minutes,
# so a worker that runs many tasks must not reload it for each. The lock serialises the tasks
# that use it (one accelerator, or the CPU, runs one model at a time anyway).
_BASES: dict[str, tuple[Backbone, dict[str, dict[str, torch.Tensor]]]] = {}
MODEL_LOCK = threading.RLock()


def _cached_base(config: Config) -> tuple[Backbone, dict[str, dict[str, torch.Tensor]]]:
    key = config_hash(config)
    if key not in _BASES:
        backbone = load_base(config)
        extra = {n: {k: v.clone() for k, v in getattr(backbone.transformer, n).state_dict().items()}
                 for n in config.lora.extra_trainable}
        _BASES[key] = (backbone, extra)
    return _BASES[key]


def backbone_for(config: Config, adapter_dir: str | Path | None = None) -> Backbone:
    """The config's base with `adapter_dir` loaded (or with no adapter). Call under MODEL_LOCK."""
    backbone, extra = _cached_base(config)
    if getattr(backbone.transformer, "_layerboot_fused", False):  # model.fuse_qkv merged an adapter into it
        if adapter_dir is not None and getattr(backbone, "adapter_dir", None) == str(adapter_dir):
            return backbone  # the same adapter: the fused base serves it as is
        del _BASES[config_hash(config)]  # anything else needs the untouched base: load it again
        return backbone_for(config, adapter_dir)
    if getattr(backbone.transformer, "peft_config", None):
        backbone.transformer.delete_adapters(ADAPTER_NAME)
    for name, state in extra.items():  # adapters overwrite these modules in place: restore the base
        getattr(backbone.transformer, name).load_state_dict(state)
    backbone.transformer.requires_grad_(False).eval()
    if adapter_dir is not None:
        load_adapter(backbone, adapter_dir)
    backbone.adapter_dir = None if adapter_dir is None else str(adapter_dir)
    return backbone


def codec_for(config: Config):
    """Panel triplets -> the same through the base's VAE and back. Uses the
    shared base without touching its adapter (the VAE never carries one). Call under MODEL_LOCK."""
    backbone = _cached_base(config)[0]
    return lambda triplets, latent_noise=None: codec_roundtrip(backbone, triplets, latent_noise)


def calibrate_judge(config: Config, n: int | None = None, panel_size: int | None = None,
                    target_precision: float | None = None) -> dict:
    """The config's judge scored on its held-out corruption benchmark, raw and through the codec
    (models/judge/calibrate.py): AUROC per criterion and the thresholds reaching the precision
    target (`target_precision`, else the config's, else 0.99). Deterministic. Call under MODEL_LOCK."""
    domain, size = domain_of(config), panel_size or config.data.panel_size
    items = domain.benchmark(config.run.seed, n or config.judge.calibration_size, size, codec=codec_for(config))
    target = target_precision or config.judge.target_precision or 0.99
    report = calibrate(judge_of(config, panel_size=size), items, target)
    report["run_seed"] = config.run.seed
    return report


_JUDGES: dict[str, Judge] = {}


def judge_for(config: Config) -> Judge:
    """The config's judge, built once per process (a Qwen2.5-VL-7B judge loads in minutes). With
    `judge.target_precision` set, its thresholds are the calibrated ones (same numbers every time:
    the benchmark is a pure function of the config, so a resumed run judges alike)."""
    key = config_hash(config)
    if key not in _JUDGES:
        thresholds = calibrate_judge(config)["thresholds"] if config.judge.target_precision is not None else None
        _JUDGES[key] = judge_of(config, thresholds)
    return _JUDGES[key]
