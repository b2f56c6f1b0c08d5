"""A simulated campaign through the real flow, store and task runner: what scale costs beyond the GPUs.

    .venv/bin/python bench/scale.py [--candidates 100,300,1000] [--rounds 2] [--shard-size 50]
                                    [--workers 2] [--runner dask|threads] [--time-scale 0.001]

Everything is the product's code path (`flows.bootstrap.bootstrap_flow` on a Prefect server,
tasks on a Dask LocalCluster of `--workers` processes or on threads, the store, the commit), except
the models: the config's `simulate:` section (configs/schema.py SimulateSection) selects the
stand-in stages of models/loop/simulated.py, which sleep what a GPU stage would take at the flux
profile (the figures below, times --time-scale) and write real rows and real PNG blobs (16-px
noise, three per candidate, two more per cycle triplet). Round 0 is seeded for real (20 seeds).

GPU seconds per item at the flux profile (configs/flux.yaml), estimated from FLOPs until
bench/gpu.py has run on a GPU (its figures replace these):
- FLUX.1-Fill-dev transformer: 11.9e9 parameters, 19 double + 38 single blocks, width 3072
  (black-forest-labs/FLUX.1-Fill-dev transformer/config.json); a 1536x512 grid is 3,072 image
  tokens + 512 T5 tokens = 3,584 tokens. One forward: 2 * 11.9e9 * 3584 = 8.5e13 FLOP for the
  weights + 4 * 57 * 3584^2 * 3072 = 0.9e13 for attention = 9.4e13 FLOP.
- Throughput: 320 TFLOP/s, i.e. 40% of the ~800 TFLOP/s an 8192^3 bf16 matmul reaches on an H100
  (docs/stack-notes.md, measured), 40% being a typical MFU for a 12B diffusion transformer at
  batch 4 (an assumption: bench/gpu.py measures it).
- generate: 28 sampling steps (sample.steps) = 2.6e15 FLOP -> GENERATE_S = 8.3 s per candidate.
- judge: Qwen2.5-VL-7B (8.3e9 parameters with its vision tower), ~1,100 tokens a question (the
  grid at max_pixels is ~1,000 merged vision tokens), 5 criteria: 2 * 8.3e9 * 1100 * 5 = 9.1e13
  FLOP = 0.3 s, plus decoding a 24-token reason for rejected items, memory-bound, ~0.1 s a
  triplet at batch 8 -> JUDGE_S = 0.4 s.
- cycle: decompose + compose (2 x 28 steps) + judging the new triplet -> CYCLE_S = 17.0 s per parent.
- train: rank-32 LoRA, batch 1, gradient checkpointing: ~6 * 11.9e9 * 3584 = 2.6e14 FLOP a step
  (forward, recomputed forward, backward through the frozen weights) + the cycle term every 4th
  step with 8 sampling steps (2 * 8 * 9.4e13 / 4 = 3.8e14) -> TRAIN_STEP_S = 2.0 s; round 1 trains
  train.steps = 2000, later rounds bootstrap.warm_steps = 500.
- evaluate: one decomposition (28 steps) per held-out triplet -> EVALUATE_S = 8.3 s, eval_n of them.

Per round it prints: wall seconds against the ideal (the serial stages' simulated seconds, train
and evaluate, plus the sharded stages' simulated seconds divided by the workers), the overhead
beyond the simulated seconds per task run (stage walls minus simulated seconds, over the round's
task runs), the commit's seconds (with the round's summary and the subflow's start: the round's wall
from commit to commit less its timed stages), and the flow process's peak RSS; at the end, the cost
growth as exponents fitted over candidates per round (log-log least squares, rounds after the
first) for the round's wall, its overhead and its commit. Seconds are scaled (--time-scale).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # one line per round here, not one per task run

GENERATE_S, JUDGE_S, CYCLE_S, TRAIN_STEP_S, EVALUATE_S = 8.3, 0.4, 17.0, 2.0, 8.3


def campaign_config(path: Path, candidates: int, shard_size: int, rounds: int, time_scale: float) -> Path:
    """The tiny profile with the flux profile's training/eval shape and the stand-in stages."""
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    cfg["run"]["name"] = "scale"
    cfg["data"].update(n_seeds=20, n_test=10)
    cfg["train"].update(steps=2000, checkpoint_every=250)
    cfg["bootstrap"].update(rounds=rounds, candidates=candidates, shard_size=shard_size, warm_steps=500,
                            eval_n=200, unlabeled_per_round=0, compose_candidates=0)  # N candidates: generated only, as flux
    cfg["simulate"] = dict(train_step_s=TRAIN_STEP_S, generate_s=GENERATE_S, judge_s=JUDGE_S, cycle_s=CYCLE_S,
                           evaluate_s=EVALUATE_S, time_scale=time_scale)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class RssSampler:
    """The flow process's RSS, sampled every `every` seconds: peak(t0, t1) over a window."""

    def __init__(self, every: float = 0.1):
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.samples.append((time.time(), me.memory_info().rss))
            self._stop.wait(every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float, t1: float) -> int:
        return max((rss for t, rss in self.samples if t0 <= t <= t1), default=0)


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """b in y = a * x^b, least squares in log-log (None with fewer than two positive points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    var = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / var if var else None


def campaign(candidates: int, args, dask_address: str | None, rss: RssSampler, root: Path) -> list[dict]:
    import pyarrow.compute as pc

    from flows.bootstrap import bootstrap_flow
    from storage.store import Store

    work = root / f"c{candidates}"
    config = campaign_config(root / f"c{candidates}.yaml", candidates, args.shard_size, args.rounds, args.time_scale)
    bootstrap_flow(config_path=str(config), workdir=str(work), rounds=args.rounds, task_runner=args.runner,
                   dask_address=dask_address)
    store = Store(str(work))
    metrics = store.metrics().to_pylist()
    out, previous = [], metrics[0]["committed_at"].timestamp()  # round r: from round r-1's commit to its own
    shards = math.ceil(candidates / args.shard_size)
    workers = args.workers if args.runner == "dask" else 1
    for m in metrics[1:]:
        r, seconds = m["round"], dict(m["stage_seconds"])
        rows = store.read_round(r, columns=["source", "accepted"])
        parents = int(pc.sum(pc.and_(pc.equal(rows["source"], "generated"), rows["accepted"])).as_py() or 0)
        steps = 2000 if r == 1 else 500
        serial = (steps * TRAIN_STEP_S + 200 * EVALUATE_S) * args.time_scale
        sharded = (candidates * (GENERATE_S + JUDGE_S) + parents * CYCLE_S) * args.time_scale
        ideal = serial + sharded / workers
        ended = m["committed_at"].timestamp()
        wall = ended - previous
        commit = wall - sum(seconds.values())  # summary, commit, and the subflow's start: what no stage times
        task_runs = 3 * shards + 5  # train, generate/judge/cycle per shard, evaluate, summarize, commit, report
        out.append({"candidates": candidates, "round": r, "wall": wall, "ideal": ideal, "commit": commit,
                    "overhead_per_task": (wall - ideal - commit) / task_runs, "task_runs": task_runs,
                    "rss_mb": rss.peak(previous, ended) / 2**20, "rows": m["rows"], "stages": seconds})
        previous = ended
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", default="100,300,1000", help="candidates per round, one campaign each")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2, help="Dask LocalCluster worker processes")
    ap.add_argument("--runner", choices=("dask", "threads"), default="dask")
    ap.add_argument("--time-scale", type=float, default=0.001, help="simulated GPU seconds are multiplied by this")
    ap.add_argument("--keep", type=Path, help="keep the workdirs in this folder (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.candidates.split(",")]
    root = args.keep or Path(tempfile.mkdtemp(prefix="layerboot-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{datetime.now():%Y-%m-%d %H:%M} · {os.cpu_count()} CPUs · runner {args.runner}, workers {args.workers}, "
          f"shard size {args.shard_size}, {args.rounds} rounds, time scale {args.time_scale}", flush=True)
    results = []
    try:
        with ExitStack() as stack, RssSampler() as rss:
            address = None
            if args.runner == "dask":
                from distributed import LocalCluster

                cluster = stack.enter_context(LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                           processes=True, dashboard_address=None, host="127.0.0.1"))
                address = cluster.scheduler_address
            print(f"{'cand.':>7} {'round':>5} {'wall s':>8} {'ideal s':>8} {'wall/ideal':>10} {'overhead/task s':>15} "
                  f"{'commit s':>8} {'peak RSS MB':>11} {'rows':>7}", flush=True)
            for n in sizes:
                for row in campaign(n, args, address, rss, root):
                    results.append(row)
                    print(f"{row['candidates']:>7} {row['round']:>5} {row['wall']:8.1f} {row['ideal']:8.1f} "
                          f"{row['wall'] / row['ideal']:10.2f} {row['overhead_per_task']:15.3f} {row['commit']:8.2f} "
                          f"{row['rss_mb']:11.0f} {row['rows']:>7}", flush=True)
        # rounds after the first of each campaign when there are some: the first campaign's first
        # round also pays the Dask workers' first imports (~40 s on 2 cores)
        steady = [r for r in results if r["round"] > 1] or results
        per = {n: [r for r in steady if r["candidates"] == n] for n in sizes}
        walls = [sum(r["wall"] for r in rows) / len(rows) for rows in per.values()]
        over = [sum(r["wall"] - r["ideal"] for r in rows) / len(rows) for rows in per.values()]
        commits = [sum(r["commit"] for r in rows) / len(rows) for rows in per.values()]
        fmt = lambda b: "n/a" if b is None else f"{b:.2f}"  # noqa: E731
        print(f"cost growth over candidates per round {sizes}: wall ~ N^{fmt(fit_exponent(sizes, walls))}, "
              f"overhead (wall - ideal) ~ N^{fmt(fit_exponent(sizes, over))}, commit ~ N^{fmt(fit_exponent(sizes, commits))}",
              flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
