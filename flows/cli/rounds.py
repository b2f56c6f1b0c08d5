"""Commands that write rounds: `seed`, `add-unlabeled`, `add-layers`, `run`, `resume`, `ablate`, `deploy`.

`run` and `resume` run the bootstrap flow in a worker thread under the workdir lock, so the main
thread takes SIGINT/SIGTERM at once (see _stop_on_signals)."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from flows.cli.common import (
    EXIT_FAILED, ConfigOpt, RoundsOpt, SetOpt, WorkdirOpt, check_prefect_room, children_die_with_this_process, debugging,
    open_config, prefect_env, prefect_logging, refuse_unmarked, sigterm_interrupts, user_errors, with_overrides,
    workdir_lock,
)
from flows.cli.workdir import print_status

app = typer.Typer()
PANEL = "Run rounds"  # the heading of these commands in `layerboot --help`


@app.command(rich_help_panel=PANEL)
def seed(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, max=100_000,
                                             help="Seed triplets (default: data.n_seeds).")] = None,
    n_test: Annotated[Optional[int], typer.Option("--n-test", min=0, max=100_000,
                                                  help="Held-out test triplets (default: data.n_test).")] = None,
    from_dir: Annotated[
        Optional[Path], typer.Option("--from-dir", help="Import your own triplets: DIR/<name>/<panel>.png, one per panel of the config's layer task "
                     "(logo_object: composite, logo, object)")
    ] = None,
) -> None:
    """Write round 0: seed triplets (procedural, or imported with --from-dir) and the held-out test split."""
    with user_errors():
        config = with_overrides(config, sets)
        from models.loop.seeding import commit_seeds

        cfg, store = open_config(config, workdir)
        n_seeds = cfg.data.n_seeds if n is None else n
        n_held = cfg.data.n_test if n_test is None else n_test
        # it writes blobs: never during `fsck --repair` or a run; SIGTERM undoes them as Ctrl-C does
        with sigterm_interrupts(), workdir_lock(store, "layerboot seed"):
            refuse_unmarked(store)
            with store.blobs.rollback_on_error():  # refused (e.g. round 0 committed otherwise): blobs removed
                info = commit_seeds(store, cfg, n_seeds, n_held, str(from_dir) if from_dir else None)
        if info.noop:
            typer.echo(f"round 0 already committed in {store.uri} with identical content: nothing to do")
        else:
            typer.echo(f"committed round 0 in {store.uri}: {info.rows} triplets (digest {info.content_digest[:12]})")


@app.command("add-unlabeled", rich_help_panel=PANEL)
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

        cfg, store = open_config(config, workdir)
        images = read_image_dir(directory, cfg.data.panel_size)  # all validated before anything is written
        with workdir_lock(store, "layerboot add-unlabeled"):
            added = add(store, images)
        typer.echo(f"added {added.added} composite(s) without layers to {store.uri} "
                   f"({added.already} already there; {added.total} in all)")


@app.command("add-layers", rich_help_panel=PANEL)
def add_layers(
    logos: Annotated[Optional[Path], typer.Option(
        "--logos", "--layer1", help="A folder of layer-1 images (flat logos).")] = None,
    objects: Annotated[Optional[Path], typer.Option(
        "--objects", "--layer2", help="A folder of layer-2 images (plain objects).")] = None,
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
) -> None:
    """Import loose layers for the compose source (`bootstrap.compose_candidates`): each round it
    pairs a layer-1 image with a layer-2 image, composes them with the round's adapter, and judges
    the triplet. Both folders are validated first (square, data.panel_size pixels; an optional
    NAME.txt describes NAME.png; no image twice in one folder); bad files are named and nothing is
    imported."""
    with user_errors():
        from storage.imports import read_image_dir
        from storage.unlabeled import add_layers as add

        if logos is None and objects is None:
            raise typer.BadParameter("give --logos DIR, --objects DIR or both (folders of layer-1 and layer-2 images)")
        cfg, store = open_config(config, workdir)
        # both folders validated in full before anything is written
        layer1 = read_image_dir(logos, cfg.data.panel_size, refuse_duplicates=True) if logos else []
        layer2 = read_image_dir(objects, cfg.data.panel_size, refuse_duplicates=True) if objects else []
        with workdir_lock(store, "layerboot add-layers"):
            added = add(store, layer1, layer2)
        one, two = added["layer1"], added["layer2"]
        typer.echo(f"added {one.added} logo(s) and {two.added} object(s) to {store.uri} "
                   f"({one.already} and {two.already} already there; {one.total} and {two.total} in all)")


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


def _run_flow(config_path: str, store, rounds: int | None, runner: str = "threads", dask_address: str | None = None,
              held: dict | None = None) -> None:
    """Run the bootstrap flow (the caller holds the workdir lock) in a worker thread: the main
    thread only waits, so it handles SIGINT/SIGTERM at once (_stop_on_signals) and Prefect never
    installs its own SIGTERM handler (it does so only in the main thread)."""
    import threading

    from configs import resolve_config_path
    from storage.status import round_status

    prefect_env(store)
    prefect_logging()
    children_die_with_this_process()  # the ephemeral Prefect server, Dask workers: even after a SIGKILL
    from flows.bootstrap import bootstrap_flow  # (configures logging: our level must be set after it)

    logging.getLogger("layerboot").setLevel(logging.INFO)

    config_path = str(resolve_config_path(config_path).resolve())
    outcome: dict = {}

    def body() -> None:
        try:
            bootstrap_flow(config_path=config_path, workdir=store.uri, rounds=rounds, task_runner=runner,
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
        if debugging():
            raise exc
        failed = [r for r in round_status(store) if r["state"] in ("failed", "running")]
        where = f"round {failed[0]['round']} failed in stage {failed[0]['stage']}: " if failed else ""
        typer.echo(f"error: {where}{type(exc).__name__}: {exc}", err=True)
        typer.echo("fix the cause, then `layerboot resume` continues from the finished work", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    if exc is not None:
        raise exc
    typer.echo(f"workdir: {store.uri}")
    print_status(round_status(store))


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
    from models.domains.registry import domain_of

    if (problem := local_base_problem(cfg.model.base)) is not None:
        raise ConfigError(problem)
    domain_of(cfg)  # the layer task, its world level and its cycle check
    refuse_unmarked(store)
    check_prefect_room(store)


@app.command(rich_help_panel=PANEL)
def run(config: ConfigOpt = "configs/tiny.yaml", sets: SetOpt = None, workdir: WorkdirOpt = None,
        rounds: RoundsOpt = None, task_runner: RunnerOpt = None, dask_address: DaskAddressOpt = None) -> None:
    """Run the bootstrap loop as a Prefect flow: seed, then train / generate / judge / cycle /
    evaluate / commit for each round. Exit 0 done, 1 failed, 2 bad usage or input, 130/143 stopped
    by SIGINT/SIGTERM (`resume` continues)."""
    with user_errors():
        from configs import config_hash
        from storage.target import write_target

        config = with_overrides(config, sets)
        cfg, store = open_config(config, workdir)
        _check_can_run(cfg, store)
        runner = (task_runner or TaskRunner.threads).value
        held: dict = {}
        with _stop_on_signals(store, held), workdir_lock(store, "layerboot run") as held["lock"]:
            # (before Prefect starts: a refusal costs nothing)
            target = rounds or cfg.bootstrap.rounds
            write_target(store, target, config_hash(cfg), runner, dask_address, "layerboot run")
            _run_flow(config, store, target, runner, dask_address, held)


@app.command(rich_help_panel=PANEL)
def resume(config: ConfigOpt = "configs/tiny.yaml", sets: SetOpt = None, workdir: WorkdirOpt = None,
           rounds: RoundsOpt = None, task_runner: RunnerOpt = None, dask_address: DaskAddressOpt = None) -> None:
    """Continue after a crash, failure or interruption: committed rounds and finished shards are
    kept, the rest runs, up to the interrupted run's target (its --rounds); --rounds N extends it."""
    with user_errors():
        config = with_overrides(config, sets)
        from configs import ConfigError, config_hash
        from storage.status import round_status
        from storage.target import read_target, write_target
        from storage.work import SHARDED, RoundWork, tidy_committed

        cfg, store = open_config(config, workdir, must_exist=True)
        _check_can_run(cfg, store)
        held: dict = {}
        with _stop_on_signals(store, held), workdir_lock(store, "layerboot resume") as held["lock"]:
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


