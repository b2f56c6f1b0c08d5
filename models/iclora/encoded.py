"""Grids encoded once, trained on many times: clean latents plus each task's masked-image latents.

Token count, not the VAE, sets the cost of a training step, but re-encoding every batch would add
~40% on the tiny profile; so grids are encoded once (the posterior mode is deterministic) and
batches are assembled from stored tensors. N = packed tokens of one grid.

Two holders, one interface (`latents`, `mask_part`, `tokens`, `prompts`, `panel_size`):
  - EncodedGrids: everything in memory; for a handful of grids (a cycle batch, pretraining);
  - LatentPool: the training pool as a step needs it. Panels are read on demand; latents live in
    a LatentCache on disk, content-addressed by (the triplet's blob sha256s, VAE identity, panel
    size), so a round encodes only the triplets no earlier round (or resumed run) encoded, and
    memory does not grow with the pool: at 512 px a triplet is 2.4 MB of uint8 pixels, 9.4 MB as
    an fp32 grid, 2.4 MB of fp32 latents; the pool keeps none of them, a step loads its batch.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from safetensors.torch import load as load_tensors, save as save_tensors
from tqdm.auto import tqdm

from models.iclora.backbone import Backbone
from models.iclora.fill import encode_images, encode_prompts, fill_condition, latent_image_ids, pack
from models.iclora.grid import Task, grid_tensor, task_mask, token_mask
from models.iclora.objective import Conditioning
from storage.latents import EntryError, check_entry, entry_metadata

TASKS = (Task.DECOMPOSE, Task.COMPOSE, Task.GENERATE)
KEPT_TASKS = (Task.DECOMPOSE, Task.COMPOSE)  # GENERATE masks everything: its masked image is the same for every grid
ENCODING = "posterior-mode;(z-shift)*scale;v1"  # what a cached latent is: part of the VAE identity

Panels = tuple[Image.Image, Image.Image, Image.Image]


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

    def latents(self, idx: Sequence[int], tasks: Sequence[Task]) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0 [B, N, 4C], masked-image latents under each item's task [B, N, 4C])."""
        return self.x0[list(idx)], torch.stack([self.masked[t][i] for i, t in zip(idx, tasks)])


