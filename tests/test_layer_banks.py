"""`layerboot add-layers`: loose layer-1 and layer-2 images for the compose source, kept in two
banks beside the rounds (storage/unlabeled.py), validated in full before anything is written,
and checked by fsck like the unlabeled bank."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from storage.blobs import blob_key
from storage.fsck import fsck
from storage.imports import ImportedImage, ImportFailed, read_image_dir
from storage.store import Store, StoreError
from storage.unlabeled import add_layers, add_unlabeled, read_layer_bank, read_unlabeled
from tests.conftest import solid

runner = CliRunner()


def folder(root: Path, name: str, colours: dict[str, tuple[int, int, int]]) -> Path:
    path = root / name
    path.mkdir()
    for stem, rgb in colours.items():
        solid(rgb).save(path / f"{stem}.png")
    return path


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    logos = folder(tmp_path, "logos", {"gold-star": (230, 180, 20), "ring": (20, 20, 200)})
    (logos / "gold-star.txt").write_text("a gold star\n")
    objects = folder(tmp_path, "objects", {"mug_red": (200, 10, 10), "bag": (90, 60, 30), "box": (120, 120, 120)})
    return logos, objects


def add(tmp_path: Path, *args: str):
    return runner.invoke(app, ["add-layers", *args, "-c", str(tmp_path / "micro.yaml"), "-w", str(tmp_path / "w")])


@pytest.fixture(autouse=True)
def config(micro_config_path: Path) -> Path:  # tmp_path / "micro.yaml"
    return micro_config_path


def test_add_layers_fills_both_banks_once(tmp_path: Path, layers):
    logos, objects = layers
    res = add(tmp_path, "--logos", str(logos), "--objects", str(objects))
    store = Store(str(tmp_path / "w"))
    assert res.exit_code == 0, res.output
    assert res.stdout == f"added 2 logo(s) and 3 object(s) to {store.uri} (0 and 0 already there; 2 and 3 in all)\n"
    one, two = read_layer_bank(store, "layer1"), read_layer_bank(store, "layer2")
    assert [(r["name"], r["prompt"]) for r in one] == [("gold-star", "a gold star"), ("ring", "ring")]
    assert [(r["name"], r["prompt"]) for r in two] == [("bag", "bag"), ("box", "box"), ("mug_red", "mug red")]
    for row in one + two:
        assert set(row) == {"name", "image_uri", "image_sha256", "prompt", "added_at"}
        assert row["image_uri"] == blob_key(row["image_sha256"])
    assert store.read_image(one[1]["image_uri"]).tobytes() == Image.open(logos / "ring.png").tobytes()
    assert sorted(p.name for p in (tmp_path / "w" / "layers").iterdir()) == [
        "layer1.json", "layer1.parquet", "layer2.json", "layer2.parquet"]
    assert read_unlabeled(store) == [] and not (tmp_path / "w" / "unlabeled").exists()

    again = add(tmp_path, "--layer1", str(logos), "--layer2", str(objects))  # the aliases
    assert again.exit_code == 0 and "added 0 logo(s) and 0 object(s)" in again.stdout
    assert "(2 and 3 already there; 2 and 3 in all)" in again.stdout
    assert read_layer_bank(store, "layer1") == one and read_layer_bank(store, "layer2") == two

    more = folder(tmp_path, "more", {"box": (120, 120, 120), "lamp": (250, 250, 200)})  # box is there already
    res = add(tmp_path, "--objects", str(more))
    assert res.exit_code == 0 and "added 0 logo(s) and 1 object(s)" in res.stdout
    assert "(0 and 1 already there; 2 and 4 in all)" in res.stdout
    assert [r["name"] for r in read_layer_bank(store, "layer2")] == ["bag", "box", "mug_red", "lamp"]


def test_a_bad_file_in_either_folder_writes_nothing(tmp_path: Path, layers):
    logos, objects = layers
    (objects / "broken.png").write_bytes(b"not a png")
    res = add(tmp_path, "--logos", str(logos), "--objects", str(objects))
    assert res.exit_code == 2
    assert f"error: {objects / 'broken.png'}: cannot decode image" in res.output and "nothing imported" in res.output
    assert not (tmp_path / "w" / "layers").exists() and not (tmp_path / "w" / "blobs").exists()
    store = Store(str(tmp_path / "w"))
    assert read_layer_bank(store, "layer1") == [] and read_layer_bank(store, "layer2") == []


def test_the_same_image_twice_in_one_folder_is_refused_naming_both(tmp_path: Path, layers):
    logos, objects = layers
    # the same pixels, encoded otherwise: other bytes, one image once decoded
    Image.open(objects / "bag.png").save(objects / "sack.png", compress_level=0)
    assert (objects / "sack.png").read_bytes() != (objects / "bag.png").read_bytes()
    res = add(tmp_path, "--logos", str(logos), "--objects", str(objects))
    assert res.exit_code == 2, res.output
    assert res.output.endswith(f"error: {objects / 'sack.png'}: the same image as {objects / 'bag.png'} "
                               "(nothing imported)\n")
    assert not (tmp_path / "w" / "blobs").exists()
    # add-unlabeled's folders are read as before: duplicates are skipped there, not refused
    assert [im.name for im in read_image_dir(objects, 32)] == ["bag", "box", "mug_red", "sack"]
    with pytest.raises(ImportFailed, match="sack.png: the same image as"):
        read_image_dir(objects, 32, refuse_duplicates=True)


def test_neither_folder_is_a_clear_error(tmp_path: Path):
    res = add(tmp_path)
    assert res.exit_code == 2
    assert "error: give --logos DIR, --objects DIR or both" in res.output
    assert not (tmp_path / "w").exists()


def test_a_bad_listing_in_one_bank_refuses_both(tmp_path: Path):
    store = Store(str(tmp_path / "w"))
    listing = tmp_path / "w" / "layers" / "layer2.parquet"
    listing.parent.mkdir(parents=True)
    listing.write_bytes(b"PAR1 not a table PAR1")
    with pytest.raises(StoreError, match="layer2.parquet: cannot be read"):
        add_layers(store, [ImportedImage("star", solid((230, 180, 20)), "a star")], [])
    assert not (tmp_path / "w" / "blobs").exists() and not (tmp_path / "w" / "layers" / "layer1.parquet").exists()
    with pytest.raises(ValueError, match="no layer bank 'layer3'"):
        read_layer_bank(store, "layer3")


def test_fsck_checks_the_layer_banks_like_the_unlabeled_one(tmp_path: Path, layers):
    logos, objects = layers
    assert add(tmp_path, "--logos", str(logos), "--objects", str(objects)).exit_code == 0
    store = Store(str(tmp_path / "w"))
    add_unlabeled(store, [ImportedImage("photo", solid((1, 2, 3)), "a photo")])
    report = fsck(store, repair=True)
    assert report.clean and report.bank_rows == 2 + 3 + 1 and report.blobs_checked == 6 and report.repaired == []

    # a layer listing edited by hand (one prompt), written back with pyarrow
    path = store.loc.join("layers/layer1.parquet")
    table = pq.read_table(io.BytesIO(store.loc.read_bytes(path)))
    sink = io.BytesIO()
    pq.write_table(table.set_column(3, "prompt", [["a gold star", "something else"]]), sink)
    store.loc.write_atomic(path, sink.getvalue())
    orphan, _ = store.blobs.put(b"an orphan, kept while the bank cannot be trusted")
    report = fsck(store, repair=True)
    assert {(f.kind, f.path, f.repairable) for f in report.findings} == {
        ("bad_bank", "layers/layer1.parquet", False), ("orphan_blob", orphan, False)}
    assert report.repaired == [] and report.kept_for_work == 2  # its blobs: kept, not orphans
    assert report.bank_rows == 3 + 1
    bad = next(f for f in report.findings if f.kind == "bad_bank")
    assert bad.detail == (f"{store.loc.uri(path)}: does not hash as add-layers wrote it (edited since); "
                          "run `layerboot fsck`")
    with pytest.raises(StoreError, match="does not hash as add-layers wrote it"):
        read_layer_bank(store, "layer1")
