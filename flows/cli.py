"""`layerboot` command line. Each command is a few lines that call flows, models or storage.

User and environment errors (bad config, bad input, refused store operations, a workdir that is
a file, read-only, not permitted or full, object-store credentials) print one line and exit 2;
a refused command writes nothing. `layerboot --debug ...` (or LAYERBOOT_DEBUG=1) shows the full
traceback instead. Heavy imports happen inside commands so `--help` stays fast.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from flows.cli_common import (
    _DEBUG, ConfigOpt, SetOpt, WorkdirOpt, _debugging, _open, _with_overrides, user_errors,
)
from flows.cli_judge import judge_app

app = typer.Typer(
    help="Self-improving data bootstrapping for layered image decomposition "
    "(composite -> logo + object) with a FLUX.1-Fill IC-LoRA and a Qwen-VL judge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error (or set "
                                              "LAYERBOOT_DEBUG=1).")] = False) -> None:
    _DEBUG["on"] = debug


def _refuse_unmarked(store) -> None:
    """A command that commits rounds must not run past a round whose marker was lost."""
    from storage.store import StoreError

    if unmarked := store.unmarked_rounds():
        raise StoreError(f"round(s) {unmarked} in {store.uri} hold a manifest without a commit marker; "
                         "`layerboot fsck` says how to re-mark them before rounds are run")


@app.command()
def seed(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, max=100_000,
                                             help="Seed triplets (default: data.n_seeds).")] = None,
    n_test: Annotated[Optional[int], typer.Option("--n-test", min=0, max=100_000,
                                                  help="Held-out test triplets (default: data.n_test).")] = None,
    from_dir: Annotated[
        Optional[Path], typer.Option("--from-dir", help="Import your own triplets: DIR/<name>/{composite,logo,object}.png")
    ] = None,
) -> None:
    """Write round 0: seed triplets (procedural, or imported with --from-dir) and the held-out test split."""
    with user_errors():
        config = _with_overrides(config, sets)
        from models.seeding import commit_seeds

        cfg, store = _open(config, workdir)
        n_seeds = cfg.data.n_seeds if n is None else n
        n_held = cfg.data.n_test if n_test is None else n_test
        with _workdir_lock(store, "layerboot seed"):  # it writes blobs: never during `fsck --repair` or a run
            _refuse_unmarked(store)
            with store.blobs.rollback_on_error():  # refused (e.g. round 0 committed otherwise): blobs removed
                info = commit_seeds(store, cfg, n_seeds, n_held, str(from_dir) if from_dir else None)
        if info.noop:
            typer.echo(f"round 0 already committed in {store.uri} with identical content: nothing to do")
        else:
            typer.echo(f"committed round 0 in {store.uri}: {info.rows} triplets (digest {info.content_digest[:12]})")


@app.command("add-unlabeled")
def add_unlabeled(
    directory: Annotated[Path, typer.Argument(help="A folder of plain composites (product photos without their layers).")],
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
) -> None:
    """Import composites without layers for the cycle stage (paper stage (c)): each round decomposes
    `bootstrap.unlabeled_per_round` of them, re-composes, and keeps the consistent ones as triplets.
    Every image is validated first (square, data.panel_size pixels; an optional NAME.txt describes
    NAME.png); bad files are named and nothing is imported."""
    with user_errors():
        from storage.imports import read_image_dir
        from storage.unlabeled import add_unlabeled as add

        cfg, store = _open(config, workdir)
        images = read_image_dir(directory, cfg.data.panel_size)  # all validated before anything is written
        with _workdir_lock(store, "layerboot add-unlabeled"):
            added = add(store, images)
        typer.echo(f"added {added.added} composite(s) without layers to {store.uri} "
                   f"({added.already} already there; {added.total} in all)")


@app.command()
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
    """One row per round: state, candidates, accepted, selection rate, pool size."""
    with user_errors():
        config = _with_overrides(config, sets)
        from storage.status import round_status

        _, store = _open(config, workdir, must_exist=True)
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
        _print_status(rows)


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
                _print_status(rows)
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


def _print_status(rows: list[dict]) -> None:
    typer.echo(f"{'round':>5}  {'state':<10} {'rows':>6} {'candidates':>10} {'accepted':>8} {'selection':>9} {'pool':>6}")
    for r in rows:
        rate = "-" if r["selection_rate"] is None else f"{r['selection_rate']:.1%}"
        line = (f"{r['round']:>5}  {r['state']:<10} {r['rows'] or 0:>6} {r['candidates'] or 0:>10} "
                f"{r['accepted'] or 0:>8} {rate:>9} {r['pool_size'] or 0:>6}")
        if r["state"] != "committed":
            line += f"   stage: {r['stage'] or '-'}" + (f"   error: {r['error']}" if r["error"] else "")
        typer.echo(line)


def _prefect_env(store) -> None:
    """Ephemeral Prefect (SQLite) keeps its state under the workdir, unless the user points
    PREFECT_API_URL at a server. Must run before prefect is imported."""
    import os

    if os.environ.get("PREFECT_API_URL"):
        return
    home = Path(store.loc.root) / ".prefect" if store.loc.is_local else Path.home() / ".layerboot" / "prefect"
    home.mkdir(parents=True, exist_ok=True)  # SQLite will not create the folder of its database
    os.environ.setdefault("PREFECT_HOME", str(home))
    # a fresh database takes ~26 s to migrate on 2 cores; Prefect's default allows 20
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # the ephemeral server's analytics write races its own startup on SQLite and prints a 60-line
    # "database is locked" traceback on a healthy run; a local throwaway server has nothing to report
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _prefect_logging() -> None:
    """Our stages log to the `layerboot` logger (shards kept/finished); let Prefect show those
    lines in the console and the UI beside its own."""
    import os

    extra = os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "")
    if "layerboot" not in extra.split(","):
        os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(filter(None, [extra, "layerboot"]))


EXIT_FAILED = 1


@contextmanager
def _workdir_lock(store, command: str) -> Iterator:
    """Hold the workdir lock (storage/lock.py) for a command that writes rounds: a second one on
    the same workdir is refused naming the holder; a stale lock of a dead process is taken over."""
    from storage.lock import WorkdirLock

    def took_over(holder, reason: str) -> None:
        typer.echo(f"taking over the lock of {holder.describe()}: {reason}", err=True)

    with WorkdirLock(store.loc, command, on_takeover=took_over) as lock:
        yield lock


def _stop_children(grace_s: float = 3.0) -> None:
    """Stop the processes this one started (the ephemeral Prefect server, Dask workers): SIGTERM,
    then SIGKILL for those still there after `grace_s`."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=2.0)


