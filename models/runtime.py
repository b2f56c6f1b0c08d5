"""Turning a config into a ready backbone: device, dtype, where the base lives."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from configs import Config
from models.backbone import Backbone, load_backbone

REPO_ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


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
    device = resolve_device(m.device)
    if device == "cpu":
        torch.set_num_threads(m.cpu_threads)
    return load_backbone(resolve_base(m.base), DTYPES[m.dtype], device)


# One frozen base per process, adapters swapped in and out: loading FLUX.1-Fill-dev takes minutes,
# so a worker that runs many tasks must not reload it for each. The lock serialises the tasks
# that use it (one accelerator, or the CPU, runs one model at a time anyway).
_BASES: dict[str, tuple[Backbone, dict[str, dict[str, torch.Tensor]]]] = {}
MODEL_LOCK = threading.RLock()


def backbone_for(config: Config, adapter_dir: str | Path | None = None) -> Backbone:
    """The config's base with `adapter_dir` loaded (or with no adapter). Call under MODEL_LOCK."""
    from configs import config_hash
    from models.backbone import ADAPTER_NAME, load_adapter

    key = config_hash(config)
    if key not in _BASES:
        backbone = load_base(config)
        extra = {n: {k: v.clone() for k, v in getattr(backbone.transformer, n).state_dict().items()}
                 for n in config.lora.extra_trainable}
        _BASES[key] = (backbone, extra)
    backbone, extra = _BASES[key]
    if getattr(backbone.transformer, "_layerboot_fused", False):  # model.fuse_qkv merged an adapter into it
        if adapter_dir is not None and getattr(backbone, "adapter_dir", None) == str(adapter_dir):
            return backbone  # the same adapter: the fused base serves it as is
        del _BASES[key]  # anything else needs the untouched base: load it again
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


_JUDGES: dict[str, object] = {}


def judge_for(config: Config):
    """The config's judge, built once per process (a Qwen2.5-VL-7B judge loads in minutes)."""
    from configs import config_hash
    from models.judge import build_judge

    key = config_hash(config)
    if key not in _JUDGES:
        _JUDGES[key] = build_judge(config)
    return _JUDGES[key]
