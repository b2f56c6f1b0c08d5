"""The in-context grid: three square panels side by side, `composite | layer 1 | layer 2` (for the
logo task `composite | logo | object`), and the masks that tell FLUX.1-Fill which panels to
generate for each task. The grid knows panels by position; their names belong to the layer task.

Conventions follow FluxFillPipeline: pixel tensors are in [-1, 1], the mask is 1 where the model
generates and 0 where it keeps (the pipeline feeds `image * (1 - mask)`), and packed latent tokens
are ordered row-major over 2x2 latent patches, i.e. 16x16-pixel cells for an 8x VAE.
"""

from __future__ import annotations

from enum import Enum
from typing import Sequence

import numpy as np
import torch
from PIL import Image

PANEL_NAMES = ("composite", "layer 1", "layer 2")  # left to right, for messages


class Task(str, Enum):
    DECOMPOSE = "decompose"  # keep composite, generate both layers
    COMPOSE = "compose"  # keep both layers, generate composite
    GENERATE = "generate"  # generate all three panels from text


GENERATED_PANELS: dict[Task, tuple[int, ...]] = {  # panel indices, left to right
    Task.DECOMPOSE: (1, 2),
    Task.COMPOSE: (0,),
    Task.GENERATE: (0, 1, 2),
}


def check_panel_size(panel_size: int, vae_scale: int = 8) -> None:
    """FLUX packs 2x2 latents of a `vae_scale`x VAE: panel sides must be multiples of 2 * vae_scale,
    which also makes every packed token fall inside exactly one panel."""
    cell = 2 * vae_scale
    if panel_size <= 0 or panel_size % cell:
        raise ValueError(f"panel size must be a positive multiple of {cell} px (got {panel_size})")


# -----------------------------------------------------------------------------
# PIL grids

def build_grid(composite: Image.Image, layer1: Image.Image, layer2: Image.Image) -> Image.Image:
    """Three s x s panels -> one RGB image of 3s x s."""
    panels = (composite, layer1, layer2)
    s = composite.size[0]
    for name, p in zip(PANEL_NAMES, panels):
        if p.size != (s, s):
            raise ValueError(f"{name} panel is {p.size[0]}x{p.size[1]}, expected {s}x{s} (square, same size)")
    grid = Image.new("RGB", (3 * s, s))
    for i, p in enumerate(panels):
        grid.paste(p.convert("RGB"), (i * s, 0))
    return grid


# -----------------------------------------------------------------------------
# tensor grids, in [-1, 1] like the pipeline's image processor produces

def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> [3, H, W] float in [-1, 1] (uint8 v -> v / 255 * 2 - 1, as VaeImageProcessor)."""
    img = img.convert("RGB")
    w, h = img.size
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(h, w, 3)
    return x.permute(2, 0, 1).float().div(255).mul(2).sub(1)


def to_unit_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL -> [B, C, H, W] in [0, 1] (what the metrics read; the grids above are in [-1, 1])."""
    arr = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr if arr.ndim == 4 else arr[..., None]).permute(0, 3, 1, 2)


def psnr(pred: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """Mean over images of PSNR (dB, peak 1); `weight` [B,1,H,W] restricts it to a region. The one
    PSNR: the codec's reconstruction figure, held-out evaluation and the cycle check all use it
    (here, not in codec.py: the layer tasks' metrics import it, and diffusers costs ~6 s to import)."""
    err = (pred - truth).pow(2)
    if weight is None:
        mse = err.flatten(1).mean(1)
    else:
        w = weight.expand_as(err)
        mse = (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)
    return float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())


def grid_tensor(images: list[tuple[Image.Image, Image.Image, Image.Image]]) -> torch.Tensor:
    """A batch of (composite, layer 1, layer 2) PIL triplets -> [B, 3, s, 3s] in [-1, 1]."""
    if not images:
        raise ValueError("no triplets given")
    return torch.stack([_pil_to_tensor(build_grid(*t)) for t in images])


def split_grid_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, C, s, 3s] -> (composite, layer 1, layer 2), each [B, C, s, s] (views, no copy)."""
    s, w = x.shape[-2:]
    if w != 3 * s:
        raise ValueError(f"grid tensor is {w}x{s}, expected width = 3 x height")
    c, l, o = (x[..., i * s : (i + 1) * s] for i in range(3))
    return c, l, o


def to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """[3, H, W] in [-1, 1] -> RGB image; [B, 3, H, W] -> list of B images.

    Quantises like the pipeline's postprocess: clamp((x + 1) / 2, 0, 1) * 255, rounded."""
    if x.ndim == 4:
        return [to_pil(xi) for xi in x]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected [3, H, W] or [B, 3, H, W], got {tuple(x.shape)}")
    u8 = (x.detach().float().cpu() / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
    h, w = u8.shape[-2:]
    return Image.frombytes("RGB", (w, h), u8.permute(1, 2, 0).contiguous().numpy().tobytes())


# -----------------------------------------------------------------------------
# masks

def task_mask(task: Task | str, panel_size: int) -> torch.Tensor:
    """[1, 1, s, 3s] float: 1 on the panels the task generates, 0 on the panels it keeps."""
    check_panel_size(panel_size)
    task = Task(task)
    s = panel_size
    mask = torch.zeros(1, 1, s, 3 * s)
    for i in GENERATED_PANELS[task]:
        mask[..., i * s : (i + 1) * s] = 1.0
    return mask


def token_mask(task: Task | str, panel_size: int, vae_scale: int = 8) -> torch.Tensor:
    """[1, tokens] bool over packed latent tokens, in `_pack_latents` order (row-major over
    (s / 16) x (3s / 16) cells of 16x16 px); True where the task generates.

    Each token covers 2 * vae_scale pixels a side and panel borders fall on token borders, so a
    token is either wholly generated or wholly kept: this is exact, not a rounding of the mask."""
    check_panel_size(panel_size, vae_scale)
    cell = 2 * vae_scale
    m = task_mask(task, panel_size)[0, 0]  # [s, 3s]
    h, w = m.shape[0] // cell, m.shape[1] // cell
    cells = m.view(h, cell, w, cell).permute(0, 2, 1, 3).reshape(h * w, cell * cell)  # [tokens, 256]
    return cells.amax(dim=1).bool()[None]  # [1, tokens]