@contextmanager
def _stop_on_signals(store, held: dict) -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM stop `run`/`resume` within seconds: the rounds this process
    runs are recorded as "interrupted" (in the stage they were in), nothing more is logged (the
    Prefect API may be gone already), child processes are stopped, the workdir lock (`held["lock"]`)
    is released and the process exits 130 / 143. What is on disk is then exactly what a kill leaves,
    so `resume` continues from the finished work. The flow runs in a worker thread (see
    _run_flow), so the main thread is always free to take the signal."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:  # noqa: ARG001
        from storage.work import mark_interrupted

        name = signal.Signals(signum).name
        logging.disable(logging.CRITICAL)
        try:
            rounds = mark_interrupted(store, f"interrupted by {name}")
        except Exception:  # noqa: BLE001 - stopping matters more than the record
            rounds = []
        _stop_children()
        if held.get("lock") is not None:
            held["lock"].release()
        where = f"round {', '.join(map(str, rounds))} recorded as interrupted; " if rounds else ""
        typer.echo(f"\n{name}: stopped. {where}`layerboot resume` continues from the finished work", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    held["arm"] = lambda: [signal.signal(sig, stop) for sig in previous]  # again, after imports that may set theirs
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_flow(config: str, store, rounds: int | None, runner: str = "threads", dask_address: str | None = None,
              held: dict | None = None) -> None:
    """Run the bootstrap flow (the caller holds the workdir lock) in a worker thread: the main
    thread only waits, so it handles SIGINT/SIGTERM at once (_stop_on_signals) and Prefect never
    installs its own SIGTERM handler (it does so only in the main thread)."""
    import threading

    from configs import resolve_config_path
    from storage.status import round_status

    _prefect_env(store)
    _prefect_logging()
    from flows.bootstrap import bootstrap_flow  # (configures logging: our level must be set after it)

    logging.getLogger("layerboot").setLevel(logging.INFO)

    config_path = str(resolve_config_path(config).resolve())
    outcome: dict = {}

    def body() -> None:
        try:
            bootstrap_flow(config=config_path, workdir=store.uri, rounds=rounds, task_runner=runner,
                           dask_address=dask_address)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    if held and "arm" in held:
        held["arm"]()
    worker = threading.Thread(target=body, name="layerboot-flow", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.25)
    exc = outcome.get("error")
    if isinstance(exc, Exception):  # the store says where it stopped; the traceback is in Prefect's logs
        if _debugging():
            raise exc
        failed = [r for r in round_status(store) if r["state"] in ("failed", "running")]
        where = f"round {failed[0]['round']} failed in stage {failed[0]['stage']}: " if failed else ""
        typer.echo(f"error: {where}{type(exc).__name__}: {exc}", err=True)
        typer.echo("fix the cause, then `layerboot resume` continues from the finished work", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if exc is not None:
        raise exc
    typer.echo(f"workdir: {store.uri}")
    _print_status(round_status(store))


RoundsOpt = Annotated[Optional[int], typer.Option("--rounds", min=1, help="Rounds to reach (default: bootstrap.rounds).")]


class TaskRunner(str, Enum):
    threads = "threads"
    dask = "dask"


RunnerOpt = Annotated[Optional[TaskRunner], typer.Option(
    "--task-runner",
    help="Where the round's tasks run: a thread pool in this process (run's default), or Dask worker processes "
    "(a 2-worker LocalCluster, or the cluster at --dask-address). resume: the interrupted run's.")]
DaskAddressOpt = Annotated[Optional[str], typer.Option(
    "--dask-address", help="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786.")]


def _check_can_run(cfg, store) -> None:
    """Refusals that must come before anything is written or Prefect starts."""
    from configs import ConfigError, local_base_problem

    if (problem := local_base_problem(cfg.model.base)) is not None:
        raise ConfigError(problem)
    _refuse_unmarked(store)


@app.command()
def run(config: ConfigOpt = "configs/tiny.yaml", sets: SetOpt = None, workdir: WorkdirOpt = None,
        rounds: RoundsOpt = None, task_runner: RunnerOpt = None, dask_address: DaskAddressOpt = None) -> None:
    """Run the bootstrap loop as a Prefect flow: seed, then train / generate / judge / cycle /
    evaluate / commit for each round. Exit 0 done, 1 failed, 2 bad usage or input, 130/143 stopped
    by SIGINT/SIGTERM (`resume` continues)."""
    with user_errors():
        from configs import config_hash
        from storage.target import write_target

        config = _with_overrides(config, sets)
        cfg, store = _open(config, workdir)
        _check_can_run(cfg, store)
        runner = (task_runner or TaskRunner.threads).value
        held: dict = {}
        with _stop_on_signals(store, held), _workdir_lock(store, "layerboot run") as held["lock"]:
            # (before Prefect starts: a refusal costs nothing)
            target = rounds or cfg.bootstrap.rounds
            write_target(store, target, config_hash(cfg), runner, dask_address, "layerboot run")
            _run_flow(config, store, target, runner, dask_address, held)


@app.command()
def resume(config: ConfigOpt = "configs/tiny.yaml", sets: SetOpt = None, workdir: WorkdirOpt = None,
           rounds: RoundsOpt = None, task_runner: RunnerOpt = None, dask_address: DaskAddressOpt = None) -> None:
    """Continue after a crash, failure or interruption: committed rounds and finished shards are
    kept, the rest runs, up to the interrupted run's target (its --rounds); --rounds N extends it."""
    with user_errors():
        config = _with_overrides(config, sets)
        from configs import ConfigError, config_hash
        from storage.status import round_status
        from storage.target import read_target, write_target
        from storage.work import SHARDED, RoundWork, tidy_committed

        cfg, store = _open(config, workdir, must_exist=True)
        _check_can_run(cfg, store)
        held: dict = {}
        with _stop_on_signals(store, held), _workdir_lock(store, "layerboot resume") as held["lock"]:
            recorded = read_target(store)
            if recorded is not None and recorded["config_hash"] != config_hash(cfg):
                raise ConfigError(f"{config}: not the config the run started with (config hash {config_hash(cfg)}, the "
                                  f"run's {recorded['config_hash']}); resume with that config, or start a new workdir")
            runner = (task_runner.value if task_runner else (recorded or {}).get("runner")) or "threads"
            address = dask_address or (recorded or {}).get("dask_address") if runner == "dask" else None
            if rounds is not None:
                target = rounds
                if recorded is not None and rounds != recorded["rounds"]:
                    typer.echo(f"target: {rounds} rounds (--rounds; the run started with {recorded['rounds']})")
                write_target(store, target, config_hash(cfg), runner, address, "layerboot resume --rounds")
            elif recorded is not None:
                target = recorded["rounds"]
                typer.echo(f"target: {target} rounds, as `{recorded['command']}` set at {recorded['started_at']} "
                           f"(runner {runner}); `layerboot resume --rounds N` extends it")
            else:
                target = cfg.bootstrap.rounds
                typer.echo(f"target: {target} rounds (bootstrap.rounds: no run target recorded in this workdir)")
            committed = set(store.committed_rounds())
            if set(range(target + 1)) <= committed:
                tidy_committed(store)  # a kill right after the last commit left its metrics row and work folder
                typer.echo(f"all {target} rounds of the target are committed: nothing to do")
                return
            for r in round_status(store):
                if r["state"] == "committed":
                    typer.echo(f"round {r['round']}: committed, skipping")
                    continue
                if r["state"] in ("damaged", "unmarked"):
                    continue
                work = RoundWork(store, r["round"])
                done = {s: work.done_shards(s) for s in SHARDED}
                finished = [k for k in ("train", "evaluate") if work.read_result(k) is not None]
                typer.echo(f"round {r['round']}: {r['state']} in stage {r['stage'] or '-'}; keeping "
                           f"{', '.join(finished) or 'no stage results'} and shards "
                           + ", ".join(f"{k} {v}" for k, v in done.items() if v))
            _run_flow(config, store, target, runner, address, held)


@app.command()
def ablate(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: Annotated[str, typer.Option("--workdir", "-w", help="Root of the four runs (one folder each).")] = "runs/ablation",
    rounds: RoundsOpt = None,
    variant: Annotated[Optional[list[str]], typer.Option(
        "--variant", help="Run only these (default: seeds_only, no_cycle_loss, no_cycle_stage, full).")] = None,
) -> None:
    """The paper's ablation: the bootstrap flow under four configs (seeds only; no cycle loss; no
    cycle stage; full), then one table: selection rate per round, training pool, held-out PSNR.
    Re-running skips committed rounds, like `run`."""
    with user_errors():
        from configs import resolve_config_path
        from storage.store import Store

        _open(config, None)  # validate the base config before anything starts
        chosen = tuple(variant or ())
        store = Store(workdir)
        _prefect_env(store)
        _prefect_logging()
        from flows.ablation import VARIANTS, ablation_flow, markdown_table

        unknown = set(chosen) - set(VARIANTS)
        if unknown:
            raise typer.BadParameter(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
        logging.getLogger("layerboot").setLevel(logging.INFO)
        table = ablation_flow(config=str(resolve_config_path(config).resolve()), workdir=store.uri, rounds=rounds,
                              variants=chosen or tuple(VARIANTS))
        typer.echo(markdown_table(table))


@app.command()
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
) -> None:
    """Check the workdir: every committed round's marker against its manifest, every row's blobs
    present and hashing right; report unmarked rounds, orphan blobs, leftover temp files and
    unfinished commits by name. Exit 0 clean (or all repaired), 1 problems left, 2 bad usage or a
    refused action (a workdir that does not exist, or locked by a run)."""
    with user_errors():
        from storage import fsck as checks

        actions = [a for a, on in (("--repair", repair), ("--purge", purge), ("--remark", remark is not None),
                                   ("--quarantine-round", quarantine_round is not None)) if on]
        if len(actions) > 1:
            raise typer.BadParameter(f"give one of {', '.join(actions)} at a time")
        _, store = _open(config, workdir, must_exist=True)

        def took_over(holder, reason: str) -> None:
            typer.echo(f"taking over the lock of {holder.describe()}: {reason}", err=True)

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
        report = checks.fsck(store, repair=repair, on_takeover=took_over)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=1))
    else:
        _print_fsck(report, repair)
    if report.unrepaired:
        raise typer.Exit(EXIT_FAILED)