@app.command(rich_help_panel=PANEL)
def ablate(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: Annotated[str, typer.Option("--workdir", "-w", help="Root of the five runs (one folder each).")] = "runs/ablation",
    rounds: RoundsOpt = None,
    variant: Annotated[Optional[list[str]], typer.Option(
        "--variant", help="Run only these (default: seeds_only, no_cycle_loss, no_cycle_stage, no_compose, full).")] = None,
) -> None:
    """The paper's ablation: the bootstrap flow under five configs (seeds only; no cycle loss; no
    cycle stage; no compose source; full), then one table: selection rate per round (in all and
    per candidate source), training pool, held-out PSNR.
    Re-running skips committed rounds, like `run`."""
    with user_errors():
        from configs import resolve_config_path
        from storage.store import Store

        open_config(config, None)  # validate the base config before anything starts
        chosen = tuple(variant or ())
        store = Store(workdir)
        prefect_env(store)
        prefect_logging()
        children_die_with_this_process()
        from flows.ablation import VARIANTS, ablation_flow, markdown_table

        unknown = set(chosen) - set(VARIANTS)
        if unknown:
            raise typer.BadParameter(f"unknown variant(s) {sorted(unknown)}; known: {', '.join(VARIANTS)}")
        logging.getLogger("layerboot").setLevel(logging.INFO)
        table = ablation_flow(config_path=str(resolve_config_path(config).resolve()), workdir=store.uri, rounds=rounds,
                              variants=chosen or tuple(VARIANTS))
        typer.echo(markdown_table(table))