@torch.no_grad()
def encode_grids(
    backbone: Backbone,
    panels: Sequence[Panels],
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


# -----------------------------------------------------------------------------
# the latent cache


def vae_identity(backbone: Backbone) -> str:
    """sha256 of what makes a latent: the VAE's config, dtype and every weight's bytes, and how
    latents are taken (ENCODING). Computed once per VAE module (~0.3 s for FLUX's 84 M bf16)."""
    vae = backbone.vae
    cached = getattr(vae, "_layerboot_identity", None)
    if cached is not None:
        return cached
    h = hashlib.sha256(ENCODING.encode())
    h.update(repr(sorted(dict(vae.config).items())).encode())
    for name, t in sorted(vae.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    vae._layerboot_identity = h.hexdigest()
    return vae._layerboot_identity


def triplet_key(panels: Panels) -> str:
    """Content key of a triplet given as images: sha256 of the three panels' RGB bytes. Store rows
    use their blob sha256s instead (`blob_triplet_key`); both are content addresses."""
    h = hashlib.sha256(b"pixels")
    for p in panels:
        p = p.convert("RGB")
        h.update(f"{p.size};".encode())
        h.update(p.tobytes())
    return h.hexdigest()


def blob_triplet_key(composite_sha256: str, layer1_sha256: str, layer2_sha256: str) -> str:
    """Content key of a stored triplet: its grid spans three blobs, in panel order."""
    return hashlib.sha256(f"blobs:{composite_sha256}:{layer1_sha256}:{layer2_sha256}".encode()).hexdigest()


class CacheEntryError(ValueError):
    """A latent-cache entry that is readable but not a latent of its pool (wrong shape, NaN)."""


class LatentCache:
    """Latents per triplet as safetensors files: <root>/<vae identity[:16]>/<panel size>/<key[:2]>/<key>.safetensors.
    Written atomically (a temp file named like storage's, then a rename), so a killed run leaves
    either the whole entry or none; an entry that is unreadable or does not match the key and digest
    it records (storage/latents.py) is re-encoded. `root=None` keeps entries in
    memory (a few grids: tests, the CLI on a small pool)."""

    def __init__(self, root: str | Path | None, vae_id: str, panel_size: int):
        self.root = None if root is None else Path(root) / vae_id[:16] / str(panel_size)
        self.memory: dict[str, dict[str, torch.Tensor]] = {}
        self.hits = self.misses = self.damaged = 0

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The entry of `key`, or None when there is none to trust: missing, unreadable, or not
        matching the key and content digest it records (storage/latents.py: edited since it was
        written, or written without one); such an entry is encoded again and rewritten."""
        if self.root is None:
            entry = self.memory.get(key)
        else:
            try:
                data = self.path(key).read_bytes()
                check_entry(data, key)
                entry = load_tensors(data)
            except FileNotFoundError:
                entry = None
            except Exception:  # noqa: BLE001 - EntryError, or unreadable by safetensors - a damaged entry is a miss; it is rewritten
                entry = None
                self.damaged += 1
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        if self.root is None:
            self.memory[key] = tensors
            return
        data = save_tensors(tensors, metadata=entry_metadata(save_tensors(tensors), key))
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)


class LatentPool:
    """A training pool: `triplets[i]` (may read from the store on access), `prompts[i]`, `keys[i]`
    (content keys). `encode()` fills the cache with the triplets it lacks; `latents(idx, tasks)`
    loads a batch. Nothing per triplet is held beyond its key and prompt."""

    def __init__(self, backbone: Backbone, triplets: Sequence[Panels], prompts: Sequence[str],
                 cache: LatentCache, keys: Sequence[str] | None = None, panel_size: int | None = None):
        if len(triplets) != len(prompts) or (keys is not None and len(keys) != len(triplets)):
            raise ValueError("triplets, prompts and keys must have the same length")
        self.backbone = backbone
        self.triplets = triplets
        self.prompts = list(prompts)
        self.cache = cache
        self.keys = list(keys) if keys is not None else [triplet_key(t) for t in triplets]
        self.panel_size = panel_size or triplets[0][0].size[0]
        self.tokens = {t: token_mask(t, self.panel_size, backbone.vae_scale)[0] for t in TASKS}
        self.mask_part: dict[Task, torch.Tensor] = {}
        self._generate_masked: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @torch.no_grad()
    def encode(self, desc: str = "encode pool") -> int:
        """Encode the triplets the cache lacks; returns how many were encoded. One triplet per VAE
        call (its grid and its two masked grids, a batch of 3): a cached latent must not depend on
        which other triplets were missing with it (CPU kernels give batch 1 and batch 8 different
        last bits), and each triplet is encoded once, ever, so batching across them gains little."""
        s, bb = self.panel_size, self.backbone
        constants = self.cache.get("constants")
        if constants is None:  # the packed masks, and GENERATE's masked image (all masked: the same for any grid)
            zeros = torch.zeros(1, 3, s, 3 * s)
            conds = {t: fill_condition(bb, zeros, task_mask(t, s))[0].float() for t in TASKS}
            packed = bb.packed_channels  # 4C: 64 for FLUX's 16 latent channels, 256 for the tiny codec's 64
            constants = {f"mask.{t.value}": c[:, packed:] for t, c in conds.items()}
            constants["masked.generate"] = conds[Task.GENERATE][:, :packed]
            self.cache.put("constants", constants)
        self.mask_part = {t: constants[f"mask.{t.value}"] for t in TASKS}
        self._generate_masked = constants["masked.generate"]
        missing = sorted({k: i for i, k in enumerate(self.keys) if not self._has(k)}.values())
        for i in tqdm(missing, desc=desc, unit="triplet", disable=None, leave=False):
            self._encode_one(i)
        return len(missing)

    @torch.no_grad()
    def _encode_one(self, i: int) -> dict[str, torch.Tensor]:
        s, bb = self.panel_size, self.backbone
        keep = torch.cat([torch.ones(1, 1, s, 3 * s)] + [1 - task_mask(t, s) for t in KEPT_TASKS])  # [3, 1, s, 3s]
        grid = grid_tensor([self.triplets[i]])  # [1, 3, s, 3s]: only this triplet's pixels, as fp32
        z = pack(encode_images(bb, grid * keep))  # [3, N, 4C]: the grid, then image * (1 - mask) per task
        entry = {"x0": z[0].float(), **{t.value: z[1 + j].to(bb.dtype).float() for j, t in enumerate(KEPT_TASKS)}}
        self.cache.put(self.keys[i], entry)  # (masked latents cast to the base dtype, as fill_condition does)
        return entry

    def _check(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        """An entry that reads but holds no latent of this pool (edited, or written by another
        version) would fail a batch with a shape traceback, or train on NaN."""
        expected = [len(self.tokens[Task.GENERATE]), self.backbone.packed_channels]
        where = self.cache.path(key) if self.cache.root is not None else f"latent cache entry {key}"
        for name in ("x0", *(t.value for t in KEPT_TASKS)):
            value, problem = entry.get(name), None
            if value is None:
                problem = "is missing"
            elif list(value.shape) != expected:
                problem = f"is {list(value.shape)}, a {expected} latent is expected"
            elif not torch.isfinite(value).all():
                problem = "holds NaN or infinite values"
            if problem:
                raise CacheEntryError(f"{where}: {name} {problem} (delete it: it is encoded again)")

    def _has(self, key: str) -> bool:
        if self.cache.root is None:
            return key in self.cache.memory
        return self.cache.path(key).is_file()

    def latents(self, idx: Sequence[int], tasks: Sequence[Task]) -> tuple[torch.Tensor, torch.Tensor]:
        if self._generate_masked is None:
            raise RuntimeError("call encode() first")
        x0, masked = [], []
        for i, t in zip(idx, tasks):
            entry = self.cache.get(self.keys[i])
            if entry is None:  # removed or damaged since encode(): encode it again
                entry = self._encode_one(i)
            self._check(self.keys[i], entry)
            x0.append(entry["x0"])
            masked.append(self._generate_masked if t == Task.GENERATE else entry[t.value])
        return torch.stack(x0), torch.stack(masked)


def make_batch(
    backbone: Backbone, enc: EncodedGrids | LatentPool, idx: Sequence[int], tasks: Sequence[Task],
    task_prompts: dict[Task, str],
) -> tuple[torch.Tensor, Conditioning, torch.Tensor]:
    """(x0 [B, N, 4C], conditioning, generated tokens [B, N]) for grids `idx` under `tasks`.

    task_prompts[t] is a template; `{prompt}` in it is replaced by the grid's own description."""
    idx = list(idx)
    x0, masked = enc.latents(idx, tasks)
    cond = torch.cat([masked, torch.stack([enc.mask_part[t] for t in tasks])], dim=-1)  # [B, N, 4C + 256]
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
    return x0.to(backbone.device), c, tokens
