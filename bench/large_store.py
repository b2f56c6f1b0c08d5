"""A synthetic workdir at campaign scale, written through the store's own API, for the operator benches.

    .venv/bin/python bench/large_store.py WORKDIR [--rows 1000000] [--rounds 10] [--blobs 4096]

Round 0 holds seed triplets (1% of them the held-out test split); every later round holds judged
candidates (`generated`, 80%, accepted at 20% + 2% a round) and cycle triplets (`cycle`, 20%, each
the child of one of the round's candidates, half accepted), with five judge criteria scored per
row, reject reasons, cycle scores and the orchestrator's per-round metrics. Every round is committed
with `Store.commit_round` (validation, blob checks, digest, marker, metrics index): the same code a
run commits with. The fast path is only in making the rows: columns are drawn with numpy, and rows
share `--blobs` distinct real PNG blobs (32-px noise, written with `Store.put_image`), since 10M rows
of distinct blobs would be 30M files. So manifests hold `--blobs` distinct keys per image column,
which Parquet dictionary-encodes: smaller files than a real run's, whose keys are all distinct.

Prints the commit seconds of each round; the benches read the workdir afterwards
(bench/operator_scale.py).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from storage import schema
from storage.store import Store

CRITERIA = ("logo_clean", "object_clean", "composite_match", "panels_agree", "quality")
THRESHOLD = 0.5
PROMPTS = tuple(f"a {c} {o} with a {s} logo" for c in ("red", "blue", "green", "white", "black")
                for o in ("mug", "bottle", "box", "bag", "cap") for s in ("star", "ring"))
REASONS = ("logo_clean: residue of the object", "object_clean: logo left behind", "composite_match: panels disagree",
           "quality: blurred", "panels_agree: another object")
_SCORES = schema.MANIFEST_SCHEMA.field("judge_scores").type
_REASONS = schema.MANIFEST_SCHEMA.field("judge_reasons").type


def put_blobs(store: Store, n: int, seed: int = 0) -> tuple[pa.Array, pa.Array]:
    """`n` distinct real PNG blobs (32-px noise); returns their keys and sha256s."""
    rng = np.random.default_rng(seed)
    keys = [store.put_image(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))) for _ in range(n)]
    return pa.array([k for k, _ in keys]), pa.array([s for _, s in keys])


def hex_ids(rng: np.random.Generator, n: int, tag: int) -> pa.Array:
    """n distinct 32-hex ids (the low bits carry `tag`: ids of two rounds never collide)."""
    hi = rng.integers(0, 2**62, n, dtype=np.int64)
    lo = np.arange(n, dtype=np.int64) * 1024 + tag
    return pa.array(np.char.add(np.char.mod("%016x", hi), np.char.mod("%016x", lo)).astype(str).tolist(), pa.string())


def score_maps(rng: np.random.Generator, n: int, lean: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Five criterion scores per row (higher where `lean` is True); returns the maps and the
    per-row minimum score."""
    scores = np.clip(rng.beta(2, 2, (n, len(CRITERIA))) + np.where(lean, 0.35, -0.1)[:, None], 0, 1).round(4)
    offsets = pa.array(np.arange(0, n * len(CRITERIA) + 1, len(CRITERIA), dtype=np.int32))
    keys = vocab(CRITERIA, np.tile(np.arange(len(CRITERIA)), n))
    return pa.MapArray.from_arrays(offsets, keys, pa.array(scores.ravel()), type=_SCORES), scores.min(axis=1)


def reason_maps(rng: np.random.Generator, n: int) -> tuple[pa.Array, pa.Array]:
    """One criterion -> reason per row, and the reason as the row's reject_reason text."""
    pick = rng.integers(0, len(REASONS), n)
    texts = vocab(REASONS, pick)
    offsets = pa.array(np.arange(0, n + 1, dtype=np.int32))
    keys = vocab(CRITERIA, pick % len(CRITERIA))
    return pa.MapArray.from_arrays(offsets, keys, texts, type=_REASONS), texts