def _print_fsck(report, repair: bool) -> None:
    typer.echo(f"workdir: {report.workdir}")
    typer.echo(f"checked {len(report.rounds)} committed round(s), {report.rows} rows, {report.blobs_checked} blobs"
               + (f"; {report.kept_for_work} blob(s) kept for unfinished rounds" if report.kept_for_work else ""))
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


@app.command()
def deploy(
    pool: Annotated[str, typer.Option("--pool", help="Prefect work pool the GPU workers poll.")],
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Deployment name (default: the run name).")] = None,
    cron: Annotated[Optional[str], typer.Option("--cron", help="Schedule, e.g. '0 2 * * *'.")] = None,
    rounds: RoundsOpt = None,
) -> None:
    """Create (or update) a Prefect deployment of the bootstrap flow for a work pool. Needs a
    Prefect server (PREFECT_API_URL); run a worker with `prefect worker start --pool POOL`."""
    with user_errors():
        import os

        from configs import resolve_config_path

        if not os.environ.get("PREFECT_API_URL"):
            raise typer.BadParameter("set PREFECT_API_URL to your Prefect server first (deployments live there)")
        cfg, store = _open(config, workdir)
        from flows.bootstrap import bootstrap_flow
        from models.runtime import REPO_ROOT

        params = {"config": str(resolve_config_path(config).resolve()), "workdir": store.uri, "rounds": rounds}
        deployment_id = bootstrap_flow.from_source(
            source=str(REPO_ROOT), entrypoint="flows/bootstrap.py:bootstrap_flow"
        ).deploy(name=name or cfg.run.name, work_pool_name=pool, cron=cron, parameters=params, print_next_steps=False)
        typer.echo(f"deployment layerboot-bootstrap/{name or cfg.run.name} ({deployment_id}) on pool {pool!r}")
        typer.echo(f"start a worker: prefect worker start --pool {pool}")
        typer.echo(f"run it now:     prefect deployment run 'layerboot-bootstrap/{name or cfg.run.name}'")


