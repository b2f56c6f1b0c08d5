"""The FLUX.1-Fill backbone: its seven components, loaded by hub id or local directory (the real
model: `load_backbone("black-forest-labs/FLUX.1-Fill-dev", torch.bfloat16, "cuda")`) or built
small (models/iclora/tiny.py), and saved in diffusers' folder layout, which `load_backbone` and
`FluxFillPipeline.from_pretrained` both read.

Beside it: models/iclora/fill.py (prompt and latent helpers that follow FluxFillPipeline exactly),
models/iclora/lora.py (the IC-LoRA adapter: add, save, load), models/iclora/tiny.py (the tiny profile's sizes
and builder).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast


# What the transformer's output means, recorded by the base in scheduler/scheduler_config.json under
# diffusers' key `prediction_type` (a base without the key is a velocity base, as FLUX.1-Fill-dev is):
#   "velocity": v = noise - x0, the flow-matching target itself (FLUX);
#   "sample":   the clean latents x0 (x-prediction; Li & He, "Back to Basics: Let Denoising Generative
#               Models Denoise", 2025): when a token carries more numbers than the network is wide,
#               predicting the clean data, which lies on a low-dimensional manifold, learns where
#               predicting velocity does not (docs/research-log.md measures it on the tiny base).
# models/iclora/fill.py's `to_velocity` turns either into velocity, so losses and samplers have one path.
PredictionType = Literal["velocity", "sample"]
PREDICTION_TYPES: tuple[str, ...] = ("velocity", "sample")


@dataclass(repr=False)
class Backbone:
    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    text_encoder_2: T5EncoderModel
    tokenizer: CLIPTokenizer
    tokenizer_2: T5TokenizerFast
    scheduler: FlowMatchEulerDiscreteScheduler
    device: torch.device
    dtype: torch.dtype  # of the frozen base; LoRA parameters are fp32 regardless
    max_sequence_length: int  # T5 tokens per prompt; pass the same to FluxFillPipeline.__call__
    prediction_type: PredictionType = "velocity"  # what the transformer outputs (see PREDICTION_TYPES)
    # per-backbone state, never copied by dataclasses.replace (a swapped module would make it stale)
    prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, init=False)
    _pipe: FluxFillPipeline | None = field(default=None, init=False)

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{n}={count_parameters(getattr(self, n)) / 1e6:.2f}M"
            for n in ("transformer", "vae", "text_encoder", "text_encoder_2")
        )
        return f"Backbone({sizes}, device={self.device}, dtype={self.dtype}, prediction_type={self.prediction_type})"

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def packed_channels(self) -> int:
        """Channels of a packed latent token: 2x2 latent cells of `latent_channels` each."""
        return 4 * self.vae.config.latent_channels

    def components(self) -> dict:
        """Exactly the keyword arguments of `FluxFillPipeline(...)`."""
        return dict(
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            text_encoder_2=self.text_encoder_2,
            tokenizer_2=self.tokenizer_2,
            transformer=self.transformer,
        )

    def pipeline(self) -> FluxFillPipeline:
        """A FluxFillPipeline over these same modules (no copies; built once, then reused). Its
        prompt encoding and saving serve every base; its sampling loop reads the transformer's
        output as velocity, so only a velocity base samples through `FluxFillPipeline.__call__`."""
        if self._pipe is None:
            self._pipe = FluxFillPipeline(**self.components())
        return self._pipe


def _freeze(*modules: nn.Module) -> None:
    for m in modules:
        m.eval()  # models built from configs start in train mode: T5 dropout would make embeddings vary
        m.requires_grad_(False)


def prediction_type_of(scheduler_config: dict) -> PredictionType:
    """A base's prediction type from its scheduler config; absent means velocity (FLUX's)."""
    kind = scheduler_config.get("prediction_type", "velocity")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"scheduler_config.json: prediction_type must be one of {', '.join(PREDICTION_TYPES)} "
                         f"(got {kind!r})")
    return kind


def assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device, dtype,
             prediction_type: PredictionType = "velocity", max_sequence_length: int | None = None):
    modules = (transformer, vae, text_encoder, text_encoder_2)
    for m in modules:
        m.to(device)  # device only: from_pretrained already set dtypes, keeping T5's `wo` in fp32 on purpose
    _freeze(*modules)  # the whole base is frozen; add_lora unfreezes what trains
    return Backbone(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=scheduler,
        device=torch.device(device),
        dtype=dtype,
        # T5 tokens per prompt: the caller's, else the tokenizer's; the pipeline refuses > 512
        max_sequence_length=min(max_sequence_length or int(tokenizer_2.model_max_length), 512),
        prediction_type=prediction_type,
    )


def resolve_device(name: str) -> str:
    """A config's device (`auto`: CUDA when there is one, else the CPU) as torch names it."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_backbone(name_or_path: str, dtype: torch.dtype, device: str, max_sequence_length: int | None = None) -> Backbone:
    """Every component by hub id or local directory, in diffusers' FLUX folder layout; safetensors
    only (no pickle is ever unpickled). The frozen base is cast to `dtype` (bf16 for the real model).
    `max_sequence_length`: T5 tokens per prompt (FluxFillPipeline's argument); default the tokenizer's."""
    p = str(name_or_path)
    transformer = FluxTransformer2DModel.from_pretrained(
        p, subfolder="transformer", torch_dtype=dtype, use_safetensors=True
    )
    vae = AutoencoderKL.from_pretrained(p, subfolder="vae", torch_dtype=dtype, use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(p, subfolder="text_encoder", dtype=dtype, use_safetensors=True)
    text_encoder_2 = T5EncoderModel.from_pretrained(p, subfolder="text_encoder_2", dtype=dtype, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(p, subfolder="tokenizer")
    tokenizer_2 = T5TokenizerFast.from_pretrained(p, subfolder="tokenizer_2")
    # the prediction type is the base's, not the scheduler class's (which would warn that it ignores it)
    scheduler_config = dict(FlowMatchEulerDiscreteScheduler.load_config(p, subfolder="scheduler"))
    prediction_type = prediction_type_of(scheduler_config)
    scheduler_config.pop("prediction_type", None)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    return assemble(transformer, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device, dtype,
                    prediction_type, max_sequence_length)


def save_backbone(backbone: Backbone, directory: str | Path) -> None:
    """Write the base in diffusers' layout (model_index.json + one folder per component),
    weights as safetensors, the prediction type in the scheduler's config (written only for a
    non-velocity base, so a velocity base's files stay FLUX's). Refuses a transformer that carries
    an adapter: adapters are saved apart, with save_adapter, so the base on disk is always the
    untouched base."""
    if getattr(backbone.transformer, "peft_config", None):
        raise ValueError("the transformer carries a LoRA adapter; save the base before add_lora/load_adapter")
    if backbone.prediction_type != prediction_type_of(backbone.scheduler.config):
        backbone.scheduler.register_to_config(prediction_type=backbone.prediction_type)
    backbone.pipeline().save_pretrained(str(directory), safe_serialization=True)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def seeded(seed: int, name: str) -> Iterator[None]:
    """Seed torch's CPU RNG from (seed, name) and restore it afterwards: each component's init is
    deterministic and independent of the others and of the caller's RNG state."""
    derived = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived)
        yield
