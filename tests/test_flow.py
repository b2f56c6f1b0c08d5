"""The bootstrap flow end to end on the micro config, on a real (ephemeral) Prefect server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.compute as pc
import pytest

from storage.status import round_status
from storage.store import Store

pytestmark = pytest.mark.service

STAGES = {"train", "generate", "judge", "cycle", "evaluate"}  # commit cannot time itself


def test_two_rounds_commit_everything_and_rerun_is_a_noop(prefect_server, micro_config_path: Path, tmp_path: Path):
    from flows.bootstrap import bootstrap_flow

    work = str(tmp_path / "w")
    results = bootstrap_flow(config_path=str(micro_config_path), workdir=work, rounds=2)
    store = Store(work)
    assert store.committed_rounds() == [0, 1, 2] and len(results) == 2
    metrics = store.metrics().to_pylist()
    for row in metrics[1:]:
        assert row["candidates"] == 4 and row["selection_rate"] == row["accepted"] / 4
        assert set(dict(row["stage_seconds"])) == STAGES and row["flow_run_id"]
        assert row["rec_loss"] > 0 and dict(row["eval_metrics"])["logo_psnr"] is not None
        assert row["panels"] == ["composite", "logo", "object"]
        assert row["adapter_uri"].endswith(f"adapters/round={row['round']:02d}")
    r1 = store.read_round(1)
    generated = r1.filter(pc.equal(r1["source"], "generated"))
    cycled = r1.filter(pc.equal(r1["source"], "cycle"))
    accepted_ids = set(generated.filter(generated["accepted"])["triplet_id"].to_pylist())
    assert set(cycled["parent_id"].to_pylist()) == accepted_ids  # every accepted candidate was cycled
    assert all(r["reject_reason"] for r in generated.to_pylist() if not r["accepted"])  # rejections say why
    assert store.pool(2).num_rows == metrics[2]["pool_size"]
    assert [r["state"] for r in round_status(store)] == ["committed"] * 3
    assert not (tmp_path / "w" / "work" / "round=01").exists()  # work folders go once committed

    assert bootstrap_flow(config_path=str(micro_config_path), workdir=work, rounds=2) == []  # nothing recomputed

    from prefect.client.orchestration import get_client

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    keys = {a.key for a in asyncio.run(artifacts())}
    assert {"round-01", "round-02"} <= keys


INTRINSIC = """\
domain: intrinsic
prompts:
  decompose: "split the photo into albedo and shading"
  compose: "multiply albedo by shading"
judge:
  criteria:
    - {name: recomposes, question: "Does the product of the layers give the photo?"}
    - {name: shading_achromatic, question: "Is the shading grey?"}
    - {name: albedo_flat, question: "Is the albedo flat?"}
    - {name: shading_smooth, question: "Is the shading smooth?"}
    - {name: quality, question: "Are the panels clean?"}
"""


def test_the_intrinsic_task_runs_the_same_flow(prefect_server, micro_yaml: str, tmp_path: Path):
    """A second layer task through the unchanged flow, store and report: its panel names are
    recorded, its judge's criteria and its own metrics (with their baselines) fill rounds.parquet."""
    from flows.bootstrap import bootstrap_flow
    from flows.report import write_report
    from models.domains.intrinsic.world import make_triplet

    config = tmp_path / "intrinsic.yaml"
    config.write_text(micro_yaml + INTRINSIC)
    work = str(tmp_path / "w")
    bootstrap_flow(config_path=str(config), workdir=work, rounds=1)
    store = Store(work)
    row = store.metrics().to_pylist()[1]
    assert row["panels"] == ["composite", "albedo", "shading"]
    assert set(dict(row["criterion_pass_rates"])) == {"recomposes", "shading_achromatic", "albedo_flat",
                                                      "shading_smooth", "quality"}
    metrics = dict(row["eval_metrics"])
    assert set(metrics) == {f"{who}{layer}_{m}" for who in ("", "baseline_", "baseline_codec_", "baseline_nn_")
                            for layer in ("albedo", "shading") for m in ("si_mse", "lmse")}
    assert metrics["baseline_shading_si_mse"] > 0
    seed = store.test_split().to_pylist()[0]
    truth = make_triplet(seed["seed"], 32)
    assert store.read_image(seed["layer1_uri"]).tobytes() == truth.albedo.tobytes()  # the task's own world
    assert seed["footprint_uri"] is None
    info = write_report(store, str(tmp_path / "report.html"))
    assert "composite | albedo | shading" in (tmp_path / "report.html").read_text() and info


def test_the_round_flow_runs_the_declared_stages_in_order():
    """storage.work.STAGES is what resume and the report read; the flow must run exactly those."""
    import inspect
    import re

    from flows.bootstrap import round_flow
    from storage.work import SHARDED, STAGES

    run = re.findall(r'stage\(work, "(\w+)"', inspect.getsource(round_flow.fn))
    mapped = re.findall(r"t\.(\w+)\.map\(", inspect.getsource(round_flow.fn))
    assert run == list(STAGES)
    assert mapped == list(SHARDED)
