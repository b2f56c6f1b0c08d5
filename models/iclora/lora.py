"""The IC-LoRA adapter on the Fill transformer: add it, list what trains, save and load it in
diffusers' LoRA format (safetensors only; fully trained top-level modules beside it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from diffusers import FluxFillPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from models.iclora.backbone import Backbone, seeded


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' name for a LoRA file


EXTRA_MODULES = "extra_modules.safetensors"  # fully trained top-level modules saved beside the LoRA


ADAPTER_NAME = "default"


class AdapterError(ValueError):
    """An adapter folder that cannot be loaded safely (pickle inside, wrong shapes, ...)."""


# Linear layers inside the blocks (names are suffixes); only block-level matches count, so
# "proj_out" means the single blocks' output projections, never the top-level proj_out.
LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0",  # image-stream attention (double and single blocks)
    "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",  # text-stream attention (double blocks)
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",  # double-block MLPs
    "proj_mlp", "proj_out",  # single blocks: MLP in, fused attention+MLP out
)  # fmt: skip


_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def lora_target_names(transformer: FluxTransformer2DModel, target_modules: tuple[str, ...] = LORA_TARGETS) -> list[str]:
    """Full names of the block Linear layers whose name ends with one of `target_modules`."""
    names = []
    for name, module in transformer.named_modules():
        # a layer that carried an adapter before (since deleted) is a LoRA wrapper around its Linear
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
        if not name.startswith(_BLOCKS) or name.endswith(".base_layer") or not isinstance(base, nn.Linear):
            continue
        if any(name == t or name.endswith("." + t) for t in target_modules):
            names.append(name)
    return names


def _lora_parameters(transformer: nn.Module) -> Iterator[nn.Parameter]:
    for module in transformer.modules():
        if isinstance(module, BaseTunerLayer):
            for name, p in module.named_parameters():
                if "lora_" in name:
                    yield p


def _cast_lora_fp32(transformer: nn.Module) -> None:
    # fp32 LoRA on a bf16 base, as diffusers' train_dreambooth_lora_flux.py (cast_training_params):
    # bf16 updates of small LoRA weights round away; PEFT casts activations to the LoRA dtype.
    for p in _lora_parameters(transformer):
        p.data = p.data.float()


def add_lora(
    transformer: FluxTransformer2DModel,
    rank: int,
    alpha: float,
    target_modules: tuple[str, ...] = LORA_TARGETS,
    extra_trainable: tuple[str, ...] = (),
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> None:
    """Add a trainable LoRA (adapter "default") to the frozen transformer.

    A is Gaussian (seeded: same seed, same adapter), B is zero, so a fresh adapter leaves the
    outputs unchanged. `extra_trainable` names whole top-level modules (e.g. "x_embedder",
    "proj_out") to train fully besides the LoRA: the tiny profile's random base needs them; they
    keep the base dtype. `gradient_checkpointing` recomputes block activations in backward (the
    real profile's memory saver)."""
    if getattr(transformer, "peft_config", None):
        raise ValueError("the transformer already carries an adapter")
    names = lora_target_names(transformer, target_modules)
    if not names:
        raise ValueError(f"no Linear layer in the transformer blocks matches {target_modules}")
    for name in extra_trainable:
        _top_level_module(transformer, name)  # validate before touching the model
    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=names)
    with seeded(seed, "lora"):
        transformer.add_adapter(config, adapter_name=ADAPTER_NAME)
    _cast_lora_fp32(transformer)
    for name in extra_trainable:
        _top_level_module(transformer, name).requires_grad_(True)
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing()


def _top_level_module(transformer: nn.Module, name: str) -> nn.Module:
    # the block lists are ModuleLists and hold the LoRA layers: never trained whole
    module = getattr(transformer, name, None) if "." not in name else None
    if not isinstance(module, nn.Module) or isinstance(module, nn.ModuleList):
        raise ValueError(f"{name!r} is not a top-level module of the transformer (e.g. 'x_embedder', 'proj_out')")
    if any(isinstance(m, BaseTunerLayer) for m in module.modules()):
        raise ValueError(f"{name!r} contains LoRA layers; extra_trainable modules must be outside the blocks")
    return module


def trainable_parameters(transformer: nn.Module) -> list[nn.Parameter]:
    """What the optimizer updates: LoRA weights (+ extra_trainable modules)."""
    return [p for p in transformer.parameters() if p.requires_grad]


