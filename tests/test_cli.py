from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from storage.hashing import sha256_hex
from storage.store import Store
from models.domains.logo_object.world import make_triplet

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def test_seed_status_review_in_process(micro_config_path: Path, tmp_path: Path):
    work = str(tmp_path / "w")
    res = cli("seed", "--config", str(micro_config_path), "--workdir", work)
    assert res.exit_code == 0, res.output
    assert "committed round 0" in res.output and "12 triplets" in res.output

    status = json.loads(cli("status", "-c", str(micro_config_path), "-w", work, "--json").stdout)
    assert [(r["round"], r["state"], r["rows"], r["pool_size"]) for r in status["rounds"]] == [(0, "committed", 12, 8)]

    again = cli("seed", "--config", str(micro_config_path), "--workdir", work)
    assert again.exit_code == 0 and "identical content: nothing to do" in again.output
    other = cli("seed", "--config", str(micro_config_path), "--workdir", work, "--n", "3")
    assert other.exit_code == 2 and "already committed" in other.output and "Traceback" not in other.output

    sheet = tmp_path / "sheet.png"
    res = cli("review", "--round", "0", "-c", str(micro_config_path), "-w", work, "--out", str(sheet), "--n", "4")
    assert res.exit_code == 0, res.output
    assert Image.open(sheet).size[0] > 3 * 32 * 2 * 4  # four cells of three 2x-upscaled panels


def test_seed_rows_are_the_domain_and_are_deterministic(micro_config_path: Path, tmp_path: Path):
    works = [str(tmp_path / "a"), str(tmp_path / "b")]
    for w in works:
        assert cli("seed", "-c", str(micro_config_path), "-w", w).exit_code == 0
    a, b = (Store(w).read_round(0) for w in works)
    assert a.drop_columns(["created_at"]).equals(b.drop_columns(["created_at"]))
    row = a.to_pylist()[0]
    expected = make_triplet(row["seed"], 32)
    assert Store(works[0]).read_image(row["composite_uri"]).tobytes() == expected.composite.tobytes()
    assert row["prompt"] == expected.prompt
    assert sorted(set(a["split"].to_pylist())) == ["test", "train"]


def write_triplet(folder: Path, size: int = 32, seed: int = 1) -> None:
    t = make_triplet(seed, size)
    folder.mkdir(parents=True)
    for name in ("composite", "logo", "object"):
        getattr(t, name).save(folder / f"{name}.png")
    (folder / "prompt.txt").write_text(t.prompt)


def test_from_dir_imports_user_triplets(micro_config_path: Path, tmp_path: Path):
    src = tmp_path / "mine"
    for i in range(3):
        write_triplet(src / f"t{i}", seed=i)
    res = cli("seed", "-c", str(micro_config_path), "-w", str(tmp_path / "w"), "--from-dir", str(src), "--n-test", "2")
    assert res.exit_code == 0, res.output
    table = Store(str(tmp_path / "w")).read_round(0)
    assert sorted(zip(table["source"].to_pylist(), table["split"].to_pylist())) == [("seed", "test")] * 2 + [("user", "train")] * 3


def test_from_dir_reports_every_bad_file_and_imports_nothing(micro_config_path: Path, tmp_path: Path):
    src = tmp_path / "mine"
    write_triplet(src / "good")
    write_triplet(src / "corrupt")
    (src / "corrupt" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    write_triplet(src / "small")
    Image.new("RGB", (16, 16)).save(src / "small" / "object.png")
    write_triplet(src / "missing")
    (src / "missing" / "composite.png").unlink()
    (tmp_path / "outside.png").write_bytes((src / "good" / "logo.png").read_bytes())
    write_triplet(src / "escape")
    (src / "escape" / "logo.png").unlink()
    os.symlink(tmp_path / "outside.png", src / "escape" / "logo.png")

    work = tmp_path / "w"
    res = cli("seed", "-c", str(micro_config_path), "-w", str(work), "--from-dir", str(src))
    assert res.exit_code == 2
    out = res.output
    assert "4 problem(s), nothing imported" in out
    assert "corrupt/logo.png: cannot decode image" in out
    assert "small/object.png: expected 32x32 pixels, got 16x16" in out
    assert "missing/composite.*: expected exactly one image, found 0" in out
    assert "escape/logo.png: points outside the import folder" in out
    assert not work.exists() or not any(work.rglob("*.png"))  # nothing half-imported


def test_bad_config_is_one_line_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: tiny\nrun: {name: x}\ndata: {panel_size: 50}\nmodel: {base: b}\ntrain: {steps: 1}\n")
    res = cli("status", "-c", str(bad), "-w", str(tmp_path / "w"))
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {bad}: data.panel_size: must be a multiple of 16 (got 50)"


@pytest.mark.slow
def test_cli_as_subprocess(micro_config_path: Path, tmp_path: Path):
    """The installed console script, as a user runs it; blobs readable and hash-checked without layerboot."""
    exe = shutil.which("layerboot", path=str(Path(sys.executable).parent))
    assert exe, "console script not installed"
    work = tmp_path / "w"
    subprocess.run([exe, "seed", "-c", str(micro_config_path), "-w", str(work)], check=True, capture_output=True)
    out = subprocess.run([exe, "status", "-c", str(micro_config_path), "-w", str(work), "--json"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["rounds"][0]["round"] == 0
    table = ds.dataset(work / "manifests", partitioning="hive").to_table()
    assert table.num_rows == 12 and set(table["round"].to_pylist()) == {0}
    for key, sha in zip(table["composite_uri"].to_pylist(), table["composite_sha256"].to_pylist()):
        assert sha256_hex((work / key).read_bytes()) == sha
    help_text = subprocess.run([exe, "--help"], check=True, capture_output=True, text=True,
                               env=os.environ | {"COLUMNS": "200"}).stdout
    # every command once, under its group's heading, with its docstring's first paragraph on one line
    headings = ("Run rounds", "Read and tend a workdir", "The model outside a round", "The judge")
    assert [h for h in headings if f"─ {h} ─" in help_text] == list(headings)
    listed = [line[2:].split()[0] for line in help_text.splitlines() if line.startswith("│ ") and line[2] not in " -"]
    assert sorted(listed) == sorted(["seed", "add-unlabeled", "add-layers", "run", "resume", "ablate", "deploy",
                                     "status", "fsck", "review", "override", "report", "export", "train", "evaluate",
                                     "decompose", "compose", "pretrain-tiny", "make-flux-shaped", "judge"])
