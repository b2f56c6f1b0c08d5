"""Where a round's tasks run: threads in the flow's process (default), or a Dask cluster.

    layerboot run --task-runner threads                     one process, tasks on a thread pool
    layerboot run --task-runner dask                        a LocalCluster of worker processes
    layerboot run --task-runner dask --dask-address tcp://scheduler:8786   an existing cluster

Results do not depend on the runner: every shard's content comes from seeds derived from its id
and each worker runs torch with the same thread count, so the manifests are identical.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from prefect.task_runners import ThreadPoolTaskRunner

RUNNERS: tuple[str, ...] = ("threads", "dask")
LOCAL_DASK_WORKERS = 2


@contextmanager
def task_runner_factory(kind: str, dask_address: str | None = None,
                        dask_workers: int = LOCAL_DASK_WORKERS) -> Iterator[Callable]:
    """Yields a function making a fresh task runner per round subflow. For Dask without an address
    one LocalCluster (worker processes, one thread each) serves every round, so the models each
    worker loaded stay loaded, and it is closed when the loop ends."""
    if kind == "threads":
        yield ThreadPoolTaskRunner
        return
    if kind != "dask":
        raise ValueError(f"unknown task runner {kind!r}: choose one of {', '.join(RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        yield lambda: DaskTaskRunner(address=dask_address)
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=dask_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster:
        yield lambda: DaskTaskRunner(address=cluster.scheduler_address)

