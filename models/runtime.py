"""Turning a config into a ready backbone: device, dtype, where the base lives."""

from __future__ import annotations

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
    return load_backbone(resolve_base(m.base), DTYPES[m.dtype], resolve_device(m.device))
