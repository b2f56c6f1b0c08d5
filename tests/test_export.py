"""`layerboot export`: a round's dataset for Hugging Face `datasets` and WebDataset, read back with
those libraries and compared row by row and image by image with the workdir; the card's figures
against rounds.parquet; the same export writes the same files; refusals write nothing."""

from __future__ import annotations

import glob
import json
import posixpath
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from flows.cli.workdir import parse_size
from models.domains.logo_object.world import make_triplet
from storage import schema
from storage.export import DEDUP_MAX_DISTANCE, NearCopies
from storage.hashing import sha256_hex
from storage.images import encode_png
from storage.overrides import record_override
from storage.store import Store
from storage.triplets import put_triplet
from tests.conftest import MICRO_YAML, T0

runner = CliRunner()
PANELS = ("composite", "logo", "object")
TEMP = ".tmp-" + "0123456789abcdef" * 2 + "-"  # what Location.write_atomic names its temp files
THRESHOLDS = {"logo_clean": 0.5, "object_clean": 0.6}


def row(store: Store, r: int, seed: int, source: str = "seed", split: str = "train", composite=None, **kw) -> dict:
    """A procedural triplet (real pictures: a perceptual hash tells them apart) as a manifest row."""
    t = make_triplet(seed, 32)
    return put_triplet(store, panels=[composite or t.composite, t.logo, t.object],
                       footprint=t.footprint if source == "seed" else None, run_id="micro", round=r, source=source,
                       split=split, prompt=t.prompt, seed=seed, created_at=T0 + timedelta(hours=r), **kw)


def build(work: Path, overrides: bool) -> dict[str, str]:
    """Round 0: seeds 0-5 for training, 3 held out. Round 1: 5 candidates, 3 accepted (one a near-copy
    of seed 0: two pixels changed), the 2 rejected with reasons, and an accepted cycle triplet. With
    `overrides`, an operator rejects seed 1 and accepts candidate 12. Returns ids by name."""
    store = Store(str(work))
    seeds = [row(store, 0, s) for s in range(6)] + [row(store, 0, 100 + s, split="test") for s in range(3)]
    store.commit_round(0, schema.to_table(seeds), panels=PANELS)
    near = make_triplet(0, 32).composite.copy()
    near.putpixel((3, 3), (0, 0, 0))
    near.putpixel((20, 9), (255, 255, 255))
    judged = dict(source="generated", adapter_version="micro/round=01")
    ok = {"judge_scores": {"logo_clean": 0.9, "object_clean": 0.8}}
    bad = {"judge_scores": {"logo_clean": 0.2, "object_clean": 0.8}, "judge_reasons": {"logo_clean": "blurred logo"},
           "accepted": False, "reject_reason": "logo_clean: blurred logo"}
    candidates = [row(store, 1, 10, **judged, **ok), row(store, 1, 11, **judged, **ok),
                  row(store, 1, 12, **judged, **bad), row(store, 1, 13, **judged, **bad),
                  row(store, 1, 14, composite=near, **judged, **ok)]
    cycle = row(store, 1, 20, source="cycle", parent_id=candidates[0]["triplet_id"], adapter_version="micro/round=01",
                cycle_scores={"psnr": 31.5})
    store.commit_round(1, schema.to_table([*candidates, cycle]), panels=PANELS,
                       metrics={"judge_thresholds": THRESHOLDS, "criterion_pass_rates": {"logo_clean": 0.6, "object_clean": 1.0}})
    ids = {"seed0": seeds[0]["triplet_id"], "seed1": seeds[1]["triplet_id"], "c12": candidates[2]["triplet_id"],
           "c13": candidates[3]["triplet_id"], "near": candidates[4]["triplet_id"]}
    if overrides:
        t = datetime(2026, 3, 1, tzinfo=timezone.utc)
        record_override(store, ids["seed1"], "reject", "logo cut off", who="ana@box", when=t)
        record_override(store, ids["c12"], "accept", "judge too strict", who="ana@box", when=t)
    return ids


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "micro.yaml"
    path.write_text(MICRO_YAML.format(base="layerboot-tests/random-base"))  # a hub id: never loaded here
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("export") / "w"
    return work, build(work, overrides=True)


def export(config: Path, work, out, *args: str, round: int = 1):
    return runner.invoke(app, ["export", "-c", str(config), "-w", str(work), "--round", str(round), "--out", str(out), *args])


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def card_of(out: Path) -> tuple[dict, str]:
    _, header, body = (out / "README.md").read_text().split("---\n", 2)
    return yaml.safe_load(header), body


def expected(store: Store) -> dict[str, list[dict]]:
    """The workdir's rows per exported split, in the order the export writes them."""
    return {"train": store.pool(1).to_pylist(), "test": store.test_split().to_pylist(),
            "rejected": store.rejected(1).to_pylist()}


