"""Workdirs written by schema 1 (the logo/object columns) stay readable, and can be carried on.

`tests/data/workdir_v1` is a real workdir made by the code of schema 1 (see tests/data/README.md):
seeding (8 train + 4 test) and one micro round (4 candidates). Every test works on a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest

from flows.report import collect, eval_measures
from storage import schema
from storage.fsck import fsck
from storage.store import Store, StoreError
from tests.conftest import make_row

V1 = Path(__file__).parent / "data" / "workdir_v1"
LOGO_OBJECT = ["composite", "logo", "object"]


@pytest.fixture
def v1(tmp_path: Path) -> Store:
    shutil.copytree(V1, tmp_path / "work")
    return Store(str(tmp_path / "work"))


def test_the_fixture_is_schema_1():
    marker = (V1 / "manifests" / "round=01" / "_COMMITTED.json").read_text()
    assert '"schema_version": 1' in marker and '"eval_logo_psnr": 7.098' in marker
    assert schema.SCHEMA_VERSION == 2


def test_v1_manifests_read_in_todays_layout(v1: Store):
    table = v1.manifest()
    assert table.schema.equals(schema.MANIFEST_SCHEMA, check_metadata=False)
    assert schema.panel_names_of(v1.read_round(0).schema) == tuple(LOGO_OBJECT)
    assert table.num_rows == 16 and v1.pool(1).num_rows == 8 and v1.test_split().num_rows == 4
    assert pc.count_distinct(table["layer1_sha256"]).as_py() == 16
    row = table.to_pylist()[0]
    assert v1.read_image(row["layer1_uri"]).size == (32, 32)  # the old logo column's blobs, hash-checked
    stored, upgraded = schema.load_manifest((V1 / "manifests" / "round=00" / "part-0d11b2d6154aa174.parquet").read_bytes())
    assert stored.column("logo_sha256").equals(upgraded.column("layer1_sha256"))
    assert stored.column("object_uri").equals(upgraded.column("layer2_uri"))


def test_v1_round_metrics_upgrade(v1: Store):
    rounds = v1.metrics(write=False).to_pylist()  # rounds.parquet on disk is schema 1
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["panels"] == LOGO_OBJECT for r in rounds)
    assert rounds[0]["eval_metrics"] is None
    metrics = dict(rounds[1]["eval_metrics"])
    assert metrics == {"logo_psnr": 7.098, "logo_ssim": 0.0466, "object_psnr": 7.752, "object_ssim": 0.0669,
                       "object_psnr_footprint": 10.166, "baseline_logo_psnr": 7.164,
                       "baseline_object_psnr_footprint": 10.093, "baseline_codec_logo_psnr": 7.174,
                       "baseline_codec_object_psnr_footprint": 7.826}
    assert v1.marker(1)["eval_metrics"] == metrics  # the marker upgrades the same way
    assert list(eval_measures([{"panels": LOGO_OBJECT, "eval_metrics": metrics}])) == ["psnr", "ssim", "psnr_footprint"]
    data = collect(v1)  # the report reads it
    assert [r["round"] for r in data.rounds] == [0, 1]


def test_fsck_finds_nothing_wrong_in_a_v1_workdir(v1: Store):
    report = fsck(v1)
    assert {f.kind for f in report.findings} == {"missing_adapter"}  # the fixture keeps no adapter files
    assert report.rows == 16


def test_a_v1_workdir_carries_on_with_schema_2_rounds(v1: Store):
    rows = [make_row(v1, 2, i, source="generated", accepted=i == 0) for i in range(3)]
    with pytest.raises(StoreError, match=r"this workdir holds a task with panels \['composite', 'logo', 'object'\]"):
        v1.commit_round(2, schema.to_table(rows), panels=("composite", "albedo", "shading"))
    v1.commit_round(2, schema.to_table(rows), panels=LOGO_OBJECT)
    assert v1.marker(2)["schema_version"] == 2 and v1.marker(2)["panels"] == LOGO_OBJECT
    assert v1.manifest().num_rows == 19 and v1.pool(2).num_rows == 9  # mixed versions, one table
    assert [r["pool_size"] for r in v1.metrics().to_pylist()] == [8, 8, 9]
    assert schema.schema_version_of(Store(v1.uri).recorded_metrics().schema) == 2  # rewritten in today's layout