@app.command()
def review(
    round: Annotated[int, typer.Option("--round", "-r", min=0, help="Committed round to show.")],
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="PNG to write (default: <workdir>/review/round=NN.png).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Triplets on the sheet.")] = 16,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "train",
) -> None:
    """Write a contact sheet (composite | logo | object) of a round's accepted triplets (after overrides)."""
    with user_errors():
        from models.viz import contact_sheet
        from storage.images import encode_png

        from storage.overrides import effective_accepted, in_effect, load_overrides

        _, store = _open(config, workdir, must_exist=True)
        table = store.read_round(round)
        accepted = effective_accepted(table, in_effect(load_overrides(store.loc))).to_pylist()  # overrides count
        rows = [r for r, ok in zip(table.to_pylist(), accepted) if ok and r["split"] == split][:n]
        if not rows:
            raise FileNotFoundError(f"round {round} has no accepted {split} triplets")
        panels = [tuple(store.read_image(r[f"{p}_uri"]) for p in ("composite", "logo", "object")) for r in rows]
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


@app.command()
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
        _, store = _open(config, workdir, must_exist=True)
        o = record_override(store, triplet_id, "accept" if accept else "reject", reason)
        typer.echo(f"recorded: {o.action} {o.triplet_id} (round {o.round}) by {o.who} at {o.when:%Y-%m-%d %H:%M:%S} UTC")
        last = store.committed_rounds()[-1]
        typer.echo(f"training pool after round {last}: {store.pool(last).num_rows} triplets (the next round trains on it)")


