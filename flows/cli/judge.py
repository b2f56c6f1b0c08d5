"""`layerboot judge ...`: calibrate the judge on a held-out corruption benchmark, and re-score a
committed round (rounds are immutable: the re-scored table is written beside them, never over them).

    layerboot judge calibrate --config configs/tiny.yaml [--json]
    layerboot judge score --round 3 [--calibrated] [--json]
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.common import ConfigOpt, SetOpt, WorkdirOpt, open_config, user_errors, with_overrides

app = typer.Typer(help="Calibrate the judge, or re-score a committed round with it.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def calibration_uri(cfg, store) -> str:
    """Where the calibration JSON lives. `judge.calibration_path` (a file under <workdir>/judge/)
    wins; else next to the judge: a local Qwen folder holds its own, a hub model and the measurement
    judge use <workdir>/judge/."""
    section = cfg.judge
    if section.calibration_path:
        return store.loc.uri(store.loc.join(section.calibration_path))
    if section.kind == "qwen":
        if Path(section.model).is_dir():
            return str(Path(section.model) / "layerboot-calibration.json")
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "__", section.model)
        return store.loc.uri(store.loc.join("judge", f"calibration-{slug}.json"))
    return store.loc.uri(store.loc.join("judge", "calibration.json"))


def _write(uri: str, data: bytes) -> None:
    from storage.fs import Location

    loc = Location.parse(posixpath.dirname(uri.rstrip("/")) if "://" in uri else str(Path(uri).parent))
    loc.write_atomic(loc.join(posixpath.basename(uri)), data)


def _read_thresholds(uri: str) -> dict[str, float]:
    from storage.fs import Location

    loc = Location.parse(posixpath.dirname(uri) if "://" in uri else str(Path(uri).parent))
    path = loc.join(posixpath.basename(uri))
    if not loc.exists(path):
        raise FileNotFoundError(f"no calibration at {uri}: run `layerboot judge calibrate` first")
    return {k: float(v) for k, v in json.loads(loc.read_bytes(path))["thresholds"].items()}


@app.command()
def calibrate(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", min=20, help="Benchmark triplets (default: judge.calibration_size).")] = None,
    size: Annotated[Optional[int], typer.Option("--size", min=32, max=1024, help="Panel size (default: data.panel_size).")] = None,
    target_precision: Annotated[Optional[float], typer.Option(
        "--target-precision", min=0.01, max=1.0,
        help="Precision the reported thresholds reach (default: judge.target_precision, else 0.99).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the calibration JSON.")] = False,
) -> None:
    """Score a held-out corruption benchmark, each triplet raw and through the base's codec (what the
    loop judges are decodes); report AUROC, precision/recall and thresholds per criterion."""
    with user_errors():
        from models.loop.runtime import MODEL_LOCK, calibrate_judge
        from models.domains.base import check_size

        config = with_overrides(config, sets)
        cfg, store = open_config(config, workdir)
        size = size or cfg.data.panel_size
        try:
            check_size(size)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--size") from None
        with MODEL_LOCK:
            report = calibrate_judge(cfg, n, size, target_precision)
        items = report["benchmark"]["items"]
        uri = calibration_uri(cfg, store)
        report["path"] = uri
        _write(uri, json.dumps(report, indent=1, sort_keys=True).encode())
        if as_json:
            typer.echo(json.dumps(report, indent=1, sort_keys=True))
            return
        typer.echo(f"judge {report['judge']['kind']}: {items} benchmark triplets (raw + codec) at {size} px "
                   f"in {report['seconds']:.1f} s; target precision {report['target_precision']}")
        w = max(16, *map(len, report["criteria"]))  # the task's criterion names
        typer.echo(f"{'criterion':<{w}} {'AUROC':>6} {'threshold':>9} {'precision':>9} {'recall':>6} {'pos':>4} {'neg':>4}")
        for name, r in report["criteria"].items():
            auroc = "-" if r["auroc"] is None else f"{r['auroc']:.3f}"
            typer.echo(f"{name:<{w}} {auroc:>6} {r['threshold']:>9.3f} {r['precision']:>9.3f} "
                       f"{r['recall'] if r['recall'] is not None else float('nan'):>6.3f} {r['positives']:>4} {r['negatives']:>4}")
        rates = ", ".join(f"{k} {v:.0%}" for k, v in report["selection_rate"].items())
        typer.echo(f"selection rate at these thresholds: {rates}")
        typer.echo(f"wrote {uri}")


@app.command(help=(
    "Re-score a committed round's rows with the current judge and thresholds. "
    "Writes <workdir>/judge/rescored/round=NN.parquet (manifest schema); the round itself is never touched. "
    "Every row gets new scores and reasons; the accept decision is re-made for candidates (generated and composed) only "
    "(seeds, imports and the test split were not admitted by the judge; cycle triplets also depend on their "
    "cycle check)."))
def score(
    round: Annotated[int, typer.Option("--round", "-r", min=0, help="Committed round to re-score.")],
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    calibrated: Annotated[bool, typer.Option("--calibrated", help="Use the thresholds of the calibration file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    with user_errors():
        import pyarrow.parquet as pq

        from models.loop.bootstrap import pass_rates, rescore_rows
        from models.domains.registry import judge_of
        from storage.schema import CANDIDATE_SOURCES

        cfg, store = open_config(config, workdir)
        committed = store.read_round(round)
        thresholds = _read_thresholds(calibration_uri(cfg, store)) if calibrated else None
        judge = judge_of(cfg, thresholds)
        rescored = rescore_rows(judge, store, committed)
        buf = io.BytesIO()
        pq.write_table(rescored, buf, compression="zstd")
        path = store.loc.join("judge", "rescored", f"round={round:02d}.parquet")
        store.loc.write_atomic(path, buf.getvalue())

        rows = rescored.to_pylist()
        thresholds = {c.name: c.threshold for c in judge.criteria}
        passed = pass_rates(rows, thresholds)
        cands = [r for r in rows if r["source"] in CANDIDATE_SOURCES]
        summary = {
            "round": round, "rows": len(rows), "candidates": len(cands),
            "thresholds": thresholds,
            "pass_rate": passed,
            "passes_all": sum(all(dict(r["judge_scores"] or {}).get(n, 0.0) >= t for n, t in thresholds.items())
                              for r in rows),
            "selection_rate": sum(r["accepted"] for r in cands) / len(cands) if cands else None,
            "path": store.loc.uri(path),
        }
        if as_json:
            typer.echo(json.dumps(summary, indent=1))
            return
        typer.echo(f"round {round}: re-scored {len(rows)} rows ({len(cands)} candidates) with the {judge.kind} judge")
        w = max(16, *map(len, passed))
        for n, rate in passed.items():
            typer.echo(f"  {n:<{w}} threshold {summary['thresholds'][n]:.3f}  pass rate "
                       + ("-" if rate is None else f"{rate:.1%}"))
        sel = summary["selection_rate"]
        typer.echo(f"  all criteria pass: {summary['passes_all']}/{len(rows)} rows; selection rate "
                   + ("- (no candidates in this round)" if sel is None else f"{sel:.1%}"))
        typer.echo(f"wrote {summary['path']}")
