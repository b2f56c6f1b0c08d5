"""Pretraining the tiny base that ships with the package (`layerboot pretrain-tiny`).

Like FLUX.1-Fill-dev for the real profile, the tiny profile starts from a pretrained base: a
small general model of the procedural world, which knows what objects and emblems look like but
has never seen the decomposition. Three stages:
  1. encoder: the VAE's encoder is built as an exact 8x8-patch PCA (models/iclora/codec.py) of single
     images of the world: generic families, plain objects, flat emblems and glyphs, each on its own;
  2. decoder: the VAE's decoder is fitted to invert those fixed codes (needs only stage 1, so it
     can run beside stage 3);
  3. transformer: the Fill transformer (all weights) as a broad in-context model: three-panel
     grids of *other* families (models/pretrain/data.py: blends, overlays, copies, shifts,
     recolours) under the task's masks, and text-to-image "drawings": three unrelated single
     images (object | emblem | object) drawn from their descriptions.
No stage ever sees a (composite, logo, object) triplet, or any seed of the domain's namespaces
("synthetic", test, judge calibration): single images come from seed namespaces of their own.
The domain probe (panels of "vae-domain-probe" triplets) is used to *report* reconstruction only.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from models.iclora.backbone import Backbone, save_backbone
from models.iclora.tiny import TinySpec, build_tiny
from models.iclora.codec import DECODER_WEIGHTS, build_pca_encoder, fit_decoder, reconstruction_psnr
from models.iclora.encoded import KEPT_TASKS, TASKS, encode_grids, make_batch
from models.iclora.grid import Task
from models.iclora.objective import FlowMatching
from models.pretrain.data import RELATIONS, NAMED_RELATIONS, make_example, make_example_of, make_image
from models.domains.intrinsic import world as intrinsic
from models.domains.logo_object import world as logo_object
from models.iclora.checkpoint import (LOG_FILE, STATE_FILE, STATE_TENSORS, load_module, module_saver, read_checkpoint,
                                     write_checkpoint)
from models.iclora.train import optimizer_step
from storage.fs import refuse_foreign_files
from storage.hashing import derive_seed, stable_id

RECIPE_FILE = "RECIPE.json"
TRANSFORMER_CHECKPOINT = "checkpoint-transformer"  # inside the base's folder while the stage runs
DECODER_CHECKPOINT = "checkpoint-decoder"  # likewise
CHECKPOINTS = {"decoder": DECODER_CHECKPOINT, "transformer": TRANSFORMER_CHECKPOINT}
TRANSFORMER_WEIGHTS = "transformer.safetensors"
STAGES = ("encoder", "decoder", "transformer")
MASKS = {  # PretrainRecipe.masks: the masks each kind of batch trains under
    "every": {"relations": TASKS, "drawings": TASKS},
    "split": {"relations": KEPT_TASKS, "drawings": (Task.GENERATE,)},
}


@dataclass(frozen=True)
class Stage:
    """One stage of a curriculum: `steps` steps on `relations` (examples drawn by name, an equal
    share each), `drawing_share` of its batches text-to-image drawings. Each stage warms its
    learning rate up again and holds it (as bench/probes/copy_first_base.py measured it)."""
    relations: tuple[str, ...]
    steps: int
    drawing_share: float = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.relations) - set(RELATIONS + NAMED_RELATIONS)
        if unknown or not self.relations or self.steps < 1 or not 0 <= self.drawing_share < 1:
            raise ValueError(f"a curriculum stage needs known relations (unknown: {sorted(unknown)}), "
                             f"steps >= 1 and 0 <= drawing_share < 1: {self}")


@dataclass(frozen=True)
class PretrainRecipe:
    seed: int = 0
    panel_size: int = 64
    pca_images: int = 3000  # single images the PCA encoder is fitted on
    decoder_steps: int = 8000
    decoder_batch: int = 8
    decoder_lr: float = 1e-3
    transformer_examples: int = 6000  # in-context examples, encoded once, sampled with replacement
    drawing_examples: int = 3000  # text-to-image drawings, likewise
    drawing_share: float = 0.35  # of each batch: a fair share of text-to-image
    transformer_steps: int = 5000
    transformer_batch: int = 8
    transformer_lr: float = 5e-4
    guidance_scale: float = 1.0
    grad_clip: float = 1.0
    # the procedural world whose single images the text-to-image share draws (a layer task's
    # world: logo_object draws objects and emblems, intrinsic flat-colour scenes and grey light)
    world: str = "logo_object"
    world_level: int | None = None  # the world's level the drawings show (data.world_level; None: the full world)
    # which masks each kind of batch trains under: "every" (the first bases: relations and drawings
    # under all three) or "split" (relations only under the masks that keep a panel, where the
    # answer is in the context; drawings only under text-to-image, where the text is all there is).
    # Under "every", a relation under the text-only mask and a drawing beside an unrelated kept
    # panel both teach the transformer to ignore what the context holds (docs/research-log.md).
    masks: str = "every"
    # Empty: every step draws from the whole mix (RELATIONS and the drawings, `drawing_share`), on
    # a cosine schedule. A curriculum instead trains its stages in order, each on its own relations
    # (the shipped mix spreads a width-192 transformer over twelve relations and none is learnt;
    # learnt one after another, each is kept: docs/research-log.md); `transformer_steps` and
    # `drawing_share` are then the stages'.
    curriculum: tuple[Stage, ...] = ()

    def __post_init__(self) -> None:
        if self.masks not in MASKS:
            raise ValueError(f"PretrainRecipe.masks must be one of {sorted(MASKS)}, got {self.masks!r}")
        if self.curriculum and self.transformer_steps != sum(st.steps for st in self.curriculum):
            raise ValueError(f"PretrainRecipe.transformer_steps ({self.transformer_steps}) must be the sum of "
                             f"the curriculum's stages ({sum(st.steps for st in self.curriculum)})")

    @property
    def curriculum_relations(self) -> tuple[str, ...]:
        """Every relation some stage draws, in first-seen order."""
        return tuple(dict.fromkeys(r for st in self.curriculum for r in st.relations))

    def stage_at(self, step: int) -> tuple[int, int]:
        """Which curriculum stage `step` falls in, and the step that stage started at."""
        start = 0
        for k, st in enumerate(self.curriculum):
            if step < start + st.steps:
                return k, start
            start += st.steps
        raise IndexError(f"step {step} is past the curriculum's {start} steps")


# The routing-first curriculum (docs/research-log.md, "What stops the copy in the pretraining
# mix"): copying first, under the masks that keep a panel, then the relations that move and lay
# layers over (a layer task's decomposition is one of them run backwards), then the cut-out at
# another scale, then the drawings beside them. x-prediction at lr 1e-3, as it was measured.
ROUTING = ("copy", "shift", "alpha_over")
ROUTING_FIRST = (Stage(("copy",), 1500), Stage(ROUTING, 1500), Stage(ROUTING + ("cut_out",), 2000),
                 Stage(ROUTING + ("cut_out",), 3000, drawing_share=0.35))
RECIPES = {  # `layerboot pretrain-tiny --recipe NAME`
    "mix": PretrainRecipe(),  # the first bases': every relation and the drawings, every step
    "routing-first": PretrainRecipe(transformer_lr=1e-3, masks="split", curriculum=ROUTING_FIRST,
                                    transformer_steps=sum(st.steps for st in ROUTING_FIRST)),
}


WORLD_SINGLES = {  # the world's single-image maker, and the kinds a drawing shows left to right
    "logo_object": (logo_object.make_single, ("object", "logo", "object")),
    "intrinsic": (intrinsic.make_single, ("albedo", "shading", "albedo")),
}


def recipe_hash(spec: TinySpec, recipe: PretrainRecipe) -> str:
    """What the shipped weights were made from; a test checks the shipped RECIPE.json against it.
    Fields added after the first base (`world`, `prediction_type`, ...) count only when they differ
    from that base's values, so its hash stays what it was."""
    older = {"world": "logo_object", "prediction_type": "velocity", "world_level": None, "masks": "every",
             "curriculum": ()}
    def counted(obj) -> dict:
        return {k: v for k, v in asdict(obj).items() if k not in older or older[k] != v}

    return stable_id(json.dumps({"spec": counted(spec), "recipe": counted(recipe)}, sort_keys=True), length=16)


