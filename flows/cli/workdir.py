"""Commands that read or tend a workdir: `status`, `fsck`, `review`, `override`, `report`, `export`."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.common import (
    EXIT_FAILED, ConfigOpt, SetOpt, WorkdirOpt, open_config, took_over, user_errors, with_overrides,
)

app = typer.Typer()
PANEL = "Read and tend a workdir"  # the heading of these commands in `layerboot --help`


@app.command(rich_help_panel=PANEL)
def status(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh the table until no round is running (or Ctrl-C).")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.0, help="Seconds between refreshes with --watch.")] = 2.0,
    iterations: Annotated[
        Optional[int], typer.Option("--iterations", min=1, help="With --watch: stop after this many refreshes.")
    ] = None,
) -> None:
    """One row per round: state, candidates, accepted, selection rate (and per candidate source when a
    round drew from more than one), pool size."""
    with user_errors():
        config = with_overrides(config, sets)
        from storage.status import round_status

        _, store = open_config(config, workdir, must_exist=True)
        if watch:
            _watch_status(store, interval, iterations)
            return
        rows = round_status(store)
        if as_json:
            typer.echo(json.dumps({"workdir": store.uri, "rounds": rows}, indent=1))
            return
        typer.echo(f"workdir: {store.uri}")
        if not rows:
            typer.echo("no rounds yet: run `layerboot seed` first")
            return
        print_status(rows)


def _watch_status(store, interval: float, iterations: int | None) -> None:
    """Re-draw the status table every `interval` seconds while a round is running."""
    import time
    from datetime import datetime

    from storage.status import round_status

    tty = sys.stdout.isatty()
    shown = 0
    try:
        while True:
            rows = round_status(store)
            if tty:
                typer.echo("\x1b[H\x1b[2J", nl=False)  # clear the screen: the table redraws in place
            typer.echo(f"workdir: {store.uri}   (refreshed {datetime.now():%H:%M:%S}, every {interval:g} s; Ctrl-C stops)")
            if rows:
                print_status(rows)
            else:
                typer.echo("no rounds yet")
            shown += 1
            if not any(r["state"] == "running" for r in rows):
                typer.echo("no round is running: stopped watching")
                return
            if iterations is not None and shown >= iterations:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        typer.echo("")


def print_status(rows: list[dict]) -> None:
    """The table; when some round drew candidates from more than one source, each source gets its
    own selection column beside the total ("-" in a round without it)."""
    sources = sorted({s for r in rows if len(r.get("selection_rate_by_source") or {}) > 1
                      for s in r["selection_rate_by_source"]})
    widths = [max(len(s), 6) for s in sources]
    typer.echo(f"{'round':>5}  {'state':<10} {'rows':>6} {'candidates':>10} {'accepted':>8} {'selection':>9} {'pool':>6}"
               + "".join(f"  {s:>{w}}" for s, w in zip(sources, widths)))
    for r in rows:
        rate = "-" if r["selection_rate"] is None else f"{r['selection_rate']:.1%}"
        line = (f"{r['round']:>5}  {r['state']:<10} {r['rows'] or 0:>6} {r['candidates'] or 0:>10} "
                f"{r['accepted'] or 0:>8} {rate:>9} {r['pool_size'] or 0:>6}")
        by_source = r.get("selection_rate_by_source") or {}
        line += "".join(f"  {f'{by_source[s]:.1%}' if s in by_source else '-':>{w}}" for s, w in zip(sources, widths))
        if r["state"] != "committed":
            line += f"   stage: {r['stage'] or '-'}" + (f"   error: {r['error']}" if r["error"] else "")
        typer.echo(line)


@app.command(rich_help_panel=PANEL)
def fsck(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    repair: Annotated[bool, typer.Option("--repair", help="Move what no manifest needs (orphan blobs, temp files, "
                                         "unfinished commits) to <workdir>/quarantine/, holding the workdir lock.")] = False,
    purge: Annotated[bool, typer.Option("--purge", help="Delete <workdir>/quarantine/ (what --repair set aside).")] = False,
    remark: Annotated[Optional[int], typer.Option("--remark", min=0, help="Give an unmarked round its commit marker "
                                                  "back, after checking its manifest against metrics/rounds.parquet.")] = None,
    quarantine_round: Annotated[Optional[int], typer.Option("--quarantine-round", min=0,
                                                            help="Move an unmarked round's folder to quarantine.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    sample: Annotated[Optional[int], typer.Option("--sample", min=1, help="Re-hash only this many referenced blobs, "
                                                  "chosen at random (every blob is still checked to be there): a "
                                                  "full re-hash reads every blob, hours for millions of them.")] = None,
    sample_seed: Annotated[Optional[int], typer.Option("--sample-seed", min=0, help="With --sample: the seed that "
                                                       "chooses the blobs (printed by a run, to repeat it).")] = None,
) -> None:
    """Check the workdir: every committed round's marker against its manifest, every row's blobs
    present and hashing right (or a random --sample of them re-hashed), committed adapters, the
    unlabeled bank, the latent cache and work
    status files; report unmarked rounds, orphan blobs, leftover temp files and
    unfinished commits by name. Exit 0 clean (or all repaired), 1 problems left, 2 bad usage or a
    refused action (a workdir that does not exist, or locked by a run)."""
    with user_errors():
        from storage import fsck as checks

        actions = [a for a, on in (("--repair", repair), ("--purge", purge), ("--remark", remark is not None),
                                   ("--quarantine-round", quarantine_round is not None)) if on]
        if len(actions) > 1:
            raise typer.BadParameter(f"give one of {', '.join(actions)} at a time")
        _, store = open_config(config, workdir, must_exist=True)
        if purge:
            batches = checks.purge(store, on_takeover=took_over)
            typer.echo(f"purged {len(batches)} quarantine batch(es)" + "".join(f"\n  {b}" for b in batches))
            return
        if remark is not None:
            marker = checks.remark(store, remark, on_takeover=took_over)
            typer.echo(f"round {remark}: commit marker restored ({marker['rows']} rows, manifest {marker['file']}, "
                       "checked against metrics/rounds.parquet)")
            return
        if quarantine_round is not None:
            batch = checks.quarantine_round(store, quarantine_round, on_takeover=took_over)
            typer.echo(f"round {quarantine_round}: moved to {batch}/ (record: {batch}.json)")
            return
        report = checks.fsck(store, repair=repair, on_takeover=took_over, sample=sample, seed=sample_seed)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1))
    else:
        _print_fsck(report, repair)
    if report.unrepaired:
        raise typer.Exit(EXIT_FAILED)


def _print_fsck(report, repair: bool) -> None:
    typer.echo(f"workdir: {report.workdir}")
    hashed = (f"{report.blobs_checked} blobs" if report.sample_seed is None else
              f"{report.blobs_referenced} blobs referenced (each looked for), {report.blobs_checked} re-hashed (a sample, "
              f"--sample-seed {report.sample_seed})")
    typer.echo(f"checked {len(report.rounds)} committed round(s), {report.rows} rows, {hashed}, "
               f"{report.adapters_checked} adapter(s), {report.bank_rows} unlabeled row(s), "
               f"{report.cache_entries} latent-cache entries"
               + (f"; {report.kept_for_work} blob(s) kept for unfinished rounds" if report.kept_for_work else ""))
    for what in report.unchecked:
        typer.echo(f"{'unchecked':<16} {what}")
    if report.lock:
        typer.echo(f"locked by `{report.lock['command']}` on host {report.lock['host']}, pid {report.lock['pid']}, "
                   f"started {report.lock['started_at']}")
    removed = set(report.repaired)
    for f in report.findings:
        typer.echo(f"{'quarantined' if f.path in removed else f.kind:<16} {f.path}  ({f.detail})")
    if report.clean:
        typer.echo("clean")
        return
    left = report.unrepaired
    fixable = sum(f.repairable for f in left)
    summary = ", ".join(f"{n} {k}" for k, n in report.counts().items())
    typer.echo(f"{len(report.findings)} problem(s): {summary}"
               + (f"; moved {len(removed)} to {report.quarantine}/ (`layerboot fsck --purge` deletes it)"
                  if removed else "; moved nothing" if repair else "")
               + (f"; {fixable} removable with `layerboot fsck --repair`" if fixable else "")
               + (f"; {len(left) - fixable} cannot be repaired here" if len(left) - fixable else ""))


@app.command(rich_help_panel=PANEL)
def review(
    round: Annotated[int, typer.Option("--round", "-r", min=0, help="Committed round to show.")],
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="PNG to write (default: <workdir>/review/round=NN.png).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Triplets on the sheet.")] = 16,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "train",
) -> None:
    """Write a contact sheet (the three panels side by side) of a round's accepted triplets (after overrides)."""
    with user_errors():
        from models.loop.viz import contact_sheet
        from storage.images import encode_png

        from storage.overrides import effective_accepted, in_effect, load_overrides
        from storage.schema import panel_uris

        _, store = open_config(config, workdir, must_exist=True)
        import pyarrow.compute as pc

        table = store.read_round(round)
        accepted = effective_accepted(table, in_effect(load_overrides(store.loc)))  # overrides count
        rows = table.filter(pc.and_(accepted, pc.equal(table["split"], split))).slice(0, n).to_pylist()
        if not rows:
            raise FileNotFoundError(f"round {round} has no accepted {split} triplets")
        panels = [tuple(store.read_image(key) for key in panel_uris(r)) for r in rows]
        sheet = contact_sheet(panels, [r["prompt"] for r in rows])
        data = encode_png(sheet)
        if out is None:
            store.loc.write_atomic(store.loc.join("review", f"round={round:02d}.png"), data)
            target = store.loc.uri(store.loc.join("review", f"round={round:02d}.png"))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            target = str(out)
        typer.echo(f"wrote {target} ({len(rows)} triplets)")


