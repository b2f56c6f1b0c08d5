"""The compose source (`bootstrap.compose_candidates`): unpaired layer-1 and layer-2 images, composed
by the round's adapter, judged like generated candidates, counted in the round's selection rate and
in its own per-source rate (rounds.parquet `selection_rate_by_source`, `layerboot status`, report)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from configs import ConfigError, load_config
from flows.cli import app
from flows.report import charts, collect
from models.domains.logo_object.world import make_layer
from models.loop import stages
from models.loop.bootstrap import compose_pairs, plan_shards
from storage.hashing import derive_seed
from storage.store import Store
from storage.work import RoundWork

runner = CliRunner()
SIMULATE = ("simulate:\n  train_step_s: 0\n  generate_s: 0\n  judge_s: 0\n  cycle_s: 0\n  evaluate_s: 0\n"
            "  accept_rate: 0.5\n  blob_px: 8\n")


def with_compose(config_path: Path, n: int, extra: str = "") -> str:
    text = config_path.read_text().replace("  eval_n: 2\n", f"  eval_n: 2\n  compose_candidates: {n}\n") + extra
    config_path.write_text(text)
    return str(config_path)


def test_shards_hold_both_sources_and_as_many_shards_as_the_longer_needs(micro_config_path: Path):
    cfg = load_config(with_compose(micro_config_path, 5))  # 4 generated, 5 composed, shards of 2
    plan = plan_shards(cfg)
    assert [(s.candidates, s.composed) for s in plan] == [((0, 1), (0, 1)), ((2, 3), (2, 3)), ((), (4,))]
    assert [s.composed for s in plan_shards(load_config(micro_config_path, ["bootstrap.compose_candidates=0"]))] == [(), ()]


def test_procedural_layers_come_from_their_own_seed_namespaces(micro_config_path: Path, tmp_path: Path):
    cfg = load_config(with_compose(micro_config_path, 2))
    pairs = compose_pairs(cfg, Store(str(tmp_path / "w")), 3, (0, 1))
    for i, pair in enumerate(pairs):
        s1, s2 = derive_seed(7, "layer1", 3, i), derive_seed(7, "layer2", 3, i)
        (logo, logo_text), (obj, obj_text) = make_layer(s1, 32, 1), make_layer(s2, 32, 2)
        assert pair["parent_id"] == f"layer1:procedural:{s1},layer2:procedural:{s2}"
        assert pair["prompt"] == f"{obj_text} with {logo_text}"
        assert [p.tobytes() for p in pair["layers"]] == [logo.tobytes(), obj.tobytes()]
    # never the seed of a seed or test triplet, a candidate or a composite without layers
    layer_seeds = {derive_seed(7, f"layer{k}", r, i) for k in (1, 2) for r in range(1, 11) for i in range(50)}
    others = {derive_seed(7, "synthetic", split, i) for split in ("train", "test") for i in range(200)}
    others |= {derive_seed(7, ns, r, i) for ns in ("candidate", "unlabeled") for r in range(1, 11) for i in range(50)}
    assert len(layer_seeds) == 1000 and not layer_seeds & others
    assert pairs[0]["prompt"] == "a speckled yellow box with a sky blue concentric-circle emblem in a green ring"


def test_imported_layers_are_drawn_from_their_banks(micro_config_path: Path, tmp_path: Path):
    config = with_compose(micro_config_path, 3)
    work = str(tmp_path / "w")
    logos, objects = tmp_path / "logos", tmp_path / "objects"
    logos.mkdir(), objects.mkdir()
    for k in range(2):
        make_layer(900 + k, 32, 1)[0].save(logos / f"star-{k}.png")
        make_layer(950 + k, 32, 2)[0].save(objects / f"mug-{k}.png")
    (objects / "mug-0.txt").write_text("a plain red mug")
    res = runner.invoke(app, ["add-layers", "--logos", str(logos), "--objects", str(objects), "--config", config,
                              "--workdir", work])
    assert res.exit_code == 0, res.output
    store = Store(work)
    pairs = compose_pairs(load_config(config), store, 1, (0, 1, 2))
    texts = {"star 0", "star 1"}
    for pair in pairs:
        first, second = pair["parent_id"].split(",")
        assert first.startswith("layer1:") and second.startswith("layer2:") and "procedural" not in pair["parent_id"]
        assert store.put_image(pair["layers"][0])[1] == first.removeprefix("layer1:")  # the bank's image, by hash
        obj, logo = pair["prompt"].split(" with ")
        assert logo in texts and obj in {"a plain red mug", "mug 1"}


def test_a_task_without_procedural_layers_asks_for_a_bank(tmp_path: Path):
    cfg = load_config("intrinsic_tiny", ["bootstrap.compose_candidates=2"])
    with pytest.raises(ConfigError, match="add-layers"):
        compose_pairs(cfg, Store(str(tmp_path / "w")), 1, (0, 1))


def test_a_round_with_both_sources_reports_each_rate_beside_the_total(micro_config_path: Path, tmp_path: Path):
    """The stand-in stages (models/loop/simulated.py) accept each candidate with probability 0.5: the figures must
    follow from the committed manifest, per source and in all."""
    config = with_compose(micro_config_path, 6, SIMULATE)
    work = str(tmp_path / "w")
    stages.seed_stage(config, work)
    metrics = stages.plain_round(config, work, 1)
    store = Store(work)
    table = store.read_round(1)
    rates = {}
    for source in ("generated", "composed"):
        rows = table.filter(pc.equal(table["source"], source))
        rates[source] = round(pc.sum(rows["accepted"]).as_py() / rows.num_rows, 4)
        assert rows.num_rows == {"generated": 4, "composed": 6}[source]
    assert metrics["selection_rate_by_source"] == rates == {"composed": 0.8333, "generated": 0.75}
    row = store.metrics().to_pylist()[1]
    assert dict(row["selection_rate_by_source"]) == rates
    assert row["candidates"] == 10 and row["selection_rate"] == pytest.approx(8 / 10)
    status = runner.invoke(app, ["status", "--config", config, "--workdir", work])
    header, row1 = status.output.splitlines()[1], status.output.splitlines()[3]  # (round 0 in between)
    assert header.split()[-3:] == ["pool", "composed", "generated"], status.output
    assert row1.split()[-3:] == [str(row["pool_size"]), "83.3%", "75.0%"], status.output  # under their headings
    assert header.index("composed") + len("composed") == row1.index("83.3%") + len("83.3%")
    selection = next(c for c in charts(collect(store)) if c.name == "selection").figure
    assert [(t.name, list(t.y)) for t in selection.data] == [
        ("all sources", [0.8]), ("composed", [0.8333]), ("generated", [0.75])]


@pytest.mark.slow  # a micro round's training, as in tests/test_stage_c.py
def test_the_rounds_adapter_composes_and_the_judge_scores_the_composed_rows(micro_config_path: Path, tmp_path: Path):
    config = with_compose(micro_config_path, 2)
    work = str(tmp_path / "w")
    stages.seed_stage(config, work)
    stages.train_stage(config, work, 1)
    stages.generate_stage(config, work, 1, 0)
    assert stages.judge_stage(config, work, 1, 0)["candidates"] == 4  # 2 generated + 2 composed
    store = Store(work)
    judged = [r for r in RoundWork(store, 1).read_shard("judge", 0).to_pylist() if r["source"] == "composed"]
    pairs = compose_pairs(load_config(config), store, 1, (0, 1))
    assert [r["parent_id"] for r in judged] == [p["parent_id"] for p in pairs]
    for row, pair in zip(judged, pairs):
        assert row["seed"] == derive_seed(7, "composed", 1, judged.index(row)) and row["prompt"] == pair["prompt"]
        assert row["layer1_sha256"] == store.put_image(pair["layers"][0])[1]  # the layers as drawn
        assert row["layer2_sha256"] == store.put_image(pair["layers"][1])[1]
        assert row["composite_sha256"] != row["layer2_sha256"]  # the adapter's composite, not a copy
        assert set(row["judge_scores"] and dict(row["judge_scores"])) == {c.name for c in load_config(config).judge.criteria}
        assert row["accepted"] or row["reject_reason"]