def _check_cron(cron: str) -> None:
    """Refuse a schedule Prefect would refuse, before anything reaches the server (its own check)."""
    from prefect.client.schemas.schedules import CronSchedule
    from configs.schema import quoted

    try:
        CronSchedule(cron=cron)
    except ValueError:
        raise typer.BadParameter(f"--cron {quoted(cron)}: not a cron schedule (minute hour day-of-month month "
                                 "day-of-week, e.g. '0 2 * * *')") from None


@app.command(rich_help_panel=PANEL)
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
        from configs import resolve_config_path

        if cron is not None:
            _check_cron(cron)
        if not os.environ.get("PREFECT_API_URL"):
            raise typer.BadParameter("set PREFECT_API_URL to your Prefect server first (deployments live there)")
        cfg, store = open_config(config, workdir)
        from flows.bootstrap import bootstrap_flow
        from models.loop.runtime import REPO_ROOT

        params = {"config_path": str(resolve_config_path(config).resolve()), "workdir": store.uri, "rounds": rounds}
        deployment_id = bootstrap_flow.from_source(
            source=str(REPO_ROOT), entrypoint="flows/bootstrap.py:bootstrap_flow"
        ).deploy(name=name or cfg.run.name, work_pool_name=pool, cron=cron, parameters=params, print_next_steps=False)
        typer.echo(f"deployment layerboot-bootstrap/{name or cfg.run.name} ({deployment_id}) on pool {pool!r}")
        typer.echo(f"start a worker: prefect worker start --pool {pool}")
        typer.echo(f"run it now:     prefect deployment run 'layerboot-bootstrap/{name or cfg.run.name}'")