def vocab(values: tuple[str, ...], index: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """values[index] as one Arrow string array (null where `mask`)."""
    return pa.array(values).take(pa.array(index, mask=mask))


def round_table(r: int, n: int, uri: pa.Array, sha: pa.Array, rng: np.random.Generator) -> pa.Table:
    blobs = len(uri)
    cols: dict[str, pa.Array] = {}
    for panel in schema.PANELS:
        pick = pa.array(rng.integers(0, blobs, n))
        cols[f"{panel}_uri"], cols[f"{panel}_sha256"] = uri.take(pick), sha.take(pick)
    with_footprint = rng.random(n) < 0.5
    pick = pa.array(np.where(with_footprint, rng.integers(0, blobs, n), -1))
    pick = pa.array(pick.to_numpy(), mask=~with_footprint)
    cols["footprint_uri"], cols["footprint_sha256"] = uri.take(pick), sha.take(pick)
    ids = hex_ids(rng, n, r)
    if r == 0:
        test = rng.random(n) < 0.01
        source = vocab(("seed",), np.zeros(n, np.int64))
        split = vocab(("train", "test"), test.astype(np.int64))
        accepted = np.ones(n, dtype=bool)
        judge = pa.nulls(n, _SCORES)
        reasons = pa.nulls(n, _REASONS)
        reject = pa.nulls(n, pa.string())
        cycle = pa.nulls(n, _SCORES)
        parent = pa.nulls(n, pa.string())
        adapter = pa.nulls(n, pa.string())
    else:
        is_cycle = rng.random(n) < 0.2
        source = vocab(("generated", "cycle"), is_cycle.astype(np.int64))
        split = vocab(("train",), np.zeros(n, np.int64))
        lean = rng.random(n) < 0.2 + 0.02 * r
        judge, low = score_maps(rng, n, lean)
        accepted = np.where(is_cycle, rng.random(n) < 0.5, low >= THRESHOLD)
        reason_map, reason_text = reason_maps(rng, n)
        reasons = pa.MapArray.from_arrays(reason_map.offsets, reason_map.keys, reason_map.items, type=_REASONS,
                                          mask=pa.array(accepted))
        reject = pc.if_else(pa.array(accepted), pa.scalar(None, pa.string()), reason_text)
        generated_idx = np.flatnonzero(~is_cycle)
        parent = ids.take(pa.array(generated_idx[rng.integers(0, max(len(generated_idx), 1), n)], mask=~is_cycle))
        cscores = np.round(rng.normal(30, 4, n), 2)
        cycle = pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), vocab(("psnr",), np.zeros(n, np.int64)),
                                        pa.array(cscores), type=_SCORES, mask=pa.array(~is_cycle))
        adapter = vocab((f"round={r - 1:02d}",), np.zeros(n, np.int64))
    cols.update({
        "triplet_id": ids, "run_id": vocab(("scale",), np.zeros(n, np.int64)),
        "round": pa.array(np.full(n, r, np.int32)), "source": source, "split": split,
        "prompt": vocab(PROMPTS, rng.integers(0, len(PROMPTS), n)),
        "panel_size": pa.array(np.full(n, 512, np.int32)), "judge_scores": judge, "judge_reasons": reasons,
        "accepted": pa.array(accepted), "reject_reason": reject, "cycle_scores": cycle, "parent_id": parent,
        "adapter_version": adapter, "seed": pa.array(np.arange(n, dtype=np.int64) + r * n),
        "created_at": pa.array(np.full(n, np.datetime64("2026-12-06T00:00:00", "us")), pa.timestamp("us", tz="UTC")),
    })
    return pa.table({f.name: cols[f.name] for f in schema.MANIFEST_SCHEMA}, schema=schema.MANIFEST_SCHEMA)


def round_metrics(table: pa.Table, r: int) -> dict:
    """What the orchestrator records per round (pass rates per criterion, stage seconds)."""
    if r == 0:
        return {"stage_seconds": {"seed": 1.0}}
    scores = table.filter(pc.equal(table["source"], "generated"))["judge_scores"].combine_chunks()
    keys, items = scores.keys.to_numpy(zero_copy_only=False), scores.items.to_numpy()
    rates = {c: float((items[keys == c] >= THRESHOLD).mean()) for c in CRITERIA}
    return {"criterion_pass_rates": rates, "judge_thresholds": {c: THRESHOLD for c in CRITERIA},
            "stage_seconds": {"train": 3600.0, "generate": 7200.0, "judge": 1800.0, "cycle": 900.0, "evaluate": 60.0}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--blobs", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    store = Store(args.workdir)
    if store.committed_rounds():
        raise SystemExit(f"{args.workdir} already holds committed rounds")
    t0 = time.perf_counter()
    uri, sha = put_blobs(store, args.blobs, args.seed)
    print(f"{args.blobs} blobs in {time.perf_counter() - t0:.1f} s", flush=True)
    per = args.rows // args.rounds
    rng = np.random.default_rng(args.seed)
    for r in range(args.rounds):
        table = round_table(r, per, uri, sha, rng)
        t = time.perf_counter()
        store.commit_round(r, table, metrics=round_metrics(table, r))
        print(f"round {r}: {per} rows committed in {time.perf_counter() - t:.2f} s", flush=True)
    print(f"{per * args.rounds} rows in {args.rounds} rounds, {time.perf_counter() - t0:.1f} s in all; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")


if __name__ == "__main__":
    main()
