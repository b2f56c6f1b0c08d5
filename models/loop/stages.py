"""Each stage of a round as one idempotent call: (workdir, config, round[, shard]) -> summary.

A stage first asks the store whether its work is already recorded (a shard file, a stage result,
a finished adapter) and returns that instead of recomputing: this is what makes `resume` exact
and cheap, independent of Prefect's own cache. Prefect tasks in tasks/ are thin wrappers of these.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from configs import Config, load_config, training_hash
from models.loop import bootstrap, simulated
from models.loop.bootstrap import round_to  # (a stage parameter is called `round`)
from models.loop.dataio import PoolTriplets
from models.domains.registry import domain_of
from models.loop.runtime import MODEL_LOCK, backbone_for, judge_for
from models.iclora.sample import Sampler
from models.iclora.lora import EXTRA_MODULES, LORA_WEIGHTS, AdapterError
from models.iclora.checkpoint import LOG_FILE, STATE_FILE, STATE_TENSORS
from models.iclora.train import CHECKPOINT, DONE_FILE, TrainResult, train_adapter
from storage.adapter_cache import AdapterCache
from storage.faults import failpoint
from storage.hashing import derive_seed, sha256_hex, stable_id
from storage.store import Store
from storage.work import STAGES, RoundWork

log = logging.getLogger("layerboot")


def _shard_stage(stage: str, config_path: str, workdir: str, round: int, shard: int, compute) -> RoundWork:
    """Run `compute() -> table` for one shard unless its file already exists; the file, written
    atomically, is the completion record. Logs which shards were computed and which were kept."""
    _, store = open_run(config_path, workdir)
    work = RoundWork(store, round)
    name = f"{stage}-r{round:02d}-s{shard:03d}"
    if shard in work.done_shards(stage):
        log.info("kept finished shard %s", name)
        return work
    failpoint(f"{name}-start")
    table = compute()
    failpoint(f"{name}-computed")  # generate/cycle: its blobs are written, the shard is not
    work.write_shard(stage, shard, table)
    log.info("finished shard %s", name)
    failpoint(f"{name}-done")
    return work

def open_run(config_path: str, workdir: str) -> tuple[Config, Store]:
    return load_config(config_path), Store(workdir)


def latent_cache_dir(store: Store) -> Path:
    """Where training latents are cached (content-addressed, so any run may share it): inside a
    local workdir (`cache/latents`); for an object-store workdir a local folder, `$LAYERBOOT_CACHE`
    or the temp dir (latents are re-derivable, so they never need to travel)."""
    if store.loc.is_local:
        return Path(store.loc.root) / "cache" / "latents"
    return Path(os.environ.get("LAYERBOOT_CACHE") or Path(tempfile.gettempdir()) / "layerboot-cache") / "latents"


def adapter_version(config: Config, round: int) -> str:
    return f"{config.run_id}/round={round:02d}"


def _local_adapter(store: Store, path: str, cache: Path) -> Path:
    """An adapter folder of the store as a local folder (object stores: downloaded once)."""
    if store.loc.is_local:
        return Path(path)
    cache.mkdir(parents=True, exist_ok=True)
    for remote in store.loc.fs.find(path):
        (cache / Path(remote).name).write_bytes(store.loc.read_bytes(remote))
    return cache


# ---- 1. train ------------------------------------------------------------------------------
_ADAPTER_FILES = {LORA_WEIGHTS, EXTRA_MODULES}
# what train_adapter writes in its folder (and removes or replaces when it trains there again)
TRAINING_FILES = {
    "": _ADAPTER_FILES | {LOG_FILE, DONE_FILE},
    CHECKPOINT: _ADAPTER_FILES | {STATE_TENSORS, STATE_FILE, LOG_FILE},
    f"{CHECKPOINT}.tmp": _ADAPTER_FILES | {STATE_TENSORS, STATE_FILE, LOG_FILE},
}


def refuse_foreign_files(out: Path) -> None:
    """A folder `layerboot train` trains into may hold only what training writes there: it replaces
    its checkpoint folder whole, and would take a user's files in it along."""
    for folder, names in TRAINING_FILES.items():
        here = out / folder
        if not here.is_dir():
            continue
        for entry in sorted(here.iterdir()):
            if entry.is_symlink():
                ours = False  # writing through it would change the file it points to
            elif entry.is_dir():
                ours = not folder and entry.name in TRAINING_FILES
            else:
                ours = entry.is_file() and entry.name in names
            if not ours:
                raise AdapterError(f"{out}: holds {entry.relative_to(out)}, which `layerboot train` does not write: "
                                   "name a new or empty folder for --out (nothing was changed)")