@app.command()
def report(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    out: Annotated[str, typer.Option("--out", help="HTML file to write (path or fsspec URI).")] = "report.html",
    per_round: Annotated[int, typer.Option("--per-round", min=0, help="Gallery: accepted and rejected triplets shown per round (each).")] = 12,
) -> None:
    """Write one self-contained HTML report of a run (charts, rounds table, overrides, gallery);
    it opens offline. Reads the workdir only."""
    with user_errors():
        from storage.report import write_report

        from storage.fs import Location

        cfg, store = _open(config, workdir, must_exist=True)
        target = Location.parse(out)
        if target.exists(target.root) and target.fs.isdir(target.root):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), out)
        info = write_report(store, out, thresholds={c.name: c.threshold for c in cfg.judge.criteria}, per_round=per_round)
        typer.echo(f"wrote {info.path}: {info.bytes / 1e6:.1f} MB, {info.rounds} rounds, {info.charts} charts, "
                   f"{info.thumbnails} triplets in the gallery")


def _backbone_with_adapter(cfg, adapter: Path | None):
    """The config's frozen base, plus an adapter (or, without one, a fresh LoRA: the untrained model)."""
    from models.backbone import add_lora, load_adapter
    from models.runtime import load_base

    backbone = load_base(cfg)
    if adapter is None:
        add_lora(backbone.transformer, cfg.lora.rank, cfg.lora.alpha, extra_trainable=tuple(cfg.lora.extra_trainable))
    else:
        load_adapter(backbone, adapter)
    backbone.transformer.eval()
    return backbone


