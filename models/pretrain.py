"""Pretraining the tiny base that ships with the package (`layerboot pretrain-tiny`).

Like FLUX.1-Fill-dev for the real profile, the tiny profile starts from a pretrained base:
  1. the VAE, on single procedural images, until it reconstructs well (aim >= 28 dB);
  2. the Fill transformer (all weights) as a broad in-context model: three-panel grids of
     *other* families (models/pretrain_data.py: blends, overlays, copies, shifts, recolours)
     under the same masks the task uses (keep one side, generate the rest).
Neither stage ever sees the logo-on-object domain or its test split; the only domain images
touched here are a fixed probe set, used to *report* VAE reconstruction, never to train.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from models.backbone import Backbone, TinySpec, build_tiny, save_backbone
from models.encoded import TASKS, encode_grids, make_batch
from models.grid import Task
from models.objective import FlowMatching
from models.pretrain_data import make_example, make_image
from models.train import optimizer_step
from storage.hashing import derive_seed, stable_id

RECIPE_FILE = "RECIPE.json"


@dataclass(frozen=True)
class PretrainRecipe:
    seed: int = 0
    panel_size: int = 64
    vae_steps: int = 2500
    vae_batch: int = 8
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    transformer_examples: int = 6000  # encoded once, then sampled with replacement
    transformer_steps: int = 12000
    transformer_batch: int = 8
    transformer_lr: float = 5e-4
    guidance_scale: float = 1.0
    grad_clip: float = 1.0


def recipe_hash(spec: TinySpec, recipe: PretrainRecipe) -> str:
    """What the shipped weights were made from; a test checks the shipped RECIPE.json against it."""
    return stable_id(json.dumps({"spec": asdict(spec), "recipe": asdict(recipe)}, sort_keys=True), length=16)


def to_tensor(images) -> torch.Tensor:
    """list of PIL RGB -> [B, 3, H, W] in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # [B, H, W, 3]
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of tensors in [-1, 1] -> [B]."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ---- stage 1: VAE ---------------------------------------------------------------------------
def _vae_batch(recipe: PretrainRecipe, step: int) -> torch.Tensor:
    s = recipe.panel_size
    images = []
    for i in range(recipe.vae_batch):
        seed = derive_seed(recipe.seed, "vae", step, i)
        # half single images, half panels of in-context examples: the VAE must serve both
        images.append(make_image(seed, s) if i % 2 == 0 else make_example(seed, s).panels[seed % 3])
    return to_tensor(images)


@torch.no_grad()
def reconstruction_psnr(backbone: Backbone, images: torch.Tensor) -> float:
    vae = backbone.vae
    recon = vae.decode(vae.encode(images).latent_dist.mode()).sample.clamp(-1, 1)
    return psnr(recon, images).mean().item()