def train_on_pool(
    backbone, cfg: Config, store: Store, pool_round: int, out: Path, *, warm_start: Path | None, steps: int | None,
    seed: int, on_checkpoint=None,
) -> tuple[TrainResult, PoolTriplets]:
    """Train an adapter on the pool as committed at `pool_round`: the train stage and `layerboot
    train` both call this. The fingerprint names every input (the config as training reads it,
    steps, seed, the warm start by content, the pool's triplets), so a finished adapter in `out`
    with the same inputs is kept, and one in `bootstrap.adapter_cache` is copied, not retrained."""
    pool = PoolTriplets(store, store.pool(pool_round, columns=PoolTriplets.COLUMNS))  # panels read per batch
    steps = steps or cfg.train.steps
    warm = warm_start and stable_id(*(f"{f.name}:{sha256_hex(f.read_bytes())}" for f in sorted(warm_start.rglob("*")) if f.is_file()))
    fingerprint = stable_id(training_hash(cfg), steps, seed, warm, *sorted(pool.triplet_ids))
    shared = cfg.bootstrap.adapter_cache and AdapterCache(cfg.bootstrap.adapter_cache, DONE_FILE)
    if shared and shared.fetch(fingerprint, out):
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)  # a killed attempt's, now finished elsewhere
        log.info("adapter %s taken from %s", fingerprint, cfg.bootstrap.adapter_cache)
    result = train_adapter(
        backbone, cfg, pool, pool.prompts, out, warm_start=warm_start, seed=seed, steps=steps,
        fingerprint=fingerprint, cache_dir=latent_cache_dir(store), keys=pool.keys, on_checkpoint=on_checkpoint,
    )
    if shared:
        shared.publish(fingerprint, out)
    return result, pool


def train_stage(config_path: str, workdir: str, round: int) -> dict[str, Any]:
    cfg, store = open_run(config_path, workdir)
    work = RoundWork(store, round)
    if (done := work.read_result("train")) is not None:
        log.info("kept finished stage train-r%02d", round)
        return done | {"skipped": True}
    failpoint(f"train-r{round:02d}-start")
    if cfg.simulate is not None:  # bench/scale.py: the stand-in (models/loop/simulated.py)
        pool_round = round - 1 if cfg.bootstrap.grow_pool else 0
        summary = simulated.train(cfg, store, round, work.adapter_dir, store.marker(pool_round)["pool_size"])
        work.write_result("train", summary)
        return summary
    previous = store.marker(round - 1) or {}
    scratch = Path(tempfile.mkdtemp(prefix="layerboot-train-"))
    warm = None
    if round > 1 and previous.get("adapter_uri"):
        store.verify_adapter(round - 1)  # as committed (DamagedRound names the file edited since)
        warm = _local_adapter(store, store.adapter_dir(round - 1), scratch / "warm")
    out = Path(work.adapter_dir) if store.loc.is_local else scratch / "adapter"
    t0 = time.time()
    with MODEL_LOCK:
        backbone = backbone_for(cfg)  # the bare base: train_adapter adds a fresh or warm-started LoRA
        result, pool = train_on_pool(
            backbone, cfg, store, round - 1 if cfg.bootstrap.grow_pool else 0, out, warm_start=warm,
            steps=cfg.train.steps if warm is None else cfg.bootstrap.warm_steps,
            seed=derive_seed(cfg.run.seed, "train", round),
            on_checkpoint=lambda step: failpoint(f"train-r{round:02d}-checkpoint"),
        )
    failpoint(f"train-r{round:02d}-saved")
    if not store.loc.is_local:
        for f in out.iterdir():
            store.loc.write_atomic(f"{work.adapter_dir}/{f.name}", f.read_bytes())
    shutil.rmtree(scratch, ignore_errors=True)
    tail = result.log[-50:]
    cyc = [e["cyc"] for e in result.log if e["lambda"] > 0][-20:]
    by_task = {}
    for e in result.log[-200:]:
        by_task.setdefault(e["task"], []).append(e["rec"])
    summary = {
        "pool": len(pool), "steps": result.steps, "warm_start": warm is not None, "reused": result.reused,
        "rec_loss": round_to(statistics.fmean(e["rec"] for e in tail), 5),
        "cyc_loss": round_to(statistics.fmean(cyc), 5) if cyc else None,
        "rec_loss_by_task": {t: round_to(statistics.fmean(v), 5) for t, v in sorted(by_task.items())},
        "seconds": round_to(time.time() - t0, 2),
    }
    work.write_result("train", summary)
    log.info("finished stage train-r%02d", round)
    failpoint(f"train-r{round:02d}-done")
    return summary