def assert_images_are_the_blobs(store: Store, want: dict, got: dict[str, bytes | None]) -> None:
    for name, column in zip((*PANELS, "footprint"), (*schema.PANELS, "footprint")):
        key = want[f"{column}_uri"]
        if key is None:
            assert got.get(name) is None, name
            continue
        assert got[name] == store.blobs.get(key) and sha256_hex(got[name]) == want[f"{column}_sha256"], name


def test_hf_export_loads_with_datasets_row_by_row(config: Path, workdir, tmp_path: Path):
    from datasets import Image as HFImage, load_dataset

    work, ids = workdir
    out = tmp_path / "hf"
    res = export(config, work, out, "--split", "all", "--include-rejected", "--license", "cc-by-4.0")
    assert res.exit_code == 0, res.output
    assert "train: 10 rows in 1 shard(s)" in res.output and "test: 3 rows" in res.output and "rejected: 2 rows" in res.output
    assert sorted(files(out)) == [".layerboot-export.json", "README.md", "data/rejected-00000-of-00001.parquet",
                                  "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    store = Store(str(work))
    want = expected(store)
    assert [len(v) for v in want.values()] == [10, 3, 2]
    for loaded in (load_dataset(str(out), cache_dir=str(tmp_path / "cache")),  # through the card
                   load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "cache2"))):  # without it
        assert sorted(loaded) == ["rejected", "test", "train"]
        for split, rows in want.items():
            ds = loaded[split]
            assert isinstance(ds.features["logo"], HFImage) and ds.features["judge_scores"].__class__.__name__ == "Json"
            assert ds[0]["composite"].size == (32, 32)  # decodes to a picture
            for name in (*PANELS, "footprint"):
                ds = ds.cast_column(name, HFImage(decode=False))
            assert [r["triplet_id"] for r in ds] == [r["triplet_id"] for r in rows]
            for got, w in zip(ds, rows):
                assert_images_are_the_blobs(store, w, {n: got[n] and got[n]["bytes"] for n in (*PANELS, "footprint")})
                for k in ("prompt", "round", "source", "split", "accepted", "reject_reason", "parent_id",
                          "adapter_version", "seed", "panel_size", "created_at", "run_id"):
                    assert got[k] == w[k], k
                for k in ("judge_scores", "judge_reasons", "cycle_scores"):
                    assert got[k] == (dict(w[k]) if w[k] is not None else None), k
    train = {r["triplet_id"]: r for r in loaded["train"]}
    assert train[ids["c12"]]["accepted"] is False and train[ids["c12"]]["override_action"] == "accept"
    assert train[ids["c12"]]["override_reason"] == "judge too strict"
    rejected = {r["triplet_id"]: r for r in loaded["rejected"]}
    assert set(rejected) == {ids["seed1"], ids["c13"]} and rejected[ids["seed1"]]["override_action"] == "reject"
    assert rejected[ids["c13"]]["reject_reason"] == "logo_clean: blurred logo"
    header, _ = card_of(out)
    assert header["license"] == "cc-by-4.0"


def test_webdataset_export_reads_back_with_webdataset(config: Path, workdir, tmp_path: Path):
    import webdataset as wds

    work, _ = workdir
    out = tmp_path / "wds"
    res = export(config, work, out, "--format", "webdataset", "--split", "all", "--shard-size", "12KB")
    assert res.exit_code == 0, res.output
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert shards == [f"test-0000{i}-of-00002.tar" for i in range(2)] + [f"train-0000{i}-of-00005.tar" for i in range(5)]
    store = Store(str(work))
    for split, rows in list(expected(store).items())[:2]:
        urls = sorted(glob.glob(str(out / "data" / f"{split}-*.tar")))
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        assert [s["__key__"] for s in samples] == [r["triplet_id"] for r in rows]
        for s, w in zip(samples, rows):
            assert_images_are_the_blobs(store, w, {n: s.get(f"{n}.png") for n in (*PANELS, "footprint")})
            meta = json.loads(s["json"])
            assert (meta["prompt"], meta["round"], meta["source"], meta["composite_sha256"]) == (
                w["prompt"], w["round"], w["source"], w["composite_sha256"])
            assert meta["judge_scores"] == (dict(w["judge_scores"]) if w["judge_scores"] else None)
            assert meta["created_at"] == w["created_at"].isoformat()
            assert set(s) - {"__key__", "__url__", "__local_path__"} == {"composite.png", "logo.png", "object.png", "json"} | (
                {"footprint.png"} if w["footprint_uri"] else set())


