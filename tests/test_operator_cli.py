"""Operator commands: `layerboot override`, `review` after an override, `status --watch`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli import app
from storage import schema
from storage.overrides import load_overrides
from storage.store import Store
from storage.work import RoundWork
from tests.conftest import make_row

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def seeded(tmp_path: Path) -> tuple[str, Store, list[dict]]:
    """Round 0 with 3 train seeds and 1 test row; round 1 with 2 candidates, one rejected."""
    work = str(tmp_path / "w")
    store = Store(work)
    r0 = [make_row(store, 0, i) for i in range(3)] + [make_row(store, 0, 9, split="test")]
    store.commit_round(0, schema.to_table(r0))
    r1 = [make_row(store, 1, 0, source="generated"),
          make_row(store, 1, 1, source="generated", accepted=False, reject_reason="logo_clean: faded")]
    store.commit_round(1, schema.to_table(r1))
    return work, store, r0 + r1


def test_override_records_who_when_why_and_the_pool_follows(tmp_path: Path):
    work, store, rows = seeded(tmp_path)
    rejected, seed = rows[5]["triplet_id"], rows[0]["triplet_id"]
    res = cli("override", rejected, "--accept", "--reason", "judge too strict", "-w", work)
    assert res.exit_code == 0, res.output
    assert re.match(rf"recorded: accept {rejected} \(round 1\) by \S+@\S+ at \d{{4}}-\d\d-\d\d", res.output)
    assert "training pool after round 1: 5 triplets" in res.output
    res = cli("override", seed, "--reject", "--reason", "logo cut off", "-w", work)
    assert res.exit_code == 0 and "training pool after round 1: 4 triplets" in res.output
    assert [(o.triplet_id, o.action, o.reason) for o in load_overrides(store.loc)] == [
        (rejected, "accept", "judge too strict"), (seed, "reject", "logo cut off")]

    # review shows round 1's accepted triplets after overrides: the rescued one makes two cells
    sheet = tmp_path / "sheet.png"
    res = cli("review", "--round", "1", "-w", work, "--out", str(sheet))
    assert res.exit_code == 0 and res.output.strip().endswith("(2 triplets)"), res.output
    assert Image.open(sheet).size[1] > 2 * 32  # one row of cells: 2x-upscaled panels and a label
    res = cli("review", "--round", "0", "-w", work, "--out", str(sheet))
    assert res.exit_code == 0 and res.output.strip().endswith("(2 triplets)")  # 3 seeds, one rejected


def test_override_user_errors_exit_2_and_record_nothing(tmp_path: Path):
    work, store, rows = seeded(tmp_path)
    cases = [
        (("override", "0123abcd", "--reject", "--reason", "x"), "error: unknown triplet id '0123abcd'"),
        (("override", rows[0]["triplet_id"], "--reason", "x"), "error: give exactly one of --accept or --reject"),
        (("override", rows[0]["triplet_id"], "--accept", "--reject", "--reason", "x"), "error: give exactly one of"),
        (("override", rows[3]["triplet_id"], "--reject", "--reason", "x"), "is in the test split"),
    ]
    for args, message in cases:
        res = cli(*args, "-w", work)
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1
    assert load_overrides(store.loc) == []


def test_status_watch_refreshes_while_a_round_runs(tmp_path: Path):
    work, store, _ = seeded(tmp_path)
    RoundWork(store, 2).set_status("judge", "running")  # this very process: alive, so "running"
    res = cli("status", "-w", work, "--watch", "--interval", "0.05", "--iterations", "3")
    assert res.exit_code == 0, res.output
    assert res.output.count("workdir: ") == 3 and res.output.count("refreshed ") == 3
    assert res.output.count("stage: judge") == 3 and "stopped watching" not in res.output
    assert "\x1b[2J" not in res.output  # no screen clearing when the output is not a terminal


def test_status_watch_stops_when_no_round_runs(tmp_path: Path):
    work, store, _ = seeded(tmp_path)
    RoundWork(store, 2).set_status("judge", "failed", error="ValueError: bad")
    res = cli("status", "-w", work, "--watch", "--interval", "30")  # would wait 30 s if it did not stop
    assert res.exit_code == 0, res.output
    assert res.output.count("workdir: ") == 1 and "no round is running: stopped watching" in res.output
    assert "error: ValueError: bad" in res.output


@pytest.mark.slow
def test_healthy_command_exits_zero_every_time_status_150_runs(tmp_path: Path, runs: int = 150):
    """An Arrow worker thread once aborted the interpreter at exit in ~10% of runs (exit 134:
    storage.schema.read_parquet says why); 150 runs all exit 0 (~2 min on 2 cores). A 10% failure
    passes 150 runs with probability 0.9^150 = 1e-7, a 3% one with 0.01 (500 runs took ~7 min of CI)."""
    import os
    import subprocess
    import sys

    work, _, _ = seeded(tmp_path)
    layerboot = str(Path(sys.executable).parent / "layerboot")
    codes = [subprocess.run([layerboot, "status", "-w", work], capture_output=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"}).returncode for _ in range(runs)]
    assert {code: codes.count(code) for code in set(codes)} == {0: runs}


def test_destroys_nothing_it_does_not_own_train_refuses_an_out_folder_with_foreign_files(tmp_path: Path,
                                                                                         micro_config_path: Path):
    work, _, _ = seeded(tmp_path)
    out = tmp_path / "adapter"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "notes.txt").write_text("mine")
    res = cli("train", "-c", str(micro_config_path), "-w", work, "--steps", "1", "--out", str(out))
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == (f"error: {out}: holds checkpoint/notes.txt, which `layerboot train` does not "
                                  "write: name a new or empty folder for --out (nothing was changed)")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["checkpoint", "checkpoint/notes.txt"]
    assert (out / "checkpoint" / "notes.txt").read_text() == "mine"

    # a folder of its own is trained into, and a second run finds its adapter there
    mine = tmp_path / "mine"
    for said in ("wrote", "already holds this adapter"):
        res = cli("train", "-c", str(micro_config_path), "-w", work, "--steps", "1", "--out", str(mine))
        assert res.exit_code == 0 and said in res.output, res.output
    assert sorted(p.name for p in mine.iterdir()) == ["extra_modules.safetensors", "pytorch_lora_weights.safetensors",
                                                      "train_done.json", "train_log.json"]


def test_destroys_nothing_it_does_not_own_a_half_done_training_folder_is_its_own(tmp_path: Path):
    from models.iclora.lora import AdapterError
    from models.loop.stages import refuse_foreign_files

    for name in ("pytorch_lora_weights.safetensors", "extra_modules.safetensors", "trainer_state.json",
                 "trainer_state.safetensors", "train_log.json"):
        for folder in ("checkpoint", "checkpoint.tmp"):
            (tmp_path / folder).mkdir(exist_ok=True)
            (tmp_path / folder / name).write_bytes(b"")
    refuse_foreign_files(tmp_path)  # what a killed `layerboot train` leaves: resumed, not refused
    refuse_foreign_files(tmp_path / "new")
    (tmp_path / "thesis.txt").write_text("mine")
    (tmp_path / "train_log.json").symlink_to(tmp_path / "thesis.txt")  # written through, it would change thesis.txt
    with pytest.raises(AdapterError, match=re.escape(f"{tmp_path}: holds thesis.txt, which")):
        refuse_foreign_files(tmp_path)
    (tmp_path / "thesis.txt").unlink()
    with pytest.raises(AdapterError, match=re.escape(f"{tmp_path}: holds train_log.json, which")):
        refuse_foreign_files(tmp_path)