def save_adapter(
    transformer: FluxTransformer2DModel, directory: str | Path, extra_trainable: tuple[str, ...] = ()
) -> None:
    """diffusers' LoRA format (loadable by FluxFillPipeline.load_lora_weights), with the LoraConfig
    as metadata (without it lora_alpha is lost on reload), plus the extra trainable modules' full
    weights in extra_modules.safetensors. Nothing of the frozen base is written."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    FluxFillPipeline.save_lora_weights(
        str(d),
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=ADAPTER_NAME),
        transformer_lora_adapter_metadata=transformer.peft_config[ADAPTER_NAME].to_dict(),
        weight_name=LORA_WEIGHTS,
        safe_serialization=True,
    )
    if extra_trainable:
        tensors = {
            f"{name}.{key}": value.detach().to("cpu").contiguous()
            for name in extra_trainable
            for key, value in _top_level_module(transformer, name).state_dict().items()
        }
        save_file(tensors, str(d / EXTRA_MODULES))


def load_adapter(backbone: Backbone, directory: str | Path) -> None:
    """Load an adapter written by save_adapter into a backbone that has none.

    Only .safetensors and .json files may be in the directory: a pickle (.bin/.pt/.pth) can run
    code when loaded, and diffusers would fall back to one if it found no safetensors."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: adapter directory not found")
    for entry in sorted(d.iterdir()):
        if not entry.is_file() or entry.suffix not in (".safetensors", ".json"):
            raise AdapterError(f"{entry}: refusing an adapter directory holding {entry.name!r} (only .safetensors/.json)")
        if entry.suffix == ".safetensors":
            try:  # reads the header only: a pickle (or anything else) named .safetensors fails here, unexecuted
                with safe_open(str(entry), framework="pt"):
                    pass
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
                raise AdapterError(f"{entry}: not a safetensors file ({' '.join(str(e).split())})") from None
    if not (d / LORA_WEIGHTS).is_file():
        raise FileNotFoundError(f"{d / LORA_WEIGHTS}: no LoRA weights")
    transformer = backbone.transformer
    if getattr(transformer, "peft_config", None):
        raise AdapterError("the transformer already carries an adapter; load into a fresh backbone")
    _check_lora_weights(transformer, d / LORA_WEIGHTS)  # all checks before the model changes
    extra = _read_extra_modules(transformer, d / EXTRA_MODULES)
    # the transformer's own loader: reads the LoraConfig metadata, never falls back to pickle, and
    # (unlike pipeline.load_lora_weights) does not warn about the text encoder having no LoRA keys
    transformer.load_lora_adapter(
        str(d), prefix="transformer", weight_name=LORA_WEIGHTS, adapter_name=ADAPTER_NAME, use_safetensors=True
    )
    _cast_lora_fp32(transformer)
    for name, state in extra.items():
        getattr(transformer, name).load_state_dict(state, strict=True)  # copies into the base-dtype parameters


def _check_lora_weights(transformer: nn.Module, path: Path) -> None:
    """Each tensor of a LoRA file is the A [rank, in] or B [out, rank] of a Linear layer of this
    transformer, at the file's rank, and finite: peft would fail half-way through loading on a wrong
    shape, and NaN weights sample black images."""
    layers = dict(transformer.named_modules())
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata") or "{}")
        for key in f.keys():
            name, _, part = key.removeprefix("transformer.").partition(".lora_")
            layer = layers.get(name)
            if isinstance(layer, BaseTunerLayer):  # a shared base keeps peft's wrapper after delete_adapters
                layer = layer.get_base_layer()
            if not isinstance(layer, nn.Linear) or part not in ("A.weight", "B.weight"):
                raise AdapterError(f"{path}: {key} is not the LoRA of a layer of this transformer")
            shape = list(f.get_slice(key).get_shape())
            rank = meta.get("transformer.r", shape[0] if part == "A.weight" else shape[-1])
            expected = [rank, layer.in_features] if part == "A.weight" else [layer.out_features, rank]
            if shape != expected:
                raise AdapterError(f"{path}: {key} is {shape}, this transformer's layer takes {expected}")
            _check_finite(path, key, f.get_tensor(key))


def _check_finite(path: Path, key: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise AdapterError(f"{path}: {key} holds NaN or infinite values")


def _read_extra_modules(transformer: nn.Module, path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """extra_modules.safetensors -> {module name: its state dict}, checked against the transformer."""
    if not path.is_file():
        return {}
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        _check_finite(path, key, value)
        name, _, rest = key.partition(".")
        by_module.setdefault(name, {})[rest] = value
    for name, state in by_module.items():
        expected = _top_level_module(transformer, name).state_dict()
        if state.keys() != expected.keys() or any(state[k].shape != expected[k].shape for k in state):
            raise AdapterError(f"{path}: the weights of {name!r} do not fit this transformer")
    return by_module