def test_the_card_agrees_with_rounds_parquet(config: Path, tmp_path: Path):
    work = tmp_path / "w"
    build(work, overrides=False)
    out = tmp_path / "out"
    assert export(config, work, out, "--split", "all", "--include-rejected").exit_code == 0
    rounds = pq.read_table(work / "metrics" / "rounds.parquet").to_pylist()
    header, body = card_of(out)
    counts = {s["name"]: s["num_examples"] for s in header["dataset_info"]["splits"]}
    assert counts == {"train": rounds[1]["pool_size"], "test": rounds[0]["test_rows"],
                      "rejected": rounds[1]["candidates"] - rounds[1]["accepted"]} == {"train": 10, "test": 3, "rejected": 2}
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}-*.parquet"} for s in ("train", "test", "rejected")]}]
    assert header["license"] == "unknown" and "set it with `layerboot export --license ID`" in body
    provenance = header["layerboot"]
    assert [(r["round"], r["content_digest"], r["manifest_sha256"]) for r in provenance["rounds"]] == [
        (m["round"], m["content_digest"], m["manifest_sha256"]) for m in rounds]
    assert provenance["run_id"] == "micro" and provenance["overrides_in_effect"] == 0 and len(provenance["config_hash"]) == 16
    # the task, the per-round selection and judge, the base and the adapter, as rounds.parquet has them
    assert "its layers `logo` + `object` (task `logo_object`)" in body
    assert "| 1 | 5 | 3 | 60.0% | 10 | logo_clean 0.5, object_clean 0.6 | logo_clean 0.6, object_clean 1 |" in body
    assert rounds[1]["selection_rate"] == 0.6
    assert "| 0 | 0 | 0 | - | 6 | - | - |" in body
    assert "Base: `layerboot-tests/random-base`" in body and "Judge: measure." in body
    assert "| `train` | micro/round=01 | 4 |" in body and "| `train` | - (seed / user) | 6 |" in body
    assert "| `train` | 1 | generated | 3 |" in body and "| `train` | 1 | cycle | 1 |" in body
    assert "Not removed (`layerboot export --dedup` drops near-copies)" in body


def test_dedup_drops_the_near_copy_and_the_card_says_so(config: Path, workdir, tmp_path: Path):
    work, ids = workdir
    out = tmp_path / "dedup"
    res = export(config, work, out, "--format", "webdataset", "--dedup")
    assert res.exit_code == 0, res.output
    assert "train: 9 rows in 1 shard(s)" in res.output and "1 near-copies dropped" in res.output
    import webdataset as wds

    keys = [s["__key__"] for s in wds.WebDataset([str(out / "data" / "train-00000-of-00001.tar")], shardshuffle=False)]
    pool = Store(str(work)).pool(1)["triplet_id"].to_pylist()
    assert keys == [k for k in pool if k != ids["near"]]  # seed 0 came first and stays
    header, body = card_of(out)
    assert header["dataset_info"]["splits"] == [{"name": "train", "num_bytes": header["dataset_info"]["splits"][0]["num_bytes"],
                                                 "num_examples": 9}]
    assert f"`--dedup`: 1 training rows dropped" in body and f"at most {DEDUP_MAX_DISTANCE} bits apart" in body


def test_near_copies_by_perceptual_hash():
    near = NearCopies()
    pictures = [make_triplet(s, 32).composite for s in range(8)]
    assert [near.seen(encode_png(p), f"p{i}") for i, p in enumerate(pictures)] == [False] * 8
    copy = pictures[3].copy()
    copy.putpixel((0, 0), (255, 0, 0))
    assert near.seen(encode_png(copy), "copy") and near.seen(encode_png(pictures[5]), "again")
    assert not near.seen(encode_png(Image.new("RGB", (32, 32), (9, 9, 9))), "flat")


def test_a_rerun_writes_the_same_files_and_no_half_shard_is_ever_visible(config: Path, workdir, tmp_path: Path):
    work, _ = workdir
    out = tmp_path / "again"
    args = ("--format", "webdataset", "--split", "all", "--include-rejected", "--shard-size", "12KB")
    assert export(config, work, out, *args).exit_code == 0
    first = files(out)
    # what a kill in the middle of an export leaves: no card, a shard not yet renamed, a temp file
    (out / "README.md").unlink()
    (out / "data" / "train-00002-of-00005.tar").rename(out / "data" / ".train-00002.tar")
    (out / "data" / f"{TEMP}.train-00003.tar").write_bytes(b"half a shard")
    (out / f"{TEMP}README.md").write_bytes(b"half a card")
    (out / ".gitattributes").write_text("*.tar filter=lfs\n")  # the user's own: kept
    res = export(config, work, out, *args)
    assert res.exit_code == 0, res.output
    assert files(out) == first | {".gitattributes": b"*.tar filter=lfs\n"}  # byte for byte, no leftovers
    (out / ".gitattributes").unlink()
    res = export(config, work, out, *args)  # a finished export, run again
    assert res.exit_code == 0 and files(out) == first
    assert [n for n in first if posixpath.basename(n).startswith(".")] == [".layerboot-export.json"]


