"""The round's tasks. Each wraps one idempotent stage of models/loop/stages.py; the store, not Prefect's
cache, records finished work, so retries and resumes never redo a finished shard."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.loop import stages

# Transient faults are retried with backoff; validation errors (bad config, bad input, refused
# commits: ValueError and its kin) fail at once, since retrying cannot fix them.
TRANSIENT = (ConnectionError, TimeoutError, InterruptedError, BlockingIOError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return True  # I/O hiccups (EIO, ENOSPC freed later, broken pipes to object stores)
    return type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError, without importing torch


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by result()
        return is_transient(exc)
    return False


_common = dict(retries=2, retry_delay_seconds=[2, 15], retry_condition_fn=_retry_transient, cache_policy=NO_CACHE,
               persist_result=False)
GPU = ["gpu"]  # cap with: prefect concurrency-limit create gpu 1

seed_round = task(stages.seed_stage, name="seed", task_run_name="seed-round-00", **_common)
train = task(stages.train_stage, name="train", task_run_name="train-r{round:02d}", tags=GPU, **_common)
generate = task(stages.generate_stage, name="generate", task_run_name="generate-r{round:02d}-s{shard:03d}", tags=GPU,
                **_common)
judge = task(stages.judge_stage, name="judge", task_run_name="judge-r{round:02d}-s{shard:03d}", tags=GPU, **_common)
cycle = task(stages.cycle_stage, name="cycle", task_run_name="cycle-r{round:02d}-s{shard:03d}", tags=GPU, **_common)
evaluate = task(stages.evaluate_stage, name="evaluate", task_run_name="evaluate-r{round:02d}", tags=GPU, **_common)
summarize = task(stages.round_metrics, name="summarize", task_run_name="summarize-r{round:02d}", **_common)
commit = task(stages.commit_stage, name="commit", task_run_name="commit-r{round:02d}", **_common)


@task(name="report", task_run_name="report-r{round:02d}", cache_policy=NO_CACHE, persist_result=False)
def report(round: int, metrics: dict[str, Any]) -> None:
    """The round's numbers as a Prefect table artifact (the same numbers as metrics/rounds.parquet)."""
    rows = [{"metric": k, "value": v if not isinstance(v, dict) else ", ".join(f"{a}={b}" for a, b in v.items())}
            for k, v in metrics.items()]
    create_table_artifact(key=f"round-{round:02d}", table=rows, description=f"layerboot round {round}")
