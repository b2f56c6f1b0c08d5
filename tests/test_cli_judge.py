"""`layerboot judge calibrate | score`, run through the sub-app (CliRunner, in process)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from flows.cli.judge import app as judge_app
from models.domains.logo_object.world import make_triplet
from storage.schema import MANIFEST_SCHEMA, to_table
from storage.store import Store
from storage.triplets import put_triplet

runner = CliRunner()
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

CONFIG = """\
profile: tiny
run: {name: judgetest, seed: 3}
data: {panel_size: 64, n_seeds: 2, n_test: 0}
model: {base: models/tiny_base, device: cpu}
train: {steps: 1}
judge: {kind: measure, calibration_size: 30}
"""


def cli(*args: str):
    return runner.invoke(judge_app, list(args))


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "judge.yaml"
    path.write_text(CONFIG)
    return str(path)


@pytest.fixture
def workdir(tmp_path: Path) -> tuple[str, Store, dict]:
    """Round 0: two seed triplets. Round 1: five generated candidates - two clean, a ghost of the
    logo left on the object, a blank logo panel, and one whose object blob is corrupted on disk."""
    wd = str(tmp_path / "wd")
    store = Store(wd)
    common = dict(run_id="judgetest", split="train", created_at=T0)
    seeds = [make_triplet(100 + i, 64) for i in range(2)]
    store.commit_round(0, to_table([put_triplet(store, panels=t.panels,
                                                round=0, source="seed", prompt=t.prompt, seed=100 + i, **common)
                                    for i, t in enumerate(seeds)]))
    ts = [make_triplet(200 + i, 64) for i in range(5)]
    panels = [(t.composite, t.logo, t.object) for t in ts]
    c, o = (np.asarray(p, dtype=np.float64) for p in (ts[2].composite, ts[2].object))
    ghost = np.rint(o + 0.6 * (c - o)).astype(np.uint8)  # 60 % of the logo left on the object
    panels[2] = (ts[2].composite, ts[2].logo, Image.fromarray(ghost, "RGB"))
    c, _, o = panels[3]
    panels[3] = (c, Image.new("RGB", (64, 64), (255, 255, 255)), o)
    rows = [put_triplet(store, panels=p, round=1, source="generated", prompt=t.prompt,
                        seed=200 + i, accepted=False, **common) for i, (t, p) in enumerate(zip(ts, panels))]
    store.commit_round(1, to_table(rows))
    broken = Path(wd) / rows[4]["layer2_uri"]
    broken.write_bytes(b"not a png")
    return wd, store, {"rows": rows}


@pytest.mark.slow
def test_calibrate_writes_and_prints_the_report(cfg, tmp_path):
    wd = str(tmp_path / "wd")
    res = cli("calibrate", "--config", cfg, "--workdir", wd, "--json")
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)  # (stderr: the base's loading bars, the codec needs it)
    saved = json.loads((Path(wd) / "judge" / "calibration.json").read_text())
    assert printed == saved
    # 30 benchmark triplets, each raw and through the shipped codec
    assert saved["benchmark"]["items"] == 60 and saved["benchmark"]["panel_size"] == 64 and saved["run_seed"] == 3
    assert saved["benchmark"]["kinds"]["clean"] == saved["benchmark"]["kinds"]["clean+codec"] == 12
    assert set(saved["criteria"]) == {"logo_clean", "object_clean", "composite_match", "panels_agree", "quality"}
    for name, r in saved["criteria"].items():
        assert r["positives"] + r["negatives"] == 60 and r["threshold"] == saved["thresholds"][name]
        assert r["auroc"] >= 0.9 and r["precision"] >= 0.99 or r["recall"] == 0.0  # target or accept nothing
    aurocs = {name: (r["auroc_raw"], r["auroc_codec"]) for name, r in saved["criteria"].items()}
    # measured: the codec smooths blur away, so "quality" separates decodes worst (0.812 while noise
    # items went through the codec as pixel noise, which it removes; docs/research-log.md, "Noise the
    # codec removes"). The decodes' last bits follow the CPU's conv kernels (panels_agree through the
    # codec: 0.994 on 2026-12-06's machine, 0.989 on 2026-12-07's, one pair of items swapped), the raw scores do not
    assert aurocs == {name: (pytest.approx(a, abs=0.002), pytest.approx(b, abs=0.01)) for name, (a, b) in {
        "composite_match": (1.0, 0.969), "logo_clean": (1.0, 1.0), "object_clean": (1.0, 1.0),
        "panels_agree": (0.966, 0.994), "quality": (1.0, 0.917)}.items()}
    # at the thresholds reaching precision 0.99 on raw + decoded items, every clean triplet passes (10 of
    # 12 while the decoded noise items scored like clean decodes)
    assert saved["selection_rate"]["clean"] == 1.0 and saved["selection_rate"]["missing"] == 0.0
    assert saved["selection_rate_configured"]["clean+codec"] == pytest.approx(8 / 12)  # the aim is >= 0.9
    assert saved["selection_rate_configured"]["missing+codec"] == 0.0

    table = cli("calibrate", "--config", cfg, "--workdir", wd, "--n", "20", "--target-precision", "0.9")
    assert table.exit_code == 0 and "AUROC" in table.output and "selection rate" in table.output
    saved = json.loads((Path(wd) / "judge" / "calibration.json").read_text())
    assert saved["benchmark"]["items"] == 40 and saved["target_precision"] == 0.9


@pytest.mark.slow
def test_the_tiny_profiles_judge_separates_its_benchmark_at_its_world_level():
    """The aim: AUROC >= 0.95 per criterion on the tiny config's benchmark (270 triplets at its
    world level, raw and through the shipped codec). Measured 2026-12-07 at level 2 (README's
    figures; docs/research-log.md, "Noise the codec removes"); decodes' last bits follow the CPU."""
    from configs import load_config
    from models.loop.runtime import MODEL_LOCK, calibrate_judge

    with MODEL_LOCK:
        report = calibrate_judge(load_config("tiny"))
    assert report["benchmark"]["items"] == 540
    got = {name: r["auroc"] for name, r in report["criteria"].items()}
    assert got == pytest.approx({"composite_match": 0.971, "logo_clean": 0.992, "object_clean": 0.983,
                                 "panels_agree": 0.966, "quality": 0.963}, abs=0.005)
    assert min(got.values()) >= 0.95