def test_a_corrupt_blob_is_named_and_the_export_leaves_nothing(config: Path, tmp_path: Path):
    work = tmp_path / "w"
    ids = build(work, overrides=False)
    store = Store(str(work))
    (victim,) = [r for r in store.pool(1).to_pylist() if r["triplet_id"] == ids["near"]]
    path = work / victim["layer2_uri"]
    data = bytearray(path.read_bytes())
    data[50] ^= 0xFF
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    res = export(config, work, out, "--shard-size", "1KB")  # shards of earlier rows were written, then removed
    assert res.exit_code == 2
    assert res.output.startswith(f"error: corrupt blob {victim['layer2_uri']}: content hashes to ")
    assert f"(triplet {ids['near']}, object)" in res.output and "Traceback" not in res.output
    assert not out.exists()
    out.mkdir()  # a folder holding only the temp file of a write that stopped is as good as empty
    (out / f"{TEMP}.layerboot-export.json").write_bytes(b"{")
    res = export(config, work, out, "--shard-size", "1KB")
    assert res.exit_code == 2 and "corrupt blob" in res.output and list(out.iterdir()) == []


def _damage(work: Path) -> str:
    (part,) = (work / "manifests" / "round=01").glob("part-*.parquet")
    part.write_bytes(part.read_bytes() + b"\0")
    return f"error: round 1 is damaged: manifest {part.name} does not match its commit marker; run `layerboot fsck`"


def _other_export(config: Path, work: Path, out: Path) -> str:
    assert export(config, work, out, "--license", "mit").exit_code == 0
    return (f"error: --out {out} exists and holds another export (round 1 of run 'micro', other rows or options: "
            '{"dedup": false, "format": "hf", "include_rejected": false, "license": "mit", "round": 1, "shard_bytes": '
            '500000000, "split": "train"}); an export never writes over it')


def _foreign(config: Path, work: Path, out: Path) -> str:
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    return f"error: --out {out} exists and holds files that are not a layerboot export; an export never writes over it"


def _other_config(config: Path, work: Path, out: Path) -> str:
    (work / "run_target.json").write_text(json.dumps({"rounds": 2, "config_hash": "0" * 16}))
    return "error: the config given (hash "


REFUSALS = {
    "round not committed": (lambda config, work, out: "error: round 3 is not committed in ", ["--round", "3"]),
    "damaged round": (lambda config, work, out: _damage(work), []),
    "output holds another export": (_other_export, []),
    "output holds other files": (_foreign, []),
    "config not the run's": (_other_config, []),
    "unknown format": (lambda config, work, out: "error: --format 'zip': give hf or webdataset", ["--format", "zip"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_exports_write_nothing(case: str, config: Path, workdir, tmp_path: Path):
    work = tmp_path / "w"
    shutil.copytree(workdir[0], work)
    out = tmp_path / "out"
    prepare, extra = REFUSALS[case]
    message = prepare(config, work, out)
    before, workdir_before = files(out) if out.exists() else None, files(work)
    res = export(config, work, out, *extra)  # a second --round wins over the first
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert message in " ".join(res.output.split()), res.output
    assert (files(out) if out.exists() else None) == before and files(work) == workdir_before


def test_parse_size():
    assert [parse_size(s) for s in ("500MB", "64MiB", "1.5GB", "12KB", "4096")] == [
        500 * 10**6, 64 * 2**20, 1_500_000_000, 12_000, 4096]
    for bad in ("lots", "0", "5 parsecs"):
        with pytest.raises(Exception, match="give a size such as"):
            parse_size(bad)


@pytest.mark.service
def test_s3_workdir_to_s3_output_writes_the_local_export_byte_for_byte(config: Path, workdir, tmp_path: Path,
                                                                       s3_endpoint: str, monkeypatch):
    import boto3
    import s3fs

    for k, v in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()  # one client per set of arguments: not one of an earlier test's
    boto3.client("s3").create_bucket(Bucket="layerboot-export")
    work, _ = workdir
    fs = s3fs.S3FileSystem()
    fs.put(str(work) + "/", "layerboot-export/w/", recursive=True)
    args = ("--format", "hf", "--split", "all", "--include-rejected", "--shard-size", "20KB")
    local = tmp_path / "local"
    assert export(config, work, local, *args).exit_code == 0
    res = export(config, "s3://layerboot-export/w", "s3://layerboot-export/out", *args)
    assert res.exit_code == 0, res.output
    remote = {posixpath.relpath(p, "layerboot-export/out"): fs.cat_file(p) for p in fs.find("layerboot-export/out")}
    assert remote == files(local)
    res = export(config, "s3://layerboot-export/w", "s3://layerboot-export/out", "--dedup")
    assert res.exit_code == 2 and "exists and holds another export" in res.output