def to_tensor(images) -> torch.Tensor:
    """list of PIL RGB -> [B, 3, H, W] in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # [B, H, W, 3]
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1


def cosine_lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ---- stages 1 and 2: the codec --------------------------------------------------------------
def single_image(seed: int, size: int, i: int):
    """The codec's data, in turn: a generic picture, a plain object, a flat emblem or glyph."""
    kind = i % 3
    return make_image(seed, size) if kind == 0 else logo_object.make_single(seed, size, ("object", "logo")[kind - 1])[0]


def codec_batch(recipe: PretrainRecipe, namespace: str, step: int, n: int) -> torch.Tensor:
    return to_tensor([single_image(derive_seed(recipe.seed, namespace, step, i), recipe.panel_size, i) for i in range(n)])


def codec_probes(recipe: PretrainRecipe, n: int = 48) -> dict[str, torch.Tensor]:
    """Held-out single images, and (report only) each panel kind of the task domain."""
    from models.domains.logo_object.world import make_triplet  # report only: never a training input

    s = recipe.panel_size
    probes = {"heldout_singles": codec_batch(recipe, "codec-heldout", 0, n)}
    triplets = [make_triplet(derive_seed(recipe.seed, "vae-domain-probe", i), s) for i in range(n)]
    for panel in logo_object.PANELS:
        probes[f"domain_{panel}"] = to_tensor([getattr(t, panel) for t in triplets])
    return probes


