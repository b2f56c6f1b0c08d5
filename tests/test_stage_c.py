"""Paper stage (c) on the micro config: each round the cycle stage also decomposes composites that
have no layers (procedural ones from their own seed namespace, or a user's imported photos),
re-composes them, and writes the results as cycle rows with their parent recorded."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from configs import load_config
from flows.cli import app
from models.loop import stages
from models.loop.bootstrap import shard_indices
from models.domains.logo_object.world import make_triplet
from storage.hashing import derive_seed
from storage.store import Store
from storage.unlabeled import read_unlabeled
from storage.work import RoundWork

runner = CliRunner()


def with_unlabeled(config_path: Path, n: int) -> str:
    text = config_path.read_text().replace("  eval_n: 2\n", f"  eval_n: 2\n  unlabeled_per_round: {n}\n")
    config_path.write_text(text)
    return str(config_path)


def cycle_round_one(config: str, workdir: str) -> pa.Table:
    """Round 1 up to its cycle stage, stage by stage (no Prefect needed)."""
    stages.seed_stage(config, workdir)
    stages.train_stage(config, workdir, 1)
    shards = shard_indices(load_config(config))
    for stage in (stages.generate_stage, stages.judge_stage, stages.cycle_stage):
        for shard in shards:
            stage(config, workdir, 1, shard)
    return RoundWork(Store(workdir), 1).read_stage("cycle", shards)


@pytest.mark.slow
def test_procedural_composites_without_layers_are_cycled(micro_config_path: Path, tmp_path: Path):
    config = with_unlabeled(micro_config_path, 3)
    table = cycle_round_one(config, str(tmp_path / "w"))
    rows = [r for r in table.to_pylist() if r["parent_id"].startswith("unlabeled:")]
    seeds = [derive_seed(7, "unlabeled", 1, i) for i in range(3)]
    assert [r["parent_id"] for r in rows] == [f"unlabeled:procedural:{s}" for s in seeds]
    store = Store(str(tmp_path / "w"))
    for row, seed in zip(rows, seeds):
        assert row["source"] == "cycle" and row["round"] == 1 and row["cycle_scores"]
        # the composite is the procedural one; its layers are the model's, never the generator's
        assert store.read_image(row["composite_uri"]).tobytes() == make_triplet(seed, 32).composite.tobytes()
        assert row["layer2_sha256"] != store.put_image(make_triplet(seed, 32).object)[1]
        assert row["accepted"] or row["reject_reason"]


@pytest.mark.slow
def test_imported_composites_are_validated_then_cycled(micro_config_path: Path, tmp_path: Path):
    config = with_unlabeled(micro_config_path, 2)
    work = str(tmp_path / "w")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        make_triplet(500 + i, 32).composite.save(photos / f"mug-{i}.png")
    (photos / "mug-0.txt").write_text("a red mug with a star")
    (photos / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 32)).save(photos / "wide.png")
    res = runner.invoke(app, ["add-unlabeled", str(photos), "--config", config, "--workdir", work])
    assert res.exit_code == 2 and "broken.png" in res.output and "wide.png" in res.output
    assert "nothing imported" in res.output and not (Path(work) / "blobs").exists()

    (photos / "broken.png").unlink()
    (photos / "wide.png").unlink()
    res = runner.invoke(app, ["add-unlabeled", str(photos), "--config", config, "--workdir", work])
    assert res.exit_code == 0 and "added 3 composite(s)" in res.output, res.output
    again = runner.invoke(app, ["add-unlabeled", str(photos), "--config", config, "--workdir", work])
    assert "added 0 composite(s)" in again.output and "3 already there" in again.output
    listed = read_unlabeled(Store(work))
    assert [r["name"] for r in listed] == ["mug-0", "mug-1", "mug-2"] and listed[0]["prompt"] == "a red mug with a star"

    table = cycle_round_one(config, work)
    rows = [r for r in table.to_pylist() if r["parent_id"].startswith("unlabeled:")]
    # round 1 takes the first two of the listing, in order
    assert [r["parent_id"] for r in rows] == [f"unlabeled:{r['composite_sha256']}" for r in listed[:2]]
    assert [r["composite_sha256"] for r in rows] == [r["composite_sha256"] for r in listed[:2]]
    assert rows[0]["prompt"] == "a red mug with a star"
    assert Store(work).read_image(rows[1]["composite_uri"]).tobytes() == Image.open(photos / "mug-1.png").tobytes()


def test_fsck_repair_keeps_the_imported_composites(micro_config_path: Path, tmp_path: Path):
    from storage.fsck import fsck

    work = str(tmp_path / "w")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        make_triplet(600 + i, 32).composite.save(photos / f"bag-{i}.png")
    assert runner.invoke(app, ["add-unlabeled", str(photos), "--config", str(micro_config_path),
                               "--workdir", work]).exit_code == 0
    blobs = sorted(p.name for p in (Path(work) / "blobs").rglob("*.png"))
    fsck(Store(work), repair=True)
    assert sorted(p.name for p in (Path(work) / "blobs").rglob("*.png")) == blobs and len(blobs) == 2
    assert len(read_unlabeled(Store(work))) == 2


def test_the_intrinsic_cycle_check_recomposes_by_the_formula(random_tiny_base: Path, tmp_path: Path):
    """`bootstrap.cycle_check: analytic` (intrinsic_tiny.yaml): I'' = albedo x shading, not a sampling."""
    import numpy as np

    from configs.schema import write_effective_config
    from models.domains.intrinsic.world import recompose
    from models.iclora.grid import psnr
    from models.iclora.grid import to_unit_tensor

    config = str(write_effective_config("configs/intrinsic_tiny.yaml", [
        f"model.base={random_tiny_base}", "data.panel_size=32", "data.n_seeds=8", "data.n_test=4", "train.steps=4",
        "train.batch_size=2", "train.checkpoint_every=2", "sample.steps=2", "bootstrap.candidates=4",
        "bootstrap.shard_size=2", "bootstrap.unlabeled_per_round=2", "bootstrap.eval_n=2"], tmp_path))
    work = str(tmp_path / "w")
    rows = cycle_round_one(config, work).to_pylist()
    store = Store(work)
    assert len(rows) >= 2 and all(r["source"] == "cycle" for r in rows)
    for row in rows:
        albedo, shading = (np.asarray(store.read_image(row[f"layer{i}_uri"])) for i in (1, 2))
        product = Image.fromarray(recompose(albedo, shading))
        expected = psnr(to_unit_tensor([product]), to_unit_tensor([store.read_image(row["composite_uri"])]))
        assert dict(row["cycle_scores"]) == {"recompose_psnr": float(f"{expected:.3f}")}
