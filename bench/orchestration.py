"""What Prefect costs: the same bootstrap rounds as the Prefect flow and as plain function calls,
side by side in one process (same stages, same order, same cached base model).

    .venv/bin/python bench/orchestration.py [--config configs/tiny.yaml] [--rounds 2] [--repeats 1]

The ephemeral Prefect server is started (and timed) before the first measured run, since a user
pays it once per process (see docs/stack-notes.md), not per round. Runs alternate
plain / flow so that a machine getting busier hurts both alike. Goal: the flow adds <= 5% wall
time. Prints the ratio last.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from configs import load_config, resolve_config_path
from models.loop import stages


def plain_rounds(config: str, workdir: str, rounds: int) -> None:
    """The bootstrap loop with no orchestrator: what flows/bootstrap.py does, as plain calls."""
    stages.seed_stage(config, workdir)
    for r in range(1, rounds + 1):
        stages.plain_round(config, workdir, r, "plain")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny.yaml")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    config = str(resolve_config_path(args.config).resolve())
    root = Path(tempfile.mkdtemp(prefix="layerboot-bench-orch-"))
    os.environ.setdefault("PREFECT_HOME", str(root / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # its first write races the migration
    (root / "prefect").mkdir()
    from flows.bootstrap import bootstrap_flow  # after PREFECT_HOME is set

    logging.getLogger("prefect").setLevel(logging.WARNING)
    try:
        t0 = time.perf_counter()
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:  # starts the ephemeral server
            client.hello()
        startup = time.perf_counter() - t0
        from models.loop.runtime import MODEL_LOCK, backbone_for

        with MODEL_LOCK:  # the base model is cached per process: load it before either side runs
            backbone_for(load_config(config))
        plain_s, flow_s = [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            plain_rounds(config, str(root / f"plain{i}"), args.rounds)
            plain_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bootstrap_flow(config_path=config, workdir=str(root / f"flow{i}"), rounds=args.rounds)
            flow_s.append(time.perf_counter() - t0)
            print(f"repeat {i}: plain {plain_s[-1]:.1f} s   flow {flow_s[-1]:.1f} s", flush=True)
        plain_t, flow_t = min(plain_s), min(flow_s)
        print(f"ephemeral Prefect server start (once per process): {startup:.1f} s")
        print(f"{args.rounds} rounds of {Path(config).name}: plain {plain_t:.1f} s, Prefect flow {flow_t:.1f} s "
              f"(+{flow_t - plain_t:.1f} s)")
        print(f"overhead ratio flow/plain: {flow_t / plain_t:.3f}x (goal <= 1.05x); "
              f"with the server start: {(flow_t + startup) / plain_t:.3f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
