"""bench/scale.py at a small size: the simulated campaign runs through the real flow and store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from storage.store import Store

pytestmark = pytest.mark.service
SCALE = Path(__file__).resolve().parents[1] / "bench" / "scale.py"


def test_simulated_campaign_commits_real_rounds(prefect_server, tmp_path: Path, capsys):
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    spec = importlib.util.spec_from_file_location("scale_bench", SCALE)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    # no flow-run heartbeats here: their thread sleeps a second at a time, and joining it cost up to
    # 1 s at the end of each of the 4 flow runs (prefect 3.9's default is one every 180 s)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        rows = scale.main(["--candidates", "4,8", "--rounds", "1", "--shard-size", "4", "--runner", "threads",
                           "--time-scale", "1e-5", "--keep", str(tmp_path)])
    assert [(r["candidates"], r["round"]) for r in rows] == [(4, 1), (8, 1)]
    assert all(r["wall"] > r["ideal"] > 0 and r["rss_mb"] > 0 and r["task_runs"] == 3 * (r["candidates"] // 4) + 5
               for r in rows)
    out = capsys.readouterr().out
    assert "cost growth over candidates per round [4, 8]: wall ~ N^" in out
    store = Store(str(tmp_path / "c8"))
    assert store.committed_rounds() == [0, 1]
    marker = store.marker(1)
    assert marker["candidates"] == 8 and marker["rows"] == 8 + marker["accepted"]  # every accepted one cycled
    assert store.read_image(store.read_round(1)["layer1_uri"][0].as_py()).size == (16, 16)  # real PNG blobs
