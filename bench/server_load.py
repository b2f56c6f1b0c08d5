"""How many concurrent workers one Prefect server sustains before task-state latency grows.

    .venv/bin/python bench/server_load.py [--server sqlite,postgresql] [--workers 1,2,4,8,16]
                                          [--tasks 8] [--task-seconds 2.0]

A standing `prefect server start` (bench/servers.py) on SQLite (what `layerboot run` starts as its
ephemeral server) or on PostgreSQL (what deployments use). Each worker is a process running one
flow whose task runs, one after another, are a simulated GPU stage: a sleep of --task-seconds and
nothing else (models/loop/simulated.py's stages sleep the same way; bench/scale.py measures their
store writes, which do not touch the server). Workers are thus idle most of the time, as GPU
workers are, and what grows with their number is the server's work: each task run is created,
set Pending, Running and Completed, and ships its log lines and events.

For each server and worker count, the workers start their first task together, once every one
of them has imported prefect and begun its flow. Per task run each
worker measures the overhead, the call's wall time less the sleep (prefect 3 orchestrates task
runs on the client and reports their states to the server as events, so this stays small), and
the task-state latency: from the call's return until the server reports the run Completed (what
a dashboard, `prefect task-run ls` or an automation sees). Prints per worker count the medians
(90th percentiles), the task runs served per second, and the CPU seconds the server used per task
run (its processes, PostgreSQL's too). The server sustains a worker count while the median
latency stays under 0.5 s and 5x one worker's (~0.05 s); the worker processes share this machine's
cores with the server, so on a small machine the knee can be the cores', which the server CPU
share tells apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(tasks: int, seconds: float, gate: Path) -> None:
    """One worker: a flow of `tasks` sleeping task runs, begun once `gate`/go exists (its flow
    announces itself as `gate`/ready-<pid> first); prints per task run [overhead, lag]: the call's
    wall less the sleep, and the seconds from the call's return until the server reports the run
    Completed (polled every 20 ms)."""
    from prefect import flow, get_client, task
    from prefect.client.schemas.objects import StateType

    @task(name="simulated-stage")
    def stage(seconds: float) -> None:
        time.sleep(seconds)

    @flow(name="server-load")
    def run() -> list[list[float]]:
        (gate / f"ready-{os.getpid()}").touch()
        while not (gate / "go").exists():
            time.sleep(0.01)
        out = []
        with get_client(sync_client=True) as client:
            for _ in range(tasks):
                t0 = time.perf_counter()
                state = stage(seconds, return_state=True)
                t1 = time.perf_counter()
                while (run := _read(client, state.state_details.task_run_id)) is None or \
                        run.state_type != StateType.COMPLETED:
                    if time.perf_counter() - t1 > 120:
                        break
                    time.sleep(0.02)
                out.append([t1 - t0 - seconds, time.perf_counter() - t1])
        return out

    print(json.dumps(run()), flush=True)


def _read(client, task_run_id):
    """The server's record of a task run, or None while it has none (it is created from events)."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_task_run(task_run_id)
    except ObjectNotFound:
        return None


def server_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and their children, plus every PostgreSQL backend."""
    procs = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs.update({q.pid: q for q in [p, *p.children(recursive=True)]})
        except psutil.NoSuchProcess:
            pass
    procs.update({q.pid: q for q in psutil.process_iter(["name"]) if (q.info["name"] or "").startswith("postgres")})
    total = 0.0
    for q in procs.values():
        try:
            t = q.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def load(url: str, server_pid: int, workers: int, args) -> dict:
    env = os.environ | {"PREFECT_API_URL": url, "PYTHONUNBUFFERED": "1"}
    gate = Path(tempfile.mkdtemp(prefix="layerboot-load-gate-"))
    cmd = [sys.executable, __file__, "--worker", "--tasks", str(args.tasks), "--task-seconds", str(args.task_seconds),
           "--gate", str(gate)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(workers)]
    try:
        while len(list(gate.glob("ready-*"))) < workers:  # every worker has imported prefect, begun its flow
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker ended before its first task")
            time.sleep(0.1)
        cpu0, t0 = server_cpu([server_pid]), time.time()
        (gate / "go").touch()
        outs = [p.communicate(timeout=600)[0] for p in procs]
        wall, cpu = time.time() - t0, server_cpu([server_pid]) - cpu0
    finally:  # none outlives this run, however it ends
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    pairs = [x for out in outs for x in json.loads(out.strip().splitlines()[-1])]
    runs = workers * args.tasks
    overhead, lag = [p[0] for p in pairs], [p[1] for p in pairs]
    shutil.rmtree(gate, ignore_errors=True)
    return {"workers": workers, "median": statistics.median(overhead), "p90": statistics.quantiles(overhead, n=10)[-1],
            "lag": statistics.median(lag), "lag_p90": statistics.quantiles(lag, n=10)[-1], "runs_per_s": runs / wall,
            "server_cpu_per_run": cpu / runs, "server_cpu_share": cpu / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="sqlite,postgresql")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--tasks", type=int, default=8, help="task runs per worker")
    ap.add_argument("--task-seconds", type=float, default=2.0, help="each task run's sleep (the simulated stage)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gate", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.tasks, args.task_seconds, args.gate)
    from bench import servers

    print(f"{datetime.now():%Y-%m-%d %H:%M} · {os.cpu_count()} CPUs · {args.tasks} task runs of "
          f"{args.task_seconds} s per worker", flush=True)
    for kind in args.server.split(","):
        with ExitStack() as stack:
            db = stack.enter_context(servers.postgresql_database()) if kind == "postgresql" else None
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="layerboot-load-")))
            url, proc = stack.enter_context(servers.prefect_server(home, db))
            print(f"{kind} server: {'workers':>7} {'overhead s (p90)':>17} {'lag s (p90)':>13} {'runs/s':>7} "
                  f"{'server CPU s/run':>16} {'server CPU share':>16}", flush=True)
            base = None
            for n in [int(x) for x in args.workers.split(",")]:
                row = load(url, proc.pid, n, args)
                base = base or row
                grew = row["lag"] > max(0.5, 5 * base["lag"])
                print(f"{'':>{len(kind) + 8}} {n:>7} {row['median']:8.3f} ({row['p90']:6.3f}) "
                      f"{row['lag']:5.3f} ({row['lag_p90']:5.3f}) {row['runs_per_s']:7.2f} "
                      f"{row['server_cpu_per_run']:16.3f} {row['server_cpu_share']:16.2f}"
                      f"{'  latency grew: not sustained' if grew else ''}", flush=True)


if __name__ == "__main__":
    main()