def _read_images(paths, size: int):
    from storage.images import decode_image

    return [decode_image(Path(p).read_bytes(), str(p), size=size) for p in paths]


AdapterOpt = Annotated[Optional[Path], typer.Option("--adapter", help="Adapter folder (safetensors, diffusers LoRA format).")]


@app.command()
def train(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Training steps (default: train.steps).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Adapter folder to write (resumes a half-done run there).")] = Path("adapter"),
    warm_start: AdapterOpt = None,
) -> None:
    """Train an IC-LoRA adapter on the current pool (all committed rounds)."""
    with user_errors():
        config = _with_overrides(config, sets)
        from models.runtime import load_base
        from models.stages import train_on_pool

        cfg, store = _open(config, workdir, must_exist=True)
        rounds = store.committed_rounds()
        if not rounds:
            raise FileNotFoundError(f"no committed rounds in {store.uri}: run `layerboot seed` first")
        result, pool = train_on_pool(load_base(cfg), cfg, store, rounds[-1], out, warm_start=warm_start, steps=steps,
                                     seed=cfg.run.seed)
        if result.reused:
            typer.echo(f"{out} already holds this adapter (same config, pool and steps): nothing to do")
        else:
            typer.echo(f"wrote {out}: {result.steps} steps on {len(pool)} triplets in {result.seconds:.0f} s "
                       f"(L_rec {result.final_rec:.4f})")


