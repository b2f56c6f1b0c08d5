"""Training the IC-LoRA adapter on the pool: L_rec over all task directions + lambda * L_cyc.

One function, `train_adapter`, reads top to bottom: encode the pool once, then each step picks a
task for the batch (weights from config), takes the flow-matching loss on the generated panels
and, every `cycle.every` steps once warmed up, the cycle loss in both directions. AdamW on the
trainable parameters only (fp32 LoRA), gradient clipping, a progress bar, checkpoints every N
steps, and resume of a half-done run from its last checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from configs import Config
from models.iclora.backbone import Backbone
from models.iclora.checkpoint import LOG_FILE, STATE_FILE, read_checkpoint, write_checkpoint
from models.iclora.lora import _lora_parameters, add_lora, load_adapter, save_adapter, trainable_parameters
from models.iclora.encoded import TASKS, LatentCache, LatentPool, make_batch, vae_identity
from models.iclora.grid import Task
from models.iclora.objective import Conditioning, FlowMatching

CHECKPOINT = "checkpoint"
DONE_FILE = "train_done.json"  # written last: what this adapter was trained from


@dataclass
class TrainResult:
    steps: int
    seconds: float
    log: list[dict] = field(default_factory=list)  # one entry per logged step: step, rec, cyc, lambda
    reused: bool = False  # True when an identical finished adapter was already there

    @property
    def final_rec(self) -> float:
        return self.log[-1]["rec"] if self.log else float("nan")


def task_prompts(config: Config) -> dict[Task, str]:
    p = config.prompts
    return {Task.DECOMPOSE: p.decompose, Task.COMPOSE: p.compose, Task.GENERATE: p.generate}


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params, grad_clip: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def learning_rate(config: Config, step: int, total: int) -> float:
    """The lr of step `step` of `total`: constant, or a cosine from `lr` down to 0 (a function of the
    step alone, so a resumed run continues the same curve with nothing extra in its checkpoint)."""
    tc = config.train
    if tc.lr_schedule == "constant":
        return tc.lr
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


def cycle_weight(config: Config, step: int, warm: bool = False) -> float:
    """lambda(step): 0 during warm-up, then a linear ramp to cycle.weight. A warm-started adapter
    (a later round) went through warm-up and ramp in an earlier round: full weight from step 0."""
    c = config.train.cycle
    if warm:
        step += c.warmup_steps + c.ramp_steps
    if c.weight == 0 or step < c.warmup_steps:
        return 0.0
    return c.weight * min(1.0, (step - c.warmup_steps + 1) / max(1, c.ramp_steps))


def prepare_adapter(backbone: Backbone, config: Config, warm_start: str | Path | None) -> None:
    """A fresh LoRA, or the previous round's adapter made trainable again (warm start)."""
    extra = tuple(config.lora.extra_trainable)
    if warm_start:
        load_adapter(backbone, warm_start)
        for p in _lora_parameters(backbone.transformer):
            p.requires_grad_(True)
        for name in extra:
            getattr(backbone.transformer, name).requires_grad_(True)
    else:
        add_lora(backbone.transformer, config.lora.rank, config.lora.alpha, extra_trainable=extra,
                 gradient_checkpointing=config.model.gradient_checkpointing, seed=config.run.seed)


Batch = tuple[torch.Tensor, Conditioning, torch.Tensor]  # make_batch: x0 [B, N, 4C], conditioning, tokens [B, N]


@torch.no_grad()
def cycled_latents(objective: FlowMatching, batches: dict[Task, Batch], steps: int, gen) -> dict[Task, torch.Tensor]:
    """The model's own round trips as clean grid latents [B, N, 4C] (no grad, few Euler steps):
    COMPOSE: (I*, A, B) with I* = compose(A, B)   -> used under the decomposition mask;
    DECOMPOSE: (I, A', B') with <A', B'> = decompose(I) -> used under the composition mask.
    The made panels' tokens replace the real ones: the cycle stays in latent space. Decoding and
    re-encoding them cost 2/3 of a cycle step on the tiny profile and only add the codec's error."""
    out = {}
    for made_by in (Task.COMPOSE, Task.DECOMPOSE):
        x0, c, tokens = batches[made_by]
        noise = torch.randn(x0.shape, generator=gen).to(objective.backbone.device)
        made = objective.sample(c, steps, noise).to(x0.dtype)
        out[made_by] = torch.where(tokens[..., None], made, x0)
    return out


def cycled_condition(c_real: Conditioning, x0_real: torch.Tensor, x0_cycled: torch.Tensor,
                     tokens: torch.Tensor) -> Conditioning:
    """The conditioning of a cycled grid: the masked-image latents show the kept panels, and the
    model changed some of them, so the change is added where the mask keeps the image. Exact for a
    patch-local encoder (the tiny codec's PCA); FLUX's VAE mixes ~1 token across a panel edge."""
    kept = (~tokens)[..., None].to(x0_real.dtype)  # [B, N, 1]
    width = x0_real.shape[-1]
    masked = c_real.cond[..., :width] + kept * (x0_cycled - x0_real)
    return replace(c_real, cond=torch.cat([masked, c_real.cond[..., width:]], dim=-1))


