"""What a crash costs: SIGKILL `layerboot run` at random moments, `layerboot resume` each time,
and count the finished work that ran again.

    .venv/bin/python bench/resume.py [--kills 5] [--seed 0]

A reference run goes through uninterrupted first (its wall time bounds the kill moments); then one
workdir is killed and resumed `--kills` times at random moments and finally resumed to the end.
Every process logs `finished shard|stage NAME` for work it computed (and `kept ...` for work it
found done); a name finished by two processes is recomputed work. Also checks the final manifests
equal the reference. Goal: 0 finished shards recomputed. Prints the fraction last.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/servers.py, the services' helpers
from bench.servers import prefect_server  # noqa: E402
from configs import resolve_config_path  # noqa: E402
from storage.store import Store  # noqa: E402

EXE = str(Path(sys.executable).parent / "layerboot")
FINISHED = re.compile(r"layerboot - finished (?:shard|stage) ([a-z]+-r\d\d(?:-s\d{3})?)")

# the tiny profile, shrunk so a round takes seconds and each stage has several shards to kill in
SMALL = {"data": {"n_seeds": 30, "n_test": 10},
         "train": {"steps": 60, "checkpoint_every": 20},
         "bootstrap": {"rounds": 3, "candidates": 32, "compose_candidates": 8, "shard_size": 4, "warm_steps": 20,
                       "eval_n": 10}}


def small_config(root: Path) -> Path:
    cfg = yaml.safe_load(resolve_config_path("tiny").read_text())
    for section, values in SMALL.items():
        cfg[section].update(values)
    cfg["train"]["cycle"].update(warmup_steps=10, ramp_steps=10)
    cfg["model"]["base"] = str(resolve_config_path("tiny").parent.parent / "models" / "tiny_base")
    path = root / "bench-small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(command: str, config: Path, workdir: Path, env: dict, kill_after: float | None) -> tuple[str, float, bool]:
    """Run `layerboot COMMAND`; SIGKILL its process group after `kill_after` seconds. Returns
    (output, seconds, killed)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([EXE, command, "-c", str(config), "-w", str(workdir)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        killed = False
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        out.seek(0)
        return out.read(), time.monotonic() - t0, killed


def content(store: Store, r: int) -> list[dict]:
    return store.read_round(r).drop_columns(["created_at"]).sort_by("triplet_id").to_pylist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="layerboot-bench-resume-"))
    with prefect_server(root / "prefect") as (url, _):
        env = os.environ | {"PREFECT_API_URL": url, "PYTHONUNBUFFERED": "1"}
        config = small_config(root)
        ref_out, ref_s, _ = launch("run", config, root / "ref", env, None)
        ref_work = Counter(FINISHED.findall(ref_out))
        print(f"reference run: {ref_s:.0f} s, {sum(ref_work.values())} finished shards/stages", flush=True)

        finished: Counter[str] = Counter()
        crashed = root / "crashed"
        for k in range(args.kills):  # spread the kills over the run: each process gets a slice of it
            moment = rng.uniform(5.0, 5.0 + 1.5 * ref_s / args.kills)
            out, took, killed = launch("run" if k == 0 else "resume", config, crashed, env, moment)
            names = FINISHED.findall(out)
            finished.update(set(names))
            print(f"process {k + 1}: {'killed' if killed else 'finished'} after {took:.0f} s "
                  f"({len(names)} shards/stages finished in it)", flush=True)
        out, took, _ = launch("resume", config, crashed, env, None)
        finished.update(set(FINISHED.findall(out)))
        print(f"final resume: {took:.0f} s", flush=True)

        ref, got = Store(str(root / "ref")), Store(str(crashed))
        same = ref.committed_rounds() == got.committed_rounds() and all(
            content(ref, r) == content(got, r) for r in ref.committed_rounds())
        recomputed = sum(n - 1 for n in finished.values() if n > 1)
        print(f"manifests identical to the uninterrupted run: {same}; every unit of work done: "
              f"{set(finished) == set(ref_work)}")
        print(f"recomputed finished work: {recomputed} of {len(finished)} shards/stages "
              f"= {recomputed / max(1, len(finished)):.3f} (goal 0)")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