@app.command()
def evaluate(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    adapter: AdapterOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Test triplets to use (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    figure: Annotated[Optional[Path], typer.Option("--figure", help="Also write a PNG: truth beside prediction.")] = None,
) -> None:
    """Decomposition quality on the held-out test split: model vs trivial baseline (raw and through
    the codec) vs codec ceiling.
    Without --adapter, evaluates the untrained base."""
    with user_errors():
        config = _with_overrides(config, sets)
        from models.dataio import read_triplets
        from models.evaluate import decomposition_sheet, evaluate_decomposition
        from models.sample import Sampler
        from storage.hashing import derive_seed

        cfg, store = _open(config, workdir, must_exist=True)
        test = read_triplets(store, store.test_split(), footprint=True)[:n]
        if not test:
            raise FileNotFoundError(f"no test split in {store.uri}: run `layerboot seed` first")
        sampler = Sampler(_backbone_with_adapter(cfg, adapter), cfg)
        predicted: list = []
        seeds = [derive_seed(cfg.run.seed, "eval", t["triplet_id"]) for t in test]
        result = evaluate_decomposition(sampler, test, seeds, predicted)
        if figure:
            figure.parent.mkdir(parents=True, exist_ok=True)
            decomposition_sheet(test, predicted).save(figure)
        if as_json:
            typer.echo(json.dumps(result, indent=1))
            return
        typer.echo(f"{result['n']} held-out composites, adapter: {adapter or '(untrained)'}")
        typer.echo(f"{'':<15}" + "".join(f"{k:>23}" for k in result["model"]))
        for who in ("model", "baseline", "baseline_codec", "codec"):
            typer.echo(f"{who:<15}" + "".join(f"{v:>23}" for v in result[who].values()))


@app.command()
def decompose(
    images: Annotated[list[Path], typer.Argument(help="Composite images (panel_size square).")],
    adapter: Annotated[Path, typer.Option("--adapter", help="Adapter folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for <name>_logo.png and <name>_object.png.")],
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Split composites into a flat logo and the plain object."""
    with user_errors():
        config = _with_overrides(config, sets)
        from configs import load_config
        from models.sample import Sampler
        from storage.hashing import derive_seed

        cfg = load_config(config)
        composites = _read_images(images, cfg.data.panel_size)
        sampler = Sampler(_backbone_with_adapter(cfg, adapter), cfg)
        results = sampler.decompose(composites, [derive_seed(seed, p.name) for p in images])
        out.mkdir(parents=True, exist_ok=True)
        for path, (logo, obj) in zip(images, results):
            logo.save(out / f"{path.stem}_logo.png")
            obj.save(out / f"{path.stem}_object.png")
        typer.echo(f"wrote {2 * len(results)} images to {out}")


@app.command()
def compose(
    logo: Annotated[Path, typer.Option("--logo", help="Flat logo image.")],
    object_: Annotated[Path, typer.Option("--object", help="Plain object image.")],
    adapter: Annotated[Path, typer.Option("--adapter", help="Adapter folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for composite.png.")],
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Put a logo onto an object: the composite."""
    with user_errors():
        config = _with_overrides(config, sets)
        from configs import load_config
        from models.sample import Sampler

        cfg = load_config(config)
        logo_img, object_img = _read_images([logo, object_], cfg.data.panel_size)
        composite = Sampler(_backbone_with_adapter(cfg, adapter), cfg).compose([logo_img], [object_img], [seed])[0]
        out.mkdir(parents=True, exist_ok=True)
        composite.save(out / "composite.png")
        typer.echo(f"wrote {out / 'composite.png'}")


@app.command("pretrain-tiny")
def pretrain_tiny(
    out: Annotated[Path, typer.Option("--out", help="Where to write the base (diffusers layout).")] = Path("models/tiny_base"),
    stage: Annotated[list[str], typer.Option(
        "--stage", help="encoder, decoder and/or transformer (default: all, in that order). decoder and "
        "transformer need only the encoder: run them in two processes to use two machines' worth of cores.")
    ] = ["encoder", "decoder", "transformer"],
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads.")] = 2,
) -> None:
    """Pretrain the tiny profile's base: the codec (a PCA encoder, then its decoder) and the Fill
    transformer, on single images and generic in-context families of the procedural world, never
    on a (composite, logo, object) triplet; writes safetensors + RECIPE.json."""
    with user_errors():
        import torch

        from models.backbone import TinySpec
        from models.pretrain import STAGES, PretrainRecipe, pretrain_tiny as run_pretrain

        bad = set(stage) - set(STAGES)
        if bad:
            raise typer.BadParameter(f"unknown stage(s) {sorted(bad)}; known: {', '.join(STAGES)}")
        torch.set_num_threads(threads)
        command = "layerboot pretrain-tiny " + " ".join(sys.argv[2:])
        record = run_pretrain(out, TinySpec(), PretrainRecipe(), tuple(stage), log=typer.echo, command=command.strip())
        typer.echo(json.dumps(record["results"], indent=1))


@app.command("make-flux-shaped")
def make_flux_shaped_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for flux/ (diffusers layout) and qwen/ (transformers layout).")],
    t5_max_length: Annotated[int, typer.Option("--t5-max-length", min=1, max=512,
                                               help="T5 tokens per prompt (FLUX.1-Fill-dev: 512).")] = 512,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Write a flux-shaped model (FLUX.1-Fill-dev, CLIP-L, T5-XXL and Qwen2.5-VL-7B at their published
    widths, one block or layer each, random bf16 weights, offline word-level tokenizers; ~2.2 GB),
    so the flux profile runs on a CPU: `layerboot run --config flux --set model.base=OUT/flux
    --set judge.model=OUT/qwen ...` (README: Running the real profile)."""
    with user_errors():
        import time

        from models.realsize import FluxShape, make_flux_shaped

        t0 = time.time()
        paths = make_flux_shaped(out, FluxShape(t5_max_length=t5_max_length), seed=seed)
        typer.echo(f"wrote {out} in {time.time() - t0:.0f} s; use " + " ".join(f"--set {k}={v}" for k, v in paths.items()))


app.add_typer(judge_app, name="judge")  # `layerboot judge calibrate|score`