def vae_probe_sets(recipe: PretrainRecipe, n: int = 32) -> dict[str, torch.Tensor]:
    """Held-out images of the pretraining families, and (report only) panels of the task domain."""
    from models.synthetic import make_triplet  # report only: never a training input

    s = recipe.panel_size
    held_out = to_tensor([make_image(derive_seed(recipe.seed, "vae-heldout", i), s) for i in range(n)])
    probe = [make_triplet(derive_seed(recipe.seed, "vae-domain-probe", i), s) for i in range(n // 3 + 1)]
    domain = to_tensor([getattr(t, p) for t in probe for p in ("composite", "logo", "object")][:n])
    return {"heldout_families": held_out, "domain_probe": domain}


def pretrain_vae(backbone: Backbone, recipe: PretrainRecipe, log: Callable[[str], None] = print) -> dict:
    vae = backbone.vae
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    bar = tqdm(range(recipe.vae_steps), desc="pretrain vae", unit="step", disable=None)
    history = []
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, recipe.vae_steps, recipe.vae_lr)
        x = _vae_batch(recipe, step)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        loss = rec + recipe.vae_kl_weight * posterior.kl().mean()
        optimizer_step(opt, loss, vae.parameters(), recipe.grad_clip)
        history.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
        if step % 500 == 0 or step == recipe.vae_steps - 1:
            vae.eval()
            scores = {k: round(reconstruction_psnr(backbone, v), 2) for k, v in vae_probe_sets(recipe, 16).items()}
            vae.train()
            log(f"vae step {step}: loss {np.mean(history[-50:]):.4f} psnr {scores}")
    vae.eval().requires_grad_(False)
    return {k: round(reconstruction_psnr(backbone, v), 2) for k, v in vae_probe_sets(recipe).items()}


# ---- stage 2: the Fill transformer as a broad in-context model --------------------------------
# Task prompts for pretraining: the same three directions as the real task, in generic words.
PRETRAIN_PROMPTS = {
    Task.DECOMPOSE: "split the left panel into the two panels it is made of: {prompt}",
    Task.COMPOSE: "make the left panel from the two panels on the right: {prompt}",
    Task.GENERATE: "{prompt}",
}


def pretrain_transformer(backbone: Backbone, recipe: PretrainRecipe, log: Callable[[str], None] = print) -> dict:
    s = recipe.panel_size
    examples = [make_example(derive_seed(recipe.seed, "transformer", i), s) for i in range(recipe.transformer_examples)]
    enc = encode_grids(backbone, [e.panels for e in examples], [e.prompt for e in examples], desc="encode examples")
    tr = backbone.transformer
    tr.train().requires_grad_(True)
    objective = FlowMatching(backbone, guidance_scale=recipe.guidance_scale)
    opt = torch.optim.AdamW(tr.parameters(), lr=recipe.transformer_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(derive_seed(recipe.seed, "transformer-noise"))
    bar = tqdm(range(recipe.transformer_steps), desc="pretrain transformer", unit="step", disable=None)
    history = []
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, recipe.transformer_steps, recipe.transformer_lr)
        idx = torch.randint(len(enc), (recipe.transformer_batch,), generator=gen).tolist()
        tasks = [TASKS[k] for k in torch.randint(3, (recipe.transformer_batch,), generator=gen).tolist()]
        x0, c, tokens = make_batch(backbone, enc, idx, tasks, PRETRAIN_PROMPTS)
        loss = objective.loss(x0, c, tokens, generator=gen)
        optimizer_step(opt, loss, tr.parameters(), recipe.grad_clip)
        history.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.4f}")
        if step % 500 == 0 or step == recipe.transformer_steps - 1:
            log(f"transformer step {step}: loss {np.mean(history[-200:]):.4f}")
    tr.eval().requires_grad_(False)
    return {"final_loss": round(float(np.mean(history[-200:])), 4), "steps": recipe.transformer_steps}


# ---- the command --------------------------------------------------------------------------------
def pretrain_tiny(out_dir: str | Path, spec: TinySpec, recipe: PretrainRecipe, stages=("vae", "transformer"),
                  log: Callable[[str], None] = print, command: str = "") -> dict:
    """Run the stages and write the base (diffusers layout, safetensors) plus RECIPE.json.

    A stage not asked for is taken from an existing base in `out_dir` (so the VAE can be fitted
    once and the transformer stage re-run on top of it)."""
    out_dir = Path(out_dir)
    torch.manual_seed(recipe.seed)
    backbone = build_tiny(spec, seed=recipe.seed)
    record = json.loads((out_dir / RECIPE_FILE).read_text()) if (out_dir / RECIPE_FILE).exists() else {}
    if "vae" not in stages or "transformer" not in stages:
        from models.backbone import load_backbone

        previous = load_backbone(str(out_dir), torch.float32, "cpu")
        if "vae" not in stages:
            backbone.vae.load_state_dict(previous.vae.state_dict())
        if "transformer" not in stages:
            backbone.transformer.load_state_dict(previous.transformer.state_dict())
    results = dict(record.get("results", {}))
    for stage in stages:
        t0 = time.time()
        metrics = pretrain_vae(backbone, recipe, log) if stage == "vae" else pretrain_transformer(backbone, recipe, log)
        results[stage] = metrics | {"seconds": round(time.time() - t0, 1)}
        log(f"{stage}: {results[stage]}")
    save_backbone(backbone, out_dir)
    record = {
        "recipe_hash": recipe_hash(spec, recipe),
        "spec": asdict(spec),
        "recipe": asdict(recipe),
        "results": results,
        "command": command or "layerboot pretrain-tiny",
        "torch": torch.__version__,
    }
    (out_dir / RECIPE_FILE).write_text(json.dumps(record, indent=1))
    return record