def _sampler(cfg: Config, store: Store, round: int) -> Sampler:
    work = RoundWork(store, round)
    local = _local_adapter(store, work.adapter_dir, Path(tempfile.gettempdir()) / "layerboot-adapters" / stable_id(store.uri, round))
    return Sampler(backbone_for(cfg, local), cfg)


# ---- 2. generate, 3. judge, 4. cycle: one shard each ----------------------------------------
def generate_stage(config_path: str, workdir: str, round: int, shard: int) -> dict[str, Any]:
    cfg, store = open_run(config_path, workdir)
    plan = bootstrap.plan_shards(cfg)[shard]

    def compute() -> pa.Table:
        if cfg.simulate is not None:
            return simulated.generate_rows(cfg, store, round, plan, adapter_version(cfg, round))
        with MODEL_LOCK:
            sampler, version = _sampler(cfg, store, round), adapter_version(cfg, round)
            return pa.concat_tables([bootstrap.generate_rows(sampler, store, cfg, round, plan, version),
                                     bootstrap.compose_rows(sampler, store, cfg, round, plan, version)])

    work = _shard_stage("generate", config_path, workdir, round, shard, compute)
    return {"shard": shard, "rows": work.read_shard("generate", shard).num_rows}


def judge_stage(config_path: str, workdir: str, round: int, shard: int) -> dict[str, Any]:
    cfg, store = open_run(config_path, workdir)

    def compute() -> pa.Table:
        if cfg.simulate is not None:
            return simulated.judge_rows(cfg, RoundWork(store, round).read_shard("generate", shard))
        with MODEL_LOCK:
            return bootstrap.judge_rows(judge_for(cfg), store, RoundWork(store, round).read_shard("generate", shard))

    table = _shard_stage("judge", config_path, workdir, round, shard, compute).read_shard("judge", shard)
    return {"shard": shard, "candidates": table.num_rows, "accepted": int(pc.sum(table["accepted"]).as_py() or 0)}


def cycle_stage(config_path: str, workdir: str, round: int, shard: int) -> dict[str, Any]:
    cfg, store = open_run(config_path, workdir)

    def compute() -> pa.Table:
        judged = RoundWork(store, round).read_shard("judge", shard)
        if cfg.simulate is not None:
            return simulated.cycle_rows(cfg, store, round, judged if cfg.bootstrap.cycle_stage else judged.slice(0, 0),
                                        adapter_version(cfg, round))
        plan = bootstrap.plan_shards(cfg)
        parents = bootstrap.cycle_parents(store, judged.filter(judged["accepted"])) + bootstrap.shard_slice(
            bootstrap.unlabeled_for_round(cfg, store, round), plan[shard], len(plan)) if cfg.bootstrap.cycle_stage else []
        with MODEL_LOCK:
            return bootstrap.cycle_rows(_sampler(cfg, store, round), judge_for(cfg), store, cfg, round,
                                        parents, adapter_version(cfg, round))

    table = _shard_stage("cycle", config_path, workdir, round, shard, compute).read_shard("cycle", shard)
    return {"shard": shard, "cycled": table.num_rows, "kept": int(pc.sum(table["accepted"]).as_py() or 0)}


# ---- 5. evaluate ----------------------------------------------------------------------------
def evaluate_stage(config_path: str, workdir: str, round: int) -> dict[str, Any]:
    cfg, store = open_run(config_path, workdir)
    work = RoundWork(store, round)
    if (done := work.read_result("evaluate")) is not None:
        log.info("kept finished stage evaluate-r%02d", round)
        return done
    failpoint(f"evaluate-r{round:02d}-start")
    if cfg.simulate is not None:
        report = simulated.evaluate(cfg)
        work.write_result("evaluate", report)
        return report
    from models.loop.evaluate import evaluate_decomposition, held_out, seed_triplets

    test, seeds = held_out(cfg, store, cfg.bootstrap.eval_n)
    with MODEL_LOCK:
        report = evaluate_decomposition(_sampler(cfg, store, round), test, seeds, domain_of(cfg),
                                        seed_triplets=seed_triplets(store)) if test else {}
    work.write_result("evaluate", report)
    log.info("finished stage evaluate-r%02d", round)
    failpoint(f"evaluate-r{round:02d}-done")
    return report