def pretrain_encoder(backbone: Backbone, recipe: PretrainRecipe, log: Callable[[str], None] = print) -> dict:
    images = torch.cat([codec_batch(recipe, "codec-pca", j, 50) for j in range(recipe.pca_images // 50)])
    figures = build_pca_encoder(backbone.vae, images)
    log(f"encoder: {figures}")
    return figures


def pretrain_decoder(backbone: Backbone, recipe: PretrainRecipe, log: Callable[[str], None] = print,
                     checkpoint: Path | None = None, checkpoint_every: int = 500,
                     on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """The decoder stage; with `checkpoint` (a folder) it resumes like the transformer stage."""
    decoder_fields = ("seed", "panel_size", "decoder_steps", "decoder_batch", "decoder_lr", "grad_clip")
    return fit_decoder(
        backbone.vae, lambda step: codec_batch(recipe, "codec-decoder", step, recipe.decoder_batch),
        recipe.decoder_steps, recipe.decoder_lr, codec_probes(recipe, 16), recipe.grad_clip, log,
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint,
        fingerprint={k: getattr(recipe, k) for k in decoder_fields},
    ) | {"final_probe_n": 48, **{f"final_{k}": v for k, v in _final_codec(backbone).items()}}


def _final_codec(backbone: Backbone) -> dict:
    return {k: round(reconstruction_psnr(backbone.vae, v), 2) for k, v in codec_probes(PretrainRecipe()).items()}


# ---- stage 3: the Fill transformer as a broad in-context model that can draw ------------------
# Task prompts for pretraining: the same three directions as the real task, in generic words.
PRETRAIN_PROMPTS = {
    Task.DECOMPOSE: "split the left panel into the two panels it is made of: {prompt}",
    Task.COMPOSE: "make the left panel from the two panels on the right: {prompt}",
    Task.GENERATE: "{prompt}",
}
# Drawings: the panels are unrelated, so under every mask the text alone says what to draw.
DRAWING_PROMPTS = {t: "{prompt}" for t in TASKS}


def make_drawing(seed: int, size: int, world: str = "logo_object", level: int | None = None):
    """Text-to-image: three single images of the world (at `level`, when it has levels), each of
    its own seed (never a triplet), and the description of each. logo_object: `object | emblem |
    object` ("left a red mug; middle a blue star emblem; right ..."); intrinsic: `flat colours |
    grey light | flat colours`."""
    single, kinds = WORLD_SINGLES[world]
    if level is not None:
        single = functools.partial(single, level=level)
    (a, pa), (b, pb), (c, pc) = (single(derive_seed(seed, i), size, kind) for i, kind in enumerate(kinds))
    return (a, b, c), f"left {pa}; middle {pb}; right {pc}"


def _final_loss(losses: list[float], n: int) -> float | None:
    """Mean of the last n losses; None, not NaN, when that kind never ran (RECIPE.json is JSON)."""
    return round(float(np.mean(losses[-n:])), 4) if losses else None


def pretrain_transformer(backbone: Backbone, recipe: PretrainRecipe, log: Callable[[str], None] = print,
                         checkpoint: Path | None = None, checkpoint_every: int = 500,
                         on_checkpoint: Callable[[int], None] | None = None) -> dict:
    """The transformer stage. With `checkpoint` (a folder), the weights, optimizer, RNG and losses
    are saved there every `checkpoint_every` steps and a rerun continues from the last one exactly
    (the examples are drawn and encoded again: deterministic, minutes); the caller removes it."""
    s = recipe.panel_size
    if recipe.curriculum:  # an equal share of the examples for each relation some stage draws
        per = recipe.transformer_examples // len(recipe.curriculum_relations)
        examples = [make_example_of(derive_seed(recipe.seed, "transformer", r, j), s, r)
                    for r in recipe.curriculum_relations for j in range(per)]
        pools = [[i for i, e in enumerate(examples) if e.relation in st.relations] for st in recipe.curriculum]
    else:
        examples = [make_example(derive_seed(recipe.seed, "transformer", i), s) for i in range(recipe.transformer_examples)]
    relations = encode_grids(backbone, [e.panels for e in examples], [e.prompt for e in examples], desc="encode examples")
    draws = not recipe.curriculum or any(st.drawing_share for st in recipe.curriculum)  # the mix always draws
    drawings = [make_drawing(derive_seed(recipe.seed, "drawing", i), s, recipe.world, recipe.world_level)
                for i in range(recipe.drawing_examples if draws else 0)]
    drawn = encode_grids(backbone, [d[0] for d in drawings], [d[1] for d in drawings], desc="encode drawings") if draws else None
    tr = backbone.transformer
    tr.train().requires_grad_(True)
    # no resolution shift: a base serves every grid size (the adapter's training applies the shift)
    objective = FlowMatching(backbone, guidance_scale=recipe.guidance_scale, resolution_shift=False)
    opt = torch.optim.AdamW(tr.parameters(), lr=recipe.transformer_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(derive_seed(recipe.seed, "transformer-noise"))
    start, history = 0, {"relations": [], "drawings": []}
    if checkpoint is not None and (checkpoint / STATE_FILE).exists():
        start, history, meta = read_checkpoint(checkpoint, opt, gen)
        if meta["recipe"] != json.loads(json.dumps(asdict(recipe))):  # (as JSON: a stage's tuple is a list there)
            raise ValueError(f"{checkpoint} is a checkpoint of another recipe ({meta['recipe']}); "
                             "remove it to start again")
        load_module(tr, checkpoint, TRANSFORMER_WEIGHTS)
        log(f"transformer: resumed at step {start} from {checkpoint}")
    bar = tqdm(range(start, recipe.transformer_steps), initial=start, total=recipe.transformer_steps,
               desc="pretrain transformer", unit="step", disable=None)
    for step in bar:
        if recipe.curriculum:
            k, start_of_stage = recipe.stage_at(step)
            lr, share = recipe.transformer_lr * min(1.0, (step - start_of_stage + 1) / 100), recipe.curriculum[k].drawing_share
        else:
            lr, share = cosine_lr(step, recipe.transformer_steps, recipe.transformer_lr), recipe.drawing_share
        for g in opt.param_groups:
            g["lr"] = lr
        drawing = torch.rand((), generator=gen).item() < share  # a whole batch of one kind
        enc, prompts = (drawn, DRAWING_PROMPTS) if drawing else (relations, PRETRAIN_PROMPTS)
        if recipe.curriculum and not drawing:
            pool = pools[k]
            idx = [pool[k] for k in torch.randint(len(pool), (recipe.transformer_batch,), generator=gen).tolist()]
        else:
            idx = torch.randint(len(enc), (recipe.transformer_batch,), generator=gen).tolist()
        masks = MASKS[recipe.masks]["drawings" if drawing else "relations"]
        tasks = [masks[k] for k in torch.randint(len(masks), (recipe.transformer_batch,), generator=gen).tolist()]
        x0, c, tokens = make_batch(backbone, enc, idx, tasks, prompts)
        loss = objective.loss(x0, c, tokens, generator=gen)
        optimizer_step(opt, loss, tr.parameters(), recipe.grad_clip)
        history["drawings" if drawing else "relations"].append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(history['relations'][-50:] or [0]):.4f}")
        if step % 500 == 0 or step == recipe.transformer_steps - 1:
            log(f"transformer step {step}: loss relations {np.mean(history['relations'][-200:] or [0]):.4f} "
                f"drawings {np.mean(history['drawings'][-100:] or [0]):.4f}")
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < recipe.transformer_steps:
            write_checkpoint(checkpoint, opt, gen, step + 1, history, module_saver(tr, TRANSFORMER_WEIGHTS),
                             recipe=asdict(recipe))
            if on_checkpoint is not None:
                on_checkpoint(step + 1)
    tr.eval().requires_grad_(False)
    return {"final_loss_relations": _final_loss(history["relations"], 200),
            "final_loss_drawings": _final_loss(history["drawings"], 100),
            "steps": recipe.transformer_steps, "drawing_steps": len(history["drawings"])}


# ---- the command --------------------------------------------------------------------------------
_RUN = {"encoder": pretrain_encoder, "decoder": pretrain_decoder, "transformer": pretrain_transformer}


COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
_COMPONENT_FILE = re.compile(r"^(config\.json|scheduler_config\.json|tokenizer(_config)?\.json|special_tokens_map\.json"
                             r"|(diffusion_pytorch_model|model)(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?)$")
_TOP_FILE = re.compile(r"^(model_index\.json|RECIPE\.json|RECIPE\.tmp-\d+)$")  # (RECIPE.json is replaced via RECIPE.tmp-<pid>)
CHECKPOINT_FILES = {TRANSFORMER_WEIGHTS, DECODER_WEIGHTS, STATE_TENSORS, STATE_FILE, LOG_FILE}
_CHECKPOINT_DIRS = {d + tail for d in CHECKPOINTS.values() for tail in ("", ".tmp")}


def owns(rel: str, is_dir: bool) -> bool:
    """Whether `rel` (a path in a base's folder) is something pretraining writes there: the
    diffusers layout of a base (which it overwrites), RECIPE.json, and the decoder and transformer
    stages' checkpoint folders (which they replace and delete whole)."""
    parts = rel.split("/")
    if len(parts) == 1:
        if is_dir:
            return rel in COMPONENTS or rel in _CHECKPOINT_DIRS
        return bool(_TOP_FILE.match(rel))
    if len(parts) != 2 or is_dir:
        return False
    if parts[0] in COMPONENTS:
        return bool(_COMPONENT_FILE.match(parts[1]))
    return parts[0] in _CHECKPOINT_DIRS and parts[1] in CHECKPOINT_FILES


def pretrain_tiny(out_dir: str | Path, spec: TinySpec, recipe: PretrainRecipe, stages=STAGES,
                  log: Callable[[str], None] = print, command: str = "", fresh_transformer: bool = False) -> dict:
    """Run the stages in order and write the base (diffusers layout, safetensors) + RECIPE.json.

    "encoder" starts a new base in `out_dir` (the whole folder is written); "decoder" and
    "transformer" start from the base there and write only their own component folder, so the
    two can run at the same time in two processes (both need only the encoder). The decoder and
    transformer stages checkpoint into `out_dir/checkpoint-decoder` and `out_dir/checkpoint-transformer`:
    the same command, run again after a crash, continues from there (a new encoder drops a decoder
    checkpoint: it fitted another code). `fresh_transformer`: the transformer stage starts from new weights
    of `spec` (its prediction type too) on the codec and text encoders already in `out_dir`, instead
    of continuing the transformer there (the decoder stage is the longest; a new transformer recipe
    need not repeat it). A folder holding anything else (a user's files, a symlink) is refused before
    anything runs (ForeignFiles): the stages replace and delete what is theirs."""
    out_dir = Path(out_dir)
    refuse_foreign_files(out_dir, owns, "layerboot pretrain-tiny")
    stages = tuple(st for st in STAGES if st in stages)
    torch.manual_seed(recipe.seed)
    if "encoder" in stages:
        backbone = build_tiny(spec, seed=recipe.seed)
        shutil.rmtree(out_dir / DECODER_CHECKPOINT, ignore_errors=True)
    else:
        from models.iclora.backbone import load_backbone

        backbone = load_backbone(str(out_dir), torch.float32, "cpu")
        if fresh_transformer:
            if "transformer" not in stages or "decoder" in stages:
                raise ValueError("a fresh transformer is the transformer stage's alone (--stage transformer)")
            backbone = replace(backbone, transformer=build_tiny(spec, seed=recipe.seed).transformer,
                               prediction_type=spec.prediction_type)
        if backbone.prediction_type != spec.prediction_type:  # the base's files say what it predicts
            raise ValueError(f"{out_dir} is a {backbone.prediction_type} base, not {spec.prediction_type}: "
                             f"give the prediction type its encoder stage was run with")
    results = {}
    for stage in stages:
        t0 = time.time()
        resumable = {"checkpoint": out_dir / CHECKPOINTS[stage]} if stage in CHECKPOINTS else {}
        results[stage] = _RUN[stage](backbone, recipe, log, **resumable) | {"seconds": round(time.time() - t0, 1)}
        log(f"{stage}: {results[stage]}")
    if "encoder" in stages:
        save_backbone(backbone, out_dir)
    else:
        for stage in stages:
            part = "transformer" if stage == "transformer" else "vae"
            getattr(backbone, part).save_pretrained(str(out_dir / part), safe_serialization=True)
        if fresh_transformer:  # its prediction type is recorded in the scheduler's config
            backbone.scheduler.register_to_config(prediction_type=backbone.prediction_type)
            backbone.scheduler.save_pretrained(str(out_dir / "scheduler"))
    for stage in stages:  # the stages' weights are saved
        if stage in CHECKPOINTS:
            shutil.rmtree(out_dir / CHECKPOINTS[stage], ignore_errors=True)
    # merge into RECIPE.json (a parallel stage may have written it meanwhile): read late, replace atomically
    path = out_dir / RECIPE_FILE
    previous = json.loads(path.read_text()) if path.exists() and "encoder" not in stages else {}
    record = {
        "recipe_hash": recipe_hash(spec, recipe),
        "spec": asdict(spec),
        "recipe": asdict(recipe),
        "results": previous.get("results", {}) | results,
        "command": command or "layerboot pretrain-tiny",
        "torch": torch.__version__,
    }
    if fresh_transformer:  # new weights on the codec of the base that was there: say which
        record["codec_from"] = previous.get("codec_from") or {k: previous[k] for k in ("recipe_hash", "command") if k in previous}
    elif "transformer" in stages and "encoder" not in stages and "transformer" in previous.get("results", {}):
        # the transformer continued from a trained one (a base copied to `out_dir`): say which
        record["transformer_started_from"] = {k: previous[k] for k in ("recipe_hash", "command") if k in previous}
    elif "transformer_started_from" in previous:
        record["transformer_started_from"] = previous["transformer_started_from"]
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return record