def train_adapter(
    backbone: Backbone,
    config: Config,
    triplets: Sequence[tuple[Image.Image, Image.Image, Image.Image]],
    prompts: Sequence[str],
    out_dir: str | Path,
    *,
    warm_start: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    fingerprint: str | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    cache_dir: str | Path | None = None,
    keys: Sequence[str] | None = None,
) -> TrainResult:
    """Train (or resume training) an adapter on `triplets` and save it to `out_dir`.

    `triplets` may be a lazy sequence (models.loop.dataio.PoolTriplets reads each from the store when
    indexed): only a batch's panels are ever held. Latents go to a LatentCache in `cache_dir`
    (None: in memory), keyed by `keys` (content keys, e.g. blob sha256s; default: hashes of the
    pixels), so triplets encoded by an earlier round or a killed run are not encoded again.
    `fingerprint` names the inputs (config, pool, warm start); when `out_dir` already holds a
    finished adapter with the same fingerprint, nothing is recomputed. `on_checkpoint(step)` is
    called after each checkpoint is saved."""
    tc = config.train
    total = steps or tc.steps
    out_dir = Path(out_dir)
    ckpt = out_dir / CHECKPOINT
    done = out_dir / DONE_FILE
    if fingerprint and done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        meta = json.loads(done.read_text())
        return TrainResult(steps=meta["steps"], seconds=0.0, log=json.loads((out_dir / LOG_FILE).read_text()), reused=True)
    done.unlink(missing_ok=True)
    prepare_adapter(backbone, config, ckpt if (ckpt / STATE_FILE).exists() else warm_start)
    params = trainable_parameters(backbone.transformer)
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    objective = FlowMatching(backbone, config.model.guidance_scale, tc.timestep_sampling,
                             logit_mean=tc.sigma_logit_mean, logit_std=tc.sigma_logit_std)
    gen = torch.Generator().manual_seed(seed)
    prompts_by_task = task_prompts(config)
    weights = torch.tensor([getattr(tc.tasks, t.value) for t in TASKS])

    start, log = 0, []
    if (ckpt / STATE_FILE).exists():  # resume a half-done run exactly where it stopped
        start, log, _ = read_checkpoint(ckpt, opt, gen)

    panel_size = triplets[0][0].size[0]
    enc = LatentPool(backbone, triplets, prompts, LatentCache(cache_dir, vae_identity(backbone), panel_size), keys,
                     panel_size)
    enc.encode(desc="encode pool")
    backbone.transformer.train()
    t0 = time.time()
    bar = tqdm(range(start, total), initial=start, total=total, desc="train adapter", unit="step", disable=None)
    for step in bar:
        idx = torch.randint(len(enc), (tc.batch_size,), generator=gen).tolist()
        task = TASKS[int(torch.multinomial(weights, 1, generator=gen))]
        x0, c, tokens = make_batch(backbone, enc, idx, [task] * len(idx), prompts_by_task)
        rec = objective.loss(x0, c, tokens, generator=gen)
        lam = cycle_weight(config, step, warm=warm_start is not None) if step % tc.cycle.every == 0 else 0.0
        cyc = torch.zeros(())
        if lam > 0:
            cyc = cycle_term(objective, enc, idx, prompts_by_task, tc.cycle.sample_steps, gen)
        for group in opt.param_groups:
            group["lr"] = learning_rate(config, step, total)
        optimizer_step(opt, rec + lam * cyc, params, tc.grad_clip)
        entry = {"step": step, "task": task.value, "rec": round(rec.item(), 5), "cyc": round(cyc.item(), 5), "lambda": lam}
        log.append(entry)
        bar.set_postfix(rec=f"{rec.item():.3f}", cyc=f"{cyc.item():.3f}")
        if (step + 1) % tc.checkpoint_every == 0 and step + 1 < total:
            write_checkpoint(ckpt, opt, gen, step + 1, log, lambda folder: save_adapter(
                backbone.transformer, folder, tuple(config.lora.extra_trainable)))
            if on_checkpoint is not None:
                on_checkpoint(step + 1)
    backbone.transformer.eval()
    save_adapter(backbone.transformer, out_dir, tuple(config.lora.extra_trainable))
    (out_dir / LOG_FILE).write_text(json.dumps(log))
    shutil.rmtree(ckpt, ignore_errors=True)
    seconds = time.time() - t0
    done.write_text(json.dumps({"fingerprint": fingerprint, "steps": total, "seconds": round(seconds, 1)}))
    return TrainResult(steps=total, seconds=seconds, log=log)


def cycle_term(objective, enc: LatentPool, idx, prompts_by_task, sample_steps, gen) -> torch.Tensor:
    """L_cyc, both directions: decomposition of I vs of I*, composition from <A,B> vs from <A',B'>.
    Each direction's real batch both seeds its round trip and is the other direction's reference."""
    bb = objective.backbone
    batches = {t: make_batch(bb, enc, idx, [t] * len(idx), prompts_by_task) for t in (Task.COMPOSE, Task.DECOMPOSE)}
    cycled = cycled_latents(objective, batches, sample_steps, gen)
    total = torch.zeros((), device=bb.device)
    for judged_by, made_by in ((Task.DECOMPOSE, Task.COMPOSE), (Task.COMPOSE, Task.DECOMPOSE)):
        x0_real, c_real, tokens = batches[judged_by]
        x0_cyc = cycled[made_by]
        c_cyc = cycled_condition(c_real, x0_real, x0_cyc, tokens)
        total = total + objective.cycle_loss(x0_real, c_real, x0_cyc, c_cyc, tokens, generator=gen)
    return total