# ---- 6. commit ------------------------------------------------------------------------------
def commit_stage(config_path: str, workdir: str, round: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Publish everything the round made as one immutable manifest, then drop its work folder."""
    cfg, store = open_run(config_path, workdir)
    work = RoundWork(store, round)
    if (marker := store.marker(round)) is not None:
        store.metrics()  # a crash right after the commit can leave metrics/rounds.parquet behind it
        work.clear()  # ... and this folder
        return {"round": round, "rows": marker["rows"], "skipped": True}
    shards = bootstrap.shard_indices(cfg)
    table = pa.concat_tables([work.read_stage("judge", shards), work.read_stage("cycle", shards)])
    adapter = _local_adapter(store, work.adapter_dir, Path(tempfile.mkdtemp(prefix="layerboot-commit-")))
    failpoint(f"commit-r{round:02d}-start")
    info = store.commit_round(round, table, adapter_dir=str(adapter), metrics=extra or {},
                              panels=domain_of(cfg).panels)
    failpoint(f"commit-r{round:02d}-done")
    work.clear()
    log.info("committed round %02d (%d rows)", round, info.rows)
    return {"round": round, "rows": info.rows}


# ---- round 0 and the round's numbers ----------------------------------------------------------
def seed_stage(config_path: str, workdir: str) -> dict[str, Any]:
    """Round 0 (seeds + held-out test split), unless it is already committed."""
    cfg, store = open_run(config_path, workdir)
    if (marker := store.marker(0)) is not None:
        store.metrics()  # refreshed if a crash came between the commit and its metrics
        return {"round": 0, "rows": marker["rows"], "skipped": True}
    from models.loop.seeding import commit_seeds

    info = commit_seeds(store, cfg, cfg.data.n_seeds, cfg.data.n_test)
    return {"round": 0, "rows": info.rows}


def round_metrics(config_path: str, workdir: str, round: int, stage_seconds: dict[str, float],
                  flow_run_id: str | None = None) -> dict[str, Any]:
    """The orchestrator's numbers for rounds.parquet (schema.ROUND_EXTRA_FIELDS)."""
    cfg, store = open_run(config_path, workdir)
    work = RoundWork(store, round)
    trained = work.read_result("train") or {}
    from models.loop.evaluate import eval_metrics

    evaluation = work.read_result("evaluate") or {}
    shards = bootstrap.shard_indices(cfg)
    judged = work.read_stage("judge", shards).to_pylist()
    if cfg.simulate is not None:  # the stand-in judges with the config's thresholds
        thresholds = {c.name: c.threshold for c in cfg.judge.criteria}
    else:
        with MODEL_LOCK:
            thresholds = {c.name: c.threshold for c in judge_for(cfg).criteria}  # what the round judged with
    pass_rates = {name: round_to(rate or 0.0, 4) for name, rate in bootstrap.pass_rates(judged, thresholds).items()}
    return {
        "flow_run_id": flow_run_id,
        "criterion_pass_rates": pass_rates,
        "selection_rate_by_source": {k: round_to(v, 4) for k, v in bootstrap.selection_by_source(judged).items()} or None,
        "train_pool": trained.get("pool"),
        "rec_loss": trained.get("rec_loss"),
        "cyc_loss": trained.get("cyc_loss"),
        "rec_loss_by_task": trained.get("rec_loss_by_task"),
        "eval_metrics": eval_metrics(evaluation) or None,
        "judge_thresholds": thresholds,
        "stage_seconds": {k: round_to(v, 2) for k, v in stage_seconds.items()},
    }


def plain_round(config_path: str, workdir: str, round: int, flow_run_id: str | None = None) -> dict[str, Any]:
    """One round stage by stage with no orchestrator: the stages flows/bootstrap.round_flow runs, in
    its order and timed the same way (tests, and bench/orchestration.py's baseline). Its metrics."""
    shards = bootstrap.shard_indices(open_run(config_path, workdir)[0])
    calls = {
        "train": lambda: train_stage(config_path, workdir, round),
        "generate": lambda: [generate_stage(config_path, workdir, round, s) for s in shards],
        "judge": lambda: [judge_stage(config_path, workdir, round, s) for s in shards],
        "cycle": lambda: [cycle_stage(config_path, workdir, round, s) for s in shards],
        "evaluate": lambda: evaluate_stage(config_path, workdir, round),
    }
    seconds: dict[str, float] = {}
    for name in STAGES[:-1]:  # commit cannot time itself
        start = time.monotonic()
        calls[name]()
        seconds[name] = time.monotonic() - start
    metrics = round_metrics(config_path, workdir, round, seconds, flow_run_id)
    commit_stage(config_path, workdir, round, metrics)
    return metrics
