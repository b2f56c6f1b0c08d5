"""Scale-out: the same rounds on a Dask LocalCluster (2 worker processes) give the same manifests
as the default thread pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.runners import task_runner_factory
from storage.store import Store

pytestmark = [pytest.mark.service, pytest.mark.slow]


def content(store: Store, r: int) -> list[dict]:
    return store.read_round(r).drop_columns(["created_at"]).sort_by("triplet_id").to_pylist()


def test_dask_local_cluster_matches_threads(prefect_server, micro_config_path: Path, tmp_path: Path):
    from flows.bootstrap import bootstrap_flow

    threads, dask = Store(str(tmp_path / "threads")), Store(str(tmp_path / "dask"))
    bootstrap_flow(config_path=str(micro_config_path), workdir=threads.uri, rounds=2, task_runner="threads")
    bootstrap_flow(config_path=str(micro_config_path), workdir=dask.uri, rounds=2, task_runner="dask")

    assert threads.committed_rounds() == dask.committed_rounds() == [0, 1, 2]
    for r in (0, 1, 2):
        assert content(threads, r) == content(dask, r)
    assert len(content(dask, 1)) > 0


def test_unknown_task_runner_is_refused():
    with pytest.raises(ValueError, match="unknown task runner 'ray'"):
        with task_runner_factory("ray"):
            pass


def test_cli_refuses_unknown_task_runner_with_exit_2():
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["run", "--task-runner", "ray"])
    assert result.exit_code == 2 and "'ray' is not one of" in result.output
