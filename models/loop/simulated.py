"""Stand-in stages for measuring a campaign's orchestration and store at scale (`simulate:` in the
config, configs/schema.py SimulateSection; bench/scale.py is their one user).

Each does what its real stage does to the store, with the models taken out: it sleeps the seconds a
real GPU stage would take (per triplet or per step, times `time_scale`), then writes real manifest
rows, real PNG blobs (small noise images, distinct per triplet) and the same work records. Scores and
decisions are drawn from seeds derived like the real ones (run seed, round, candidate), so a shard
recomputed after a kill writes the same rows. Nothing here is a model: never use its rows.
"""

from __future__ import annotations

import json
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from configs import Config
from models.loop.bootstrap import Shard, round_to
from storage import schema
from storage.hashing import derive_seed
from storage.store import Store, now_utc
from storage.triplets import put_triplet

ADAPTER_FILE = "simulated_adapter.json"  # what the stand-in train stage leaves as its "adapter"


def _sleep(cfg: Config, seconds: float) -> None:
    time.sleep(max(0.0, seconds * cfg.simulate.time_scale))


def _noise(seed: int, px: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (px, px, 3), dtype=np.uint8))


def train(cfg: Config, store: Store, round: int, adapter_dir: str, pool_rows: int) -> dict[str, Any]:
    """The training stage's time (first round: train.steps, later: bootstrap.warm_steps) and a small
    adapter folder, so that the commit copies and hashes one like a real adapter."""
    steps = cfg.train.steps if round == 1 else cfg.bootstrap.warm_steps
    t0 = time.time()
    _sleep(cfg, steps * cfg.simulate.train_step_s)
    body = {"simulated": True, "round": round, "steps": steps, "pool": pool_rows}
    store.loc.write_atomic(posixpath.join(adapter_dir, ADAPTER_FILE), json.dumps(body).encode())
    return {"pool": pool_rows, "steps": steps, "warm_start": round > 1, "rec_loss": 0.0, "cyc_loss": None,
            "rec_loss_by_task": {}, "seconds": round_to(time.time() - t0, 2)}


def generate_rows(cfg: Config, store: Store, round: int, shard: Shard, adapter_version: str) -> pa.Table:
    """One shard of candidates, generated and composed: generate_s per candidate, three distinct
    noise blobs each."""
    _sleep(cfg, (len(shard.candidates) + len(shard.composed)) * cfg.simulate.generate_s)
    created, px = now_utc(), cfg.simulate.blob_px
    rows = []
    for source, tag, indices in (("generated", "candidate", shard.candidates), ("composed", "composed", shard.composed)):
        for i in indices:  # (tag "candidate": the prompt and seeds generated candidates always had)
            seed = derive_seed(cfg.run.seed, tag, round, i)
            panels = [_noise(derive_seed(seed, k), px) for k in range(3)]
            rows.append(put_triplet(store, panels=panels, run_id=cfg.run_id, round=round, source=source,
                                    split="train", prompt=f"simulated {tag} {round}/{i}", seed=seed,
                                    created_at=created, accepted=False, adapter_version=adapter_version))
    return schema.to_table(rows)


def _verdict(cfg: Config, seed: int, keep: float) -> tuple[dict[str, float], bool, str | None, dict[str, str] | None]:
    rng = np.random.default_rng(seed)
    accepted = bool(rng.random() < keep)
    names = [c.name for c in cfg.judge.criteria]
    scores = {n: round(float(rng.uniform(c.threshold, 1.0) if accepted else rng.uniform(0, 1)), 4)
              for n, c in zip(names, cfg.judge.criteria)}
    if not accepted:  # a rejection names a criterion it failed
        worst = names[int(rng.integers(len(names)))]
        scores[worst] = round(float(rng.uniform(0, cfg.judge.criteria[names.index(worst)].threshold)), 4)
        return scores, False, f"{worst}: simulated rejection", {worst: "simulated rejection"}
    return scores, True, None, None


def judge_rows(cfg: Config, table: pa.Table) -> pa.Table:
    """A generate shard judged: judge_s per candidate; accepted at accept_rate, with scores and reasons."""
    _sleep(cfg, table.num_rows * cfg.simulate.judge_s)
    rows = table.to_pylist()
    for row in rows:
        scores, accepted, reason, reasons = _verdict(cfg, derive_seed(row["seed"], "judge"), cfg.simulate.accept_rate)
        row.update(judge_scores=scores, judge_reasons=reasons, accepted=accepted, reject_reason=reason)
    return schema.to_table(rows)


def cycle_rows(cfg: Config, store: Store, round: int, judged: pa.Table, adapter_version: str) -> pa.Table:
    """A judge shard's accepted candidates cycled: cycle_s per parent, a new triplet each (the
    parent's composite, two new layer blobs), kept at cycle_keep."""
    parents = judged.filter(judged["accepted"]).to_pylist()
    _sleep(cfg, len(parents) * cfg.simulate.cycle_s)
    if not parents:
        return schema.empty()
    created, px, rows = now_utc(), cfg.simulate.blob_px, []
    for parent in parents:
        seed = derive_seed(cfg.run.seed, "cycle", round, parent["triplet_id"])
        composite = store.read_image(parent["composite_uri"])
        layers = [_noise(derive_seed(seed, k), px) for k in (1, 2)]
        scores, accepted, reason, reasons = _verdict(cfg, seed, cfg.simulate.cycle_keep)
        rows.append(put_triplet(
            store, panels=(composite, *layers), run_id=cfg.run_id, round=round, source="cycle", split="train",
            prompt=parent["prompt"], seed=seed, created_at=created, accepted=accepted,
            parent_id=parent["triplet_id"], adapter_version=adapter_version, judge_scores=scores,
            judge_reasons=reasons, reject_reason=reason, cycle_scores={"recompose_psnr": 30.0}))
    return schema.to_table(rows)


def evaluate(cfg: Config) -> dict[str, Any]:
    """The evaluation stage's time (evaluate_s per held-out triplet, bootstrap.eval_n of them)."""
    _sleep(cfg, cfg.bootstrap.eval_n * cfg.simulate.evaluate_s)
    return {}