@app.command(rich_help_panel=PANEL)
def override(
    triplet_id: Annotated[str, typer.Argument(help="The triplet's id (manifest column triplet_id).")],
    reason: Annotated[str, typer.Option("--reason", help="Why: kept with the record and shown in the report.")],
    accept: Annotated[bool, typer.Option("--accept", help="Put the triplet into the training pool.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Take the triplet out of the training pool.")] = False,
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
) -> None:
    """Record an operator's accept or reject of a committed training triplet (who, when, why).
    Manifests stay as committed; the next pool build (the next round's training) honours it."""
    with user_errors():
        from storage.overrides import record_override

        if accept == reject:
            raise typer.BadParameter("give exactly one of --accept or --reject")
        _, store = open_config(config, workdir, must_exist=True)
        o = record_override(store, triplet_id, "accept" if accept else "reject", reason)
        typer.echo(f"recorded: {o.action} {o.triplet_id} (round {o.round}) by {o.who} at {o.when:%Y-%m-%d %H:%M:%S} UTC")
        last = store.committed_rounds()[-1]
        typer.echo(f"training pool after round {last}: {store.pool(last).num_rows} triplets (the next round trains on it)")


@app.command(rich_help_panel=PANEL)
def report(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    out: Annotated[str, typer.Option("--out", help="HTML file to write (path or fsspec URI).")] = "report.html",
    per_round: Annotated[int, typer.Option("--per-round", min=0, help="Gallery: accepted and rejected triplets shown per round (each).")] = 12,
) -> None:
    """Write one self-contained HTML report of a run (charts, rounds table, overrides, gallery);
    it opens offline. Reads the workdir only."""
    with user_errors():
        from flows.report import write_report

        from storage.fs import Location

        cfg, store = open_config(config, workdir, must_exist=True)
        target = Location.parse(out)
        if target.exists(target.root) and target.fs.isdir(target.root):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), out)
        info = write_report(store, out, thresholds={c.name: c.threshold for c in cfg.judge.criteria}, per_round=per_round)
        typer.echo(f"wrote {info.path}: {info.bytes / 1e6:.1f} MB, {info.rounds} rounds, {info.charts} charts, "
                   f"{info.thumbnails} triplets in the gallery")


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """Bytes from `500MB`, `64MiB`, `1GB` or a plain number."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else None
    if m is None or unit not in _SIZE_UNITS or float(m.group(1)) * _SIZE_UNITS[unit] < 1:
        raise typer.BadParameter(f"--shard-size {text!r}: give a size such as 500MB, 64MiB or 1GB")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


@app.command(rich_help_panel=PANEL)
def export(
    round: Annotated[int, typer.Option("--round", "-r", min=0, help="Committed round: its training pool (after "
                                       "overrides) is what round R+1 trains on.")],
    out: Annotated[str, typer.Option("--out", help="Folder to write (path or fsspec URI, s3://bucket/dataset); "
                                     "absent or empty, or an earlier try of the same export.")],
    fmt: Annotated[str, typer.Option("--format", help="hf: Parquet shards with datasets' Image feature; "
                                     "webdataset: tar shards of <id>.<panel>.png and <id>.json.")] = "hf",
    split: Annotated[str, typer.Option("--split", help="train (the pool), test (held out) or all.")] = "train",
    include_rejected: Annotated[bool, typer.Option("--include-rejected", help="Add a `rejected` split: training "
                                                   "rows not in the pool, with their reasons.")] = False,
    shard_size: Annotated[str, typer.Option("--shard-size", help="Close a shard once its file reaches this size "
                                            "(500MB, 64MiB, ...).")] = "500MB",
    dedup: Annotated[bool, typer.Option("--dedup", help="Drop training rows whose composite is a near-copy of an "
                                        "earlier row's (perceptual hash at most 4 of 64 bits apart); the card "
                                        "counts them.")] = False,
    license: Annotated[str, typer.Option("--license", help="The dataset's licence for the card (an SPDX-style id "
                                         "as the Hub uses: cc-by-4.0, mit, other, ...).")] = "unknown",
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
) -> None:
    """Export a round's dataset for Hugging Face `datasets` or WebDataset, with a dataset card
    (README.md: counts, judge per round, base and adapters, round digests, licence). Images are the
    blobs' bytes, hash-checked; the same export writes the same files. Reads the workdir only."""
    with user_errors():
        config = with_overrides(config, sets)
        from configs import config_hash
        from storage.export import ExportOptions, RunFacts, export as export_dataset, plan_export

        if fmt not in ("hf", "webdataset"):
            raise typer.BadParameter(f"--format {fmt!r}: give hf or webdataset")
        if split not in ("train", "test", "all"):
            raise typer.BadParameter(f"--split {split!r}: give train, test or all")
        cfg, store = open_config(config, workdir, must_exist=True)
        judge = cfg.judge.kind + (f" ({cfg.judge.model})" if cfg.judge.kind == "qwen" else "")
        facts = RunFacts(domain=cfg.domain, base=cfg.model.base, judge=judge, config_hash=config_hash(cfg))
        options = ExportOptions(round=round, format=fmt, split=split, include_rejected=include_rejected,
                                shard_bytes=parse_size(shard_size), dedup=dedup, license=license)
        result = export_dataset(store, out, plan_export(store, options, facts))
        for s in result.splits:
            typer.echo(f"{s.name}: {s.rows} rows in {len(s.shards)} shard(s), {s.bytes / 1e6:.1f} MB"
                       + (f"; {s.dropped} near-copies dropped" if s.dropped else ""))
        typer.echo(f"wrote {result.out} (card: {result.card})")
