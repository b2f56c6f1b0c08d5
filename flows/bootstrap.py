"""The bootstrap flow: R rounds, each a subflow `round-NN` that reads like the round contract.

    python -m flows.bootstrap --help        (or: layerboot run / resume / deploy)
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import unmapped

from configs import load_config
from flows.runners import task_runner_factory
from models.loop.bootstrap import shard_indices
from storage.lock import WorkdirLock
from storage.store import Store
from storage.work import RoundWork, tidy_committed
from tasks import round as t


@contextmanager
def stage(work: RoundWork, name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Time a stage and record in the store which stage a round is in, or failed in, and why."""
    work.set_status(name, "running")
    start = time.monotonic()
    try:
        yield
    except BaseException as exc:
        work.set_status(name, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    seconds[name] = time.monotonic() - start


@flow(name="round", flow_run_name="round-{round:02d}", log_prints=True)
def round_flow(config_path: str, workdir: str, round: int) -> dict[str, Any]:
    cfg = load_config(config_path)
    work, seconds = RoundWork(Store(workdir), round), {}
    shards = shard_indices(cfg)
    args = (unmapped(config_path), unmapped(workdir), unmapped(round))
    with stage(work, "train", seconds):
        t.train(config_path, workdir, round)                 # 1. adapter r on P(r-1)
    with stage(work, "generate", seconds):
        t.generate.map(*args, shards).result()               # 2. N candidates, shard by shard
    with stage(work, "judge", seconds):
        t.judge.map(*args, shards).result()                  # 3. per-criterion scores, accept/reject
    with stage(work, "cycle", seconds):
        t.cycle.map(*args, shards).result()                  # 4. decompose + re-compose the accepted
    with stage(work, "evaluate", seconds):
        t.evaluate(config_path, workdir, round)              # 5. held-out decomposition quality
    with stage(work, "commit", seconds):
        metrics = t.summarize(config_path, workdir, round, seconds, str(flow_run.get_id()))
        t.commit(config_path, workdir, round, metrics)       # 6. one immutable manifest, marker last
    t.report(round, metrics)
    return metrics


@flow(name="layerboot-bootstrap", log_prints=True)
def bootstrap_flow(config_path: str = "configs/tiny.yaml", workdir: str = "runs/tiny", rounds: int | None = None,
                   task_runner: str = "threads", dask_address: str | None = None) -> list[dict]:
    """Seed round 0 if needed, then every round up to `rounds` (default bootstrap.rounds) that is
    not committed yet; finished shards of an interrupted round are kept and not recomputed.
    `task_runner` is threads or dask (a LocalCluster, or the cluster at `dask_address`)."""
    cfg, store = load_config(config_path), Store(workdir)
    logger = get_run_logger()
    # one writer per workdir, also for deployment runs on workers (`layerboot run` already holds it)
    with WorkdirLock(store.loc, "layerboot-bootstrap flow",
                     on_takeover=lambda h, why: logger.warning("taking over the lock of %s: %s", h.describe(), why)):
        t.seed_round(config_path, workdir)
        tidy_committed(store)
        done = set(store.committed_rounds())
        results = []
        with task_runner_factory(task_runner, dask_address) as make_runner:
            for r in range(1, (rounds or cfg.bootstrap.rounds) + 1):
                if r in done:
                    logger.info("round %d already committed: skipping", r)
                    continue
                results.append(round_flow.with_options(task_runner=make_runner())(config_path, workdir, r))
    return results


if __name__ == "__main__":  # a worker imports this module: never run a flow at import time
    bootstrap_flow()
