"""The operator tools on a large workdir: wall seconds and peak memory of each, as a user runs them.

    .venv/bin/python bench/large_store.py /tmp/big --rows 1000000      # once: the workdir
    .venv/bin/python bench/operator_scale.py /tmp/big [--before TREE] [--repeat 2] [--only status,report]

Each tool runs as its own process (`layerboot ...`, or a few lines of Python for the pool build),
timed with /usr/bin/time (wall and maximum RSS; the fastest of --repeat runs is kept): status,
report, fsck (full, and --sample 1000), the pool build (`Store.pool` after the last round: every
column, and the columns training reads, as the train stage asks for them), review (a contact sheet of the last round), and the export of the
held-out split (`export --split test`: it plans over every round, then writes the test rows).
With --before TREE (a checkout of another commit, e.g. `git worktree add /tmp/old HEAD~3`), every
tool also runs from that tree, side by side, and the ratio is printed. Goals (10M rows): status
< 2 s, report < 60 s and < 2 GB RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POOL = ("import sys, time; from storage.store import Store; t = time.perf_counter(); s = Store(sys.argv[1]); "
        "p = s.pool(s.committed_rounds()[-1]); print(p.num_rows, 'rows in the pool,', round(time.perf_counter() - t, 2), 's')")


def tools(workdir: str, out: Path) -> dict[str, list[str]]:
    cli = ["-c", "from flows.cli import app; app()"]
    last = max(int(p.name.removeprefix("round=")) for p in (Path(workdir) / "manifests").glob("round=*"))
    return {
        "status": [*cli, "status", "-w", workdir],
        "report": [*cli, "report", "-w", workdir, "--out", str(out / "report.html")],
        "fsck --sample 1000": [*cli, "fsck", "-w", workdir, "--sample", "1000"],
        "fsck (full)": [*cli, "fsck", "-w", workdir],
        "pool build": ["-c", POOL, workdir],
        "pool build (training columns)": ["-c", POOL.replace("s.pool(s.committed_rounds()[-1])",
                                                             "s.pool(s.committed_rounds()[-1], columns=COLUMNS)")
                                          .replace("import sys, time;", "import sys, time; from models.loop.dataio "
                                                   "import PoolTriplets; COLUMNS = PoolTriplets.COLUMNS;"), workdir],
        "review": [*cli, "review", "-w", workdir, "--round", str(last), "--out", str(out / "review.png")],
        "export --split test": [*cli, "export", "-w", workdir, "--round", str(last), "--split", "test",
                                "--out", str(out / "export")],
    }


def run(args: list[str], tree: Path, out: Path, timeout: float) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, last line of output) of one run from `tree`."""
    stats = out / "time.txt"
    shutil.rmtree(out / "export", ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tree))
    try:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(stats), sys.executable, *args], cwd=tree,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return float("inf"), float("nan"), f"stopped after {timeout:.0f} s"
    wall, rss = stats.read_text().split()[-2:]
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return float(wall), int(rss) / 1024, (lines[-1] if lines else "")[:110] + (f" (exit {proc.returncode})"
                                                                              if proc.returncode else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir")
    ap.add_argument("--before", type=Path, help="another checkout: each tool also runs from it, side by side")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", help="comma-separated tool names (as printed)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before a run is stopped")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="layerboot-operator-"))
    try:
        chosen = tools(os.path.abspath(args.workdir), out)
        if args.only:
            chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
        for name, cmd in chosen.items():
            sides = [("after", REPO)] + ([("before", args.before.resolve())] if args.before else [])
            best = {}
            for _ in range(args.repeat):
                for side, tree in sides:
                    wall, rss, last = run(cmd, tree, out, args.timeout)
                    if side not in best or wall < best[side][0]:
                        best[side] = (wall, rss, last)
                if any(w == float("inf") for w, _, _ in best.values()):
                    break
            wall, rss, last = best["after"]
            line = f"{name:<30} {wall:8.2f} s  {rss:7.0f} MB"
            if "before" in best:
                b_wall, b_rss, b_last = best["before"]
                line += f"   before: {b_wall:8.2f} s  {b_rss:7.0f} MB   ({b_wall / wall:.1f}x faster)"
            print(line + f"   | {last}", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
