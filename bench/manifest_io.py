"""Manifest I/O through storage/ against raw pyarrow on the same 1M-row table (10 rounds).

    .venv/bin/python bench/manifest_io.py [--rows 1000000] [--rounds 10]

Both sides write zstd Parquet, one file per round, and read/query the same data; storage/ also
validates, checks blob references, hashes and writes commit markers. Each step runs --repeat times,
the sides alternated, the fastest run of each side counting; the CPU seconds (every thread of the
process) are printed too: on a shared machine they move less than the wall. Goals: every storage/ step
<= 1.2x raw pyarrow; the pool query over 10 rounds under 1 s. Prints the ratios last.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from PIL import Image

from storage import schema
from storage import store as store_module
from storage.store import Store

N_BLOBS = 64  # rows share a few real blobs: the store checks every reference exists


def make_rounds(store: Store, rows: int, rounds: int, image=None) -> list[pa.Table]:
    """`rows` manifest rows in `rounds` rounds over N_BLOBS blobs: `image(i)`, solid colours by default."""
    rng = np.random.default_rng(0)
    image = image or (lambda i: Image.new("RGB", (32, 32), (i, 255 - i, 7)))
    keys = [store.put_image(image(i)) for i in range(N_BLOBS)]
    uri = pa.array([k for k, _ in keys])
    sha = pa.array([s for _, s in keys])
    per = rows // rounds
    tables = []
    for r in range(rounds):
        n = per
        pick = pa.array(rng.integers(0, N_BLOBS, n))
        ids = pa.array(np.char.mod("%032x", rng.integers(0, 2**62, n, dtype=np.int64) * 4 + r).astype(str))
        source = "seed" if r == 0 else None
        src = pa.array(np.where(rng.random(n) < 0.8, "generated", "cycle")) if source is None else pa.repeat("seed", n)
        accepted = pa.array(rng.random(n) < (0.2 + 0.05 * r))
        scores = pa.array([[("quality", 0.5)]] * n, type=schema.MANIFEST_SCHEMA.field("judge_scores").type)
        cols = {
            "triplet_id": ids, "run_id": pa.repeat("bench", n), "round": pa.repeat(pa.scalar(r, pa.int32()), n),
            "source": src, "split": pa.repeat("train", n), "prompt": pa.repeat("a red mug with a blue star", n),
            "panel_size": pa.repeat(pa.scalar(64, pa.int32()), n), "judge_scores": scores,
            "accepted": accepted, "seed": pa.array(np.arange(n, dtype=np.int64)),
            "created_at": pa.repeat(pa.scalar(datetime(2026, 1, 1, tzinfo=timezone.utc),
                                              pa.timestamp("us", tz="UTC")), n),
        }
        for panel in (*schema.PANELS, "footprint"):
            cols[f"{panel}_uri"], cols[f"{panel}_sha256"] = uri.take(pick), sha.take(pick)
        table = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in schema.MANIFEST_SCHEMA},
                         schema=schema.MANIFEST_SCHEMA)
        tables.append(table)
    return tables


def _forget() -> bool:
    """Forget what this process proved (as a new process would know nothing)."""
    getattr(store_module, "_PROVEN", {}).clear()  # (a checkout before it existed proves nothing across reads)
    return True


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of every thread of this process, result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="each step this many times, alternating the two sides; "
                    "the fastest of each side counts (the machine is shared)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="layerboot-bench-io-"))
    try:
        store, raw = Store(str(root / "store")), root / "raw"
        raw.mkdir()
        tables = make_rounds(store, args.rows, args.rounds)
        last = args.rounds - 1

        def raw_write():
            if raw.exists():
                shutil.rmtree(raw)
            for r, t in enumerate(tables):
                (raw / f"round={r:02d}").mkdir(parents=True)
                pq.write_table(t, raw / f"round={r:02d}" / "part-0.parquet", compression="zstd")

        def ours_write():
            if (root / "store" / "manifests").exists():  # a fresh store holding the same blobs
                shutil.rmtree(root / "store" / "manifests")
                shutil.rmtree(root / "store" / "metrics")
            fresh = Store(str(root / "store"))
            for r, t in enumerate(tables):
                fresh.commit_round(r, t)

        def raw_dataset():
            return ds.dataset(raw, format="parquet", partitioning="hive")

        def raw_pool():
            return raw_dataset().to_table(filter=(ds.field("split") == "train") & ds.field("accepted")
                                          & (ds.field("round") <= last))

        def raw_selection():
            t = raw_dataset().to_table(columns=["round", "source", "accepted"], filter=ds.field("source") == "generated")
            g = t.group_by("round").aggregate([("accepted", "mean")])
            return dict(zip(g["round"].to_pylist(), g["accepted_mean"].to_pylist()))

        def ours_selection():
            m = store.metrics()
            return dict(zip(m["round"].to_pylist(), m["selection_rate"].to_pylist()))

        results = {}
        for name, ours, theirs in [
            ("write", ours_write, raw_write),
            ("read all", store.manifest, lambda: raw_dataset().to_table()),
            ("read all, new process", lambda: Store(str(root / "store")).manifest() if _forget() else None,
             lambda: raw_dataset().to_table()),
            (f"pool after round {last}", lambda: store.pool(last), raw_pool),
            ("selection rate per round", ours_selection, raw_selection),
        ]:
            t_raw = t_ours = c_raw = c_ours = float("inf")
            for _ in range(args.repeat):
                t, c, out_raw = timed(theirs)
                t_raw, c_raw = min(t_raw, t), min(c_raw, c)
                t, c, out_ours = timed(ours)
                t_ours, c_ours = min(t_ours, t), min(c_ours, c)
            if name.startswith(("pool", "read")):
                assert out_ours.num_rows == out_raw.num_rows, (name, out_ours.num_rows, out_raw.num_rows)
            if name.startswith("selection"):
                assert all(abs(out_ours[r] - out_raw[r]) < 1e-12 for r in out_raw), (out_ours, out_raw)
            results[name] = (t_ours, t_raw)
            print(f"{name:<28} storage/ {t_ours:7.3f} s   raw pyarrow {t_raw:7.3f} s   ratio {t_ours / t_raw:5.2f}x"
                  f"   CPU seconds {c_ours:7.3f} / {c_raw:7.3f} = {c_ours / max(c_raw, 1e-9):5.2f}x", flush=True)
        rows = sum(t.num_rows for t in tables)
        pool_s = results[f"pool after round {last}"][0]
        print(f"{rows} rows in {args.rounds} rounds; pool query {pool_s:.3f} s (goal < 1 s)")
        print("ratios (storage/ / raw pyarrow, goal <= 1.2x): "
              + "  ".join(f"{k}: {a / b:.2f}x" for k, (a, b) in results.items()))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
