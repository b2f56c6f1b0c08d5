"""Peak memory of `layerboot export` on a synthetic pool: it streams, so memory is bounded by one
shard (locally by one row group: shards stream to disk) and does not grow with the rows exported.

    .venv/bin/python bench/export_memory.py [--rows 10000,100000] [--shard-size 64] [--format hf]

Each size is a fresh workdir of `bench/manifest_io.py`'s synthetic rounds (10 rounds, rows sharing
64 blobs of 32-px noise, about 3 KB of PNG each) exported whole (`--split train --include-rejected`:
every row) in a fresh subprocess (peak RSS is per process). The peak is counted from just before
the export, after imports and after `plan_export` checked the rounds and counted the rows (reading
them a round at a time: "plan MB"), so "export adds" is what the export itself holds: a round's
manifest rows at a time and the shard being written. Prints the table last.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROUNDS = 10


def child(work: str, out: str, fmt: str, shard_mb: int) -> dict:
    """Export the whole workdir; peak RSS from just before the export, after imports and reading rows."""
    from pool_memory import peak_mb, reset_peak, rss_mb

    from storage.export import ExportOptions, export, hf_features, plan_export
    from storage.store import Store

    import imagehash  # noqa: F401  (loaded before the baseline, like datasets below)

    store = Store(work)
    options = ExportOptions(round=ROUNDS - 1, format=fmt, split="train", include_rejected=True,
                            shard_bytes=shard_mb * 10**6)
    hf_features(("composite", "layer1", "layer2"))  # imports datasets
    imported = rss_mb()
    plan = plan_export(store, options)  # the rounds checked, the rows counted
    before = rss_mb()
    reset_peak()
    t0 = time.perf_counter()
    result = export(store, out, plan)
    seconds = time.perf_counter() - t0
    shards = sorted(Path(out, "data").iterdir())
    return {"rows": sum(s.rows for s in result.splits), "seconds": seconds, "plan_mb": before - imported,
            "rss_before_mb": before, "peak_mb": peak_mb(), "out_mb": sum(p.stat().st_size for p in shards) / 1e6,
            "largest_shard_mb": max(p.stat().st_size for p in shards) / 1e6, "shards": len(shards)}


def make_workdir(work: Path, rows: int) -> None:
    from PIL import Image

    from manifest_io import make_rounds
    from storage.store import Store

    store = Store(str(work))
    rng = np.random.default_rng(1)
    noise = lambda i: Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")  # noqa: E731
    for r, table in enumerate(make_rounds(store, rows, ROUNDS, image=noise)):
        store.commit_round(r, table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="10000,100000", help="comma-separated pool sizes")
    ap.add_argument("--shard-size", type=int, default=64, help="MB")
    ap.add_argument("--format", default="hf", choices=["hf", "webdataset"])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.format, args.shard_size)))
        return
    results = []
    for rows in [int(n) for n in args.rows.split(",")]:
        root = Path(tempfile.mkdtemp(prefix="layerboot-bench-export-"))
        try:
            make_workdir(root / "w", rows)
            done = subprocess.run([sys.executable, __file__, "--format", args.format, "--shard-size",
                                   str(args.shard_size), "--child", str(root / "w"), str(root / "out")],
                                  check=True, capture_output=True, text=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n--format {args.format}, --shard-size {args.shard_size}MB")
    print(f"{'rows':>8} {'shards':>6} {'out MB':>8} {'largest shard MB':>16} {'plan MB':>8} "
          f"{'RSS before MB':>13} {'peak MB':>8} {'export adds MB':>14} {'s':>6}")
    for r in results:
        print(f"{r['rows']:>8} {r['shards']:>6} {r['out_mb']:>8.0f} {r['largest_shard_mb']:>16.1f} "
              f"{r['plan_mb']:>8.0f} {r['rss_before_mb']:>13.0f} {r['peak_mb']:>8.0f} "
              f"{r['peak_mb'] - r['rss_before_mb']:>14.0f} {r['seconds']:>6.1f}")


if __name__ == "__main__":
    main()
