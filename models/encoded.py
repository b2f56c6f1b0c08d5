"""Grids encoded once, trained on many times: clean latents plus each task's masked-image latents.

Token count, not the VAE, sets the cost of a training step, but re-encoding every batch would add
~40% on the tiny profile; so pools are encoded once (the posterior mode is deterministic) and
batches are assembled from cached tensors. N = packed tokens of one grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from models.backbone import Backbone, encode_images, encode_prompts, fill_condition, latent_image_ids, pack
from models.grid import Task, grid_tensor, task_mask, token_mask
from models.objective import Conditioning

TASKS = (Task.DECOMPOSE, Task.COMPOSE, Task.GENERATE)


@dataclass
class EncodedGrids:
    x0: torch.Tensor  # [M, N, 4C] clean grid latents
    masked: dict[Task, torch.Tensor]  # task -> [M, N, 4C] latents of grid * (1 - mask)
    mask_part: dict[Task, torch.Tensor]  # task -> [N, 256] packed mask (the same for every grid)
    tokens: dict[Task, torch.Tensor]  # task -> [N] bool, generated tokens
    prompts: list[str]  # per grid: what the triplet shows
    panel_size: int

    def __len__(self) -> int:
        return self.x0.shape[0]


@torch.no_grad()
def encode_grids(
    backbone: Backbone,
    panels: Sequence[tuple[Image.Image, Image.Image, Image.Image]],
    prompts: Sequence[str],
    batch_size: int = 32,
    desc: str = "encode",
) -> EncodedGrids:
    s = panels[0][0].size[0]
    c = backbone.packed_channels
    x0, masked = [], {t: [] for t in TASKS}
    for i in tqdm(range(0, len(panels), batch_size), desc=desc, unit="batch", disable=None, leave=False):
        grid = grid_tensor(list(panels[i : i + batch_size]))  # [b, 3, s, 3s]
        x0.append(pack(encode_images(backbone, grid)).float())
        for t in TASKS:
            masked[t].append(fill_condition(backbone, grid, task_mask(t, s))[..., :c].float())
    probe = grid_tensor([panels[0]])
    return EncodedGrids(
        x0=torch.cat(x0),
        masked={t: torch.cat(v) for t, v in masked.items()},
        mask_part={t: fill_condition(backbone, probe, task_mask(t, s))[0, :, c:].float() for t in TASKS},
        tokens={t: token_mask(t, s, backbone.vae_scale)[0] for t in TASKS},
        prompts=list(prompts),
        panel_size=s,
    )


def make_batch(
    backbone: Backbone, enc: EncodedGrids, idx: Sequence[int], tasks: Sequence[Task], task_prompts: dict[Task, str]
) -> tuple[torch.Tensor, Conditioning, torch.Tensor]:
    """(x0 [B, N, 4C], conditioning, generated tokens [B, N]) for grids `idx` under `tasks`.

    task_prompts[t] is a template; `{prompt}` in it is replaced by the grid's own description."""
    idx = list(idx)
    cond = torch.stack(
        [torch.cat([enc.masked[t][i], enc.mask_part[t]], dim=-1) for i, t in zip(idx, tasks)]
    )  # [B, N, 4C + 256]
    prompts = [task_prompts[t].format(prompt=enc.prompts[i]) for i, t in zip(idx, tasks)]
    embeds, pooled, text_ids = encode_prompts(backbone, prompts)
    s = enc.panel_size
    c = Conditioning(
        cond=cond.to(backbone.device),
        prompt_embeds=embeds,
        pooled=pooled,
        text_ids=text_ids,
        img_ids=latent_image_ids(s, 3 * s, backbone.vae_scale, device=backbone.device),
    )
    tokens = torch.stack([enc.tokens[t] for t in tasks]).to(backbone.device)
    return enc.x0[idx].to(backbone.device), c, tokens