@pytest.mark.slow
def test_loop_judge_uses_calibrated_thresholds_only_when_target_precision_is_set(tmp_path):
    from configs import load_config
    from models.loop.runtime import MODEL_LOCK, calibrate_judge, judge_for

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(CONFIG)
    calibrated = tmp_path / "calibrated.yaml"
    calibrated.write_text(CONFIG.replace("calibration_size: 30}", "calibration_size: 30, target_precision: 0.99}"))
    with MODEL_LOCK:
        assert {c.threshold for c in judge_for(load_config(fixed)).criteria} == {0.5}
        cfg = load_config(calibrated)
        report = calibrate_judge(cfg)
        used = {c.name: c.threshold for c in judge_for(cfg).criteria}
    assert used == report["thresholds"] and report["target_precision"] == 0.99
    assert used != {name: 0.5 for name in used}  # the calibrated numbers, not the config's


def test_score_rescores_a_round_beside_it_never_over_it(cfg, workdir):
    wd, store, info = workdir
    marker = store.marker(1)
    res = cli("score", "--round", "1", "--config", cfg, "--workdir", wd, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["rows"] == summary["candidates"] == 5
    assert summary["selection_rate"] == 0.4 and summary["passes_all"] == 2
    # the unreadable blob fails everything; the ghost fails object_clean; the blank logo panel
    # fails logo_clean, panels_agree (no logo colours to find) and quality (a blank panel)
    assert summary["pass_rate"] == {"logo_clean": 0.6, "object_clean": 0.6, "composite_match": 0.8,
                                    "panels_agree": 0.6, "quality": 0.6}
    assert store.marker(1) == marker  # the committed round is untouched

    out = pq.read_table(Path(wd) / "judge" / "rescored" / "round=01.parquet")
    assert out.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    rows = out.to_pylist()
    assert [r["accepted"] for r in rows] == [True, True, False, False, False]
    assert "ghost" in rows[2]["reject_reason"] and "object_clean" in rows[2]["reject_reason"]
    assert "logo_clean" in rows[3]["reject_reason"]
    # an unreadable row is rejected as the round's judge stage rejects it: named, with no scores
    assert rows[4]["reject_reason"].startswith("unreadable:") and rows[4]["judge_scores"] is None
    assert all(len(dict(r["judge_scores"])) == 5 and len(dict(r["judge_reasons"])) == 5 for r in rows[:4])

    text = cli("score", "--round", "1", "--config", cfg, "--workdir", wd)
    assert text.exit_code == 0 and "selection rate 40.0%" in text.output and "pass rate" in text.output


def test_score_round_zero_keeps_seed_decisions(cfg, workdir):
    wd, _, _ = workdir
    res = cli("score", "--round", "0", "--config", cfg, "--workdir", wd, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["candidates"] == 0 and summary["selection_rate"] is None
    rows = pq.read_table(Path(wd) / "judge" / "rescored" / "round=00.parquet").to_pylist()
    assert all(r["accepted"] and r["judge_scores"] for r in rows)


@pytest.mark.slow
def test_calibrated_thresholds_are_used_when_asked(cfg, workdir):
    wd, _, _ = workdir
    missing = cli("score", "--round", "1", "--config", cfg, "--workdir", wd, "--calibrated")
    assert missing.exit_code == 2 and "judge calibrate" in missing.output
    assert cli("calibrate", "--config", cfg, "--workdir", wd).exit_code == 0
    thresholds = json.loads((Path(wd) / "judge" / "calibration.json").read_text())["thresholds"]
    res = cli("score", "--round", "1", "--config", cfg, "--workdir", wd, "--calibrated", "--json")
    assert res.exit_code == 0 and json.loads(res.output)["thresholds"] == thresholds


def test_user_errors_are_one_line_exit_2(cfg, workdir):
    wd, _, _ = workdir
    res = cli("score", "--round", "7", "--config", cfg, "--workdir", wd)
    assert res.exit_code == 2 and "round 7 is not committed" in res.output and len(res.output.strip().splitlines()) == 1
    res = cli("calibrate", "--config", cfg, "--workdir", wd, "--size", "40")
    assert res.exit_code == 2 and "multiple of 16" in res.output
