"""Sampling with the IC-LoRA: generate triplets, decompose composites, compose layers. Batched.

Each item's starting noise comes from its own seed, so an item's result does not depend on which
shard or resume produced it. The fixed task prompts are encoded once (backbone's prompt cache).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from configs import Config
from models.iclora.backbone import Backbone
from models.iclora.fill import decode_latents, encode_images, encode_prompts, fill_condition, latent_image_ids, pack, unpack
from models.iclora.grid import GENERATED_PANELS, Task, grid_tensor, split_grid_tensor, task_mask, to_pil
from models.iclora.objective import Conditioning, FlowMatching
from models.iclora.train import task_prompts

Panels = tuple[Image.Image, Image.Image, Image.Image]


def blank(size: int) -> Image.Image:
    """Stands in for a panel the model generates: masked out anyway (image * (1 - mask))."""
    return Image.new("RGB", (size, size), (255, 255, 255))


def item_noise(seed: int, tokens: int, channels: int) -> torch.Tensor:
    return torch.randn(tokens, channels, generator=torch.Generator().manual_seed(seed))  # [N, channels]


def fuse_qkv(backbone: Backbone) -> None:
    """model.fuse_qkv: one [3d, d] projection per attention instead of three (diffusers'
    fuse_qkv_projections). The fused Linear would bypass a LoRA on to_q/to_k/to_v, so an adapter is
    first merged into the base weights (fuse_lora); the backbone is then marked `fused`, and
    models.loop.runtime reloads the base before it serves another adapter or training: unmerging in bf16
    would not give the base back bit for bit."""
    tr = backbone.transformer
    if getattr(tr, "_layerboot_fused", False):
        return
    if getattr(tr, "peft_config", None):
        tr.fuse_lora()
    tr.fuse_qkv_projections()
    tr._layerboot_fused = True


@contextlib.contextmanager
def compiled_blocks(backbone: Backbone) -> Iterator[None]:
    """model.compile, regional: torch.compile of each repeated block (FLUX's double and single
    blocks, as diffusers' compile_repeated_blocks), so compile time is that of two blocks, not 57,
    and a new adapter or batch size recompiles two graphs. Attached for sampling only and kept
    between calls (compiled graphs are reused); training runs the blocks eagerly."""
    tr = backbone.transformer
    kinds = set(getattr(tr, "_repeated_blocks", ()))
    blocks = [m for m in tr.modules() if type(m).__name__ in kinds]
    for b in blocks:
        if getattr(b, "_layerboot_compiled", None) is None:
            b._layerboot_compiled = torch.compile(b._call_impl)
        b._compiled_call_impl = b._layerboot_compiled
    try:
        yield
    finally:
        for b in blocks:
            b._compiled_call_impl = None


@contextlib.contextmanager
def first_block_cache(backbone: Backbone, threshold: float) -> Iterator[None]:
    """sample.cache: diffusers' First Block Cache for one sampling call; off again afterwards, so
    training and other samplers on the shared base never see its hooks."""
    from diffusers.hooks import FirstBlockCacheConfig

    tr = backbone.transformer
    tr.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        yield
    finally:
        tr.disable_cache()


class Sampler:
    def __init__(self, backbone: Backbone, config: Config):
        self.backbone = backbone
        self.objective = FlowMatching(backbone, config.model.guidance_scale)
        self.steps = config.sample.steps
        self.batch_size = config.sample.batch_size
        self.prompts = task_prompts(config)
        self.compile = config.model.compile
        self.cache = config.sample.cache
        self.compose_strength = config.sample.compose_strength
        if config.model.fuse_qkv:
            fuse_qkv(backbone)

    @contextlib.contextmanager
    def speed_options(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self.compile:
                stack.enter_context(compiled_blocks(self.backbone))
            if self.cache:
                stack.enter_context(first_block_cache(self.backbone, self.cache))
            yield

    @torch.no_grad()
    def run(self, task: Task, grids: Sequence[Panels], descriptions: Sequence[str], seeds: Sequence[int],
            strength: float = 1.0) -> list[Panels]:
        """Fill the panels `task` generates; kept panels are returned as given (not re-decoded). With
        strength < 1, a generated panel starts from what `grids` holds there (FluxFillPipeline's `strength`)."""
        bb, out = self.backbone, []
        s = grids[0][0].size[0]
        for i in tqdm(range(0, len(grids), self.batch_size), desc=task.value, unit="batch", disable=None, leave=False):
            chunk = list(grids[i : i + self.batch_size])
            x0 = self.latents(task, chunk, descriptions[i : i + len(chunk)], seeds[i : i + len(chunk)], strength)
            made = split_grid_tensor(decode_latents(bb, unpack(x0, s, 3 * s, bb.vae_scale)).float().cpu())
            made_pil = [to_pil(p) for p in made]  # three lists of B images
            for j, given in enumerate(chunk):
                out.append(tuple(made_pil[k][j] if k in GENERATED_PANELS[task] else given[k] for k in range(3)))
        return out

    @torch.no_grad()
    def latents(self, task: Task, grids: Sequence[Panels], descriptions: Sequence[str], seeds: Sequence[int],
                strength: float = 1.0) -> torch.Tensor:
        """One batch, up to the final packed latents [B, N, 4C]: what FluxFillPipeline returns with
        output_type="latent" for the same prompt, grid, mask, starting noise and steps."""
        bb = self.backbone
        s = grids[0][0].size[0]
        img_ids = latent_image_ids(s, 3 * s, bb.vae_scale, device=bb.device)
        prompts = [self.prompts[task].format(prompt=d) for d in descriptions]
        embeds, pooled, text_ids = encode_prompts(bb, prompts)
        image = grid_tensor(list(grids))
        c = Conditioning(fill_condition(bb, image, task_mask(task, s)), embeds, pooled, text_ids, img_ids)
        noise = torch.stack([item_noise(sd, img_ids.shape[0], bb.packed_channels) for sd in seeds]).to(bb.device)
        init = pack(encode_images(bb, image)) if strength < 1 else None
        with self.speed_options():
            return self.objective.sample(c, self.steps, noise, init, strength)

    def decompose(self, composites: Sequence[Image.Image], seeds: Sequence[int], descriptions=None) -> list[tuple[Image.Image, Image.Image]]:
        s = composites[0].size[0]
        res = self.run(Task.DECOMPOSE, [(c, blank(s), blank(s)) for c in composites], descriptions or [""] * len(composites), seeds)
        return [(a, b) for _, a, b in res]

    def compose(self, layers1: Sequence[Image.Image], layers2: Sequence[Image.Image], seeds: Sequence[int],
                descriptions=None) -> list[Image.Image]:
        # the composite's panel holds the second layer: masked out of the condition, it is only the
        # start of sampling at sample.compose_strength < 1
        grids = [(b, a, b) for a, b in zip(layers1, layers2)]
        res = self.run(Task.COMPOSE, grids, descriptions or [""] * len(layers1), seeds, self.compose_strength)
        return [c for c, _, _ in res]

    def generate(self, descriptions: Sequence[str], seeds: Sequence[int], size: int) -> list[Panels]:
        return self.run(Task.GENERATE, [(blank(size),) * 3 for _ in descriptions], descriptions, seeds)
