"""Resumable training state, one layout for every trainer: the adapter (models/iclora/train.py) and
the base's decoder and transformer stages (models/pretrain/base.py). A checkpoint is a folder:
the caller's weights, the optimizer's moments, the RNG, the step and the log, no pickle anywhere,
written beside its old self and renamed into place, so a run killed at any moment resumes from
the last whole one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from storage.store import TRAIN_LOG

STATE_TENSORS = "trainer_state.safetensors"  # optimizer moments + RNG state
STATE_FILE = "trainer_state.json"  # step, optimizer hyper-parameters, the caller's meta
LOG_FILE = TRAIN_LOG  # committed with the adapter: the report draws loss curves from it


def read_checkpoint(ckpt: Path, opt: torch.optim.Optimizer, gen: torch.Generator | None = None) -> tuple[int, Any, dict]:
    """Restore the optimizer and the RNG (if the trainer draws from one) from `write_checkpoint`'s
    folder; (step, log as written (a list of entries, or pretraining's losses by kind), extra meta).
    The weights are the caller's to load (an adapter, a whole transformer, a decoder)."""
    meta = json.loads((ckpt / STATE_FILE).read_text())
    tensors = load_file(str(ckpt / STATE_TENSORS))
    generator = tensors.pop("generator", None)
    if gen is not None:
        gen.set_state(generator)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        i, _, name = key.partition(".")
        state.setdefault(int(i), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return int(meta.pop("step")), json.loads((ckpt / LOG_FILE).read_text()), meta


def write_checkpoint(ckpt: Path, opt: torch.optim.Optimizer, gen: torch.Generator | None, step: int, log: Any,
                     save_weights: Callable[[Path], None], **meta) -> None:
    """Weights (`save_weights(folder)`) + optimizer + RNG + step + `meta`, written to a temp folder
    then renamed (all or nothing)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(tmp)
    state = opt.state_dict()
    tensors = {f"{i}.{k}": v.contiguous() for i, st in state["state"].items() for k, v in st.items()}
    save_file(tensors | ({"generator": gen.get_state()} if gen is not None else {}), str(tmp / STATE_TENSORS))
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "param_groups": state["param_groups"], **meta}))
    (tmp / LOG_FILE).write_text(json.dumps(log))
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.rename(ckpt)


def module_saver(module: torch.nn.Module, name: str) -> Callable[[Path], None]:
    """`write_checkpoint`'s `save_weights` for a whole module: its state dict as `folder/name`."""
    return lambda folder: save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / name))


def load_module(module: torch.nn.Module, ckpt: Path, name: str) -> None:
    """The weights `module_saver` wrote, back into `module`."""
    module.load_state_dict(load_file(str(ckpt / name)))
